"""train.py end to end, as a user runs it: every method, every kind of data, the outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_syre.evaluation.knn import knn_classify
from ssl_syre.methods import METHODS
from tests.conftest import ROOT, run_train, train_in_process, vit_overrides

pytestmark = pytest.mark.slow


def only_run(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def check_run_dir(run_dir: Path, labelled: bool = True) -> dict:
    for name in (
        "config.yaml",
        "metrics.json",
        "checkpoints/last.ckpt",
        "export/config.json",
        "export/model.safetensors",
        "logs/metrics.csv",
        "spectrum.png",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {r["features"] for r in metrics["collapse"]} == {"backbone", "projector"}
    if labelled:
        per_kind: dict[str, int] = {}
        for record in metrics["knn"]:
            per_kind[record["features"]] = per_kind.get(record["features"], 0) + 1
        # one record per k in eval.knn_k (k is clamped to the bank size on tiny data)
        assert per_kind == {"raw_pixels": 2, "backbone": 2, "projector": 2}
        for record in metrics["knn"]:
            assert {"split", "k", "t", "top1", "top5"} <= set(record)
            assert 0.0 <= record["top1"] <= record["top5"] <= 1.0
    return metrics


@pytest.mark.parametrize(
    "method",
    [
        "simclr",
        "byol",
        "simsiam",
        "mocov2",
        "barlowtwins",
        "vicreg",
        "swav",
        "nnclr",
        "dcl",
        "mocov3",
        "lejepa",
        "mae",
    ],
)
def test_each_method_trains_on_fashion_mnist_from_its_config(
    method: str, tiny: list[str], tmp_path: Path
) -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    result = run_train(
        f"configs/{method}_fashion_mnist.yaml",
        *tiny,
        *vit_overrides([f"method={method}"]),  # a ViT-only method: test_vit, not TINY's ResNet
        "data.name=fashion_mnist",
        "data.train_subset=600",
        "data.test_subset=200",
        "eval.knn_k=[200,20]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run(tmp_path / "runs")
    metrics = check_run_dir(run_dir)
    assert metrics["run"]["method"] == method
    assert "kNN top-1 (test split, k=200, t=0.1): learned backbone" in result.stdout
    assert "vs raw pixels" in result.stdout


def make_image_folder(root: Path, per_class: int = 40) -> None:
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA"]
    for label, colour in enumerate([(220, 40, 40), (40, 40, 220)]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(20, 40))
            pixels = np.clip(rng.normal(colour, 30, (size, size + i % 5, 3)), 0, 255).astype(
                np.uint8
            )
            Image.fromarray(pixels).convert(modes[i % 3]).save(folder / f"{i}.png")


def test_every_method_has_an_image_folder_config() -> None:
    from ssl_syre.methods import METHODS

    missing = [m for m in METHODS if not (ROOT / "configs" / f"{m}_imagefolder.yaml").is_file()]
    assert not missing, f"no configs/<method>_imagefolder.yaml for {missing}"


IMAGEFOLDER_METHODS = sorted(
    p.name[: -len("_imagefolder.yaml")] for p in ROOT.glob("configs/*_imagefolder.yaml")
)


@pytest.mark.parametrize("method", IMAGEFOLDER_METHODS)
def test_each_method_trains_on_an_image_folder(
    method: str, tiny: list[str], tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "images")
    make_image_folder(tmp_path / "test_images", per_class=10)
    # ViT-only methods build on the tiny ViT (32 px), the others on timm's test_resnet.
    backbone = vit_overrides([f"method={method}"]) or ["backbone.name=test_resnet"]
    result = run_train(
        f"configs/{method}_imagefolder.yaml",
        *tiny,
        "data.name=imagefolder",
        f"data.root={tmp_path / 'images'}",
        f"data.test_root={tmp_path / 'test_images'}",
        "data.image_size=32",
        "data.batch_size=16",
        *backbone,
        "optimizer.warmup_epochs=0",  # VICReg's recipe warms up longer than a tiny run
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_run_dir(only_run(tmp_path / "runs"))


def test_unlabelled_image_folder_gives_collapse_metrics_only(
    tiny: list[str], tmp_path: Path
) -> None:
    make_image_folder(tmp_path / "images")
    result = run_train(
        *tiny,
        "data.name=imagefolder",
        f"data.root={tmp_path / 'images'}",
        "data.labelled=false",
        "data.image_size=32",
        "data.batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = check_run_dir(only_run(tmp_path / "runs"), labelled=False)
    assert metrics["knn"] == [] and metrics["collapse"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data.batch_sise=3"], "batch_size"),
        (["no_such_config.yaml"], "does not exist"),
        (["method=simclrr"], "simclr"),
        (["data.batch_size=5000"], "larger than the training set"),
        (["data.name=cifar10", "data.download=false"], "cifar-10-batches-py"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    args: list[str], needle: str, tiny: list[str], tmp_path: Path
) -> None:
    result = run_train(
        *tiny, f"data.root={tmp_path / 'nothing'}" if "cifar10" in str(args) else "seed=0", *args
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_syre_off_and_on_and_export_loads_with_timm_alone(tiny: list[str], tmp_path: Path) -> None:
    """Train, load the export with timm alone, preprocess by its config, and reproduce kNN."""
    # timm's own stem (the quick start drops its max-pool, which only load_backbone rebuilds:
    # tests/export/test_export.py).
    tiny = [*tiny, "backbone.stem_max_pool=true"]
    result = run_train(*tiny, "syre.enabled=false", "run_name=plain")
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_train(*tiny, "run_name=syre")
    assert result.returncode == 0, result.stderr[-3000:]
    plain = json.loads((tmp_path / "runs/plain/metrics.json").read_text())
    syre = json.loads((tmp_path / "runs/syre/metrics.json").read_text())
    assert "syre_distance_to_anchor" in syre and "syre_distance_to_anchor" not in plain

    # The evaluation images as PNG files, so the timm-only process needs nothing of ours.
    from ssl_syre.config import load_config
    from ssl_syre.data import build_eval_datasets

    cfg = load_config(None, list(tiny))
    train, test = build_eval_datasets(cfg.data, cfg.seed)
    images = tmp_path / "images"
    for split, dataset in (("train", train), ("test", test)):
        (images / split).mkdir(parents=True)
        for position in range(len(dataset)):
            dataset._image(position).save(images / split / f"{position:05d}.png")
    script = textwrap.dedent(
        f"""
        import sys, glob, numpy as np, timm, torch
        from PIL import Image
        model = timm.create_model("local-dir:{tmp_path / "runs/syre/export"}", pretrained=True).eval()
        transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
        for split in ("train", "test"):
            files = sorted(glob.glob("{images}/" + split + "/*.png"))
            batch = torch.stack([transform(Image.open(f).convert("L")) for f in files])
            with torch.no_grad():
                np.save("{tmp_path}/" + split + ".npy", model(batch).numpy())
        assert "ssl_syre" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    export_cfg = json.loads((tmp_path / "runs/syre/export/config.json").read_text())
    recorded = export_cfg["ssl_syre"]["knn"]
    for record in recorded:
        ours = knn_classify(
            np.load(tmp_path / "train.npy"),
            train.labels,
            np.load(tmp_path / "test.npy"),
            test.labels,
            num_classes=10,
            ks=(record["k"],),
            temperature=record["t"],
        )[0]
        assert ours["top1"] == pytest.approx(record["top1"], abs=1e-9)
    assert recorded == [r for r in syre["knn"] if r["features"] == "backbone"]


def test_metrics_name_the_knn_bank_and_how_it_was_drawn(tmp_path: Path, one_thread: None) -> None:
    """The bank is reproducible from metrics.json and eval_indices.json, without this package."""
    import torch

    run_dir = train_in_process(
        tmp_path,
        "data.train_subset=500",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "export=false",
        "seed=3",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    indices = json.loads((run_dir / metrics["eval_data"]["indices"]).read_text())
    # The rule the README documents, written out here with torch alone (digits: 1,437 train).
    drawn = torch.randperm(1437, generator=torch.Generator().manual_seed(3))[:500]
    assert indices["train"] == sorted(drawn.tolist())
    assert indices["test"] == list(range(360))  # no data.test_subset: the whole split
    assert metrics["eval_data"]["train"]["size"] == 500
    assert metrics["eval_data"]["train"]["of"] == 1437
    assert "manual_seed(3))[:500]" in metrics["eval_data"]["train"]["rule"]
    assert metrics["knn"]
    for record in metrics["knn"]:
        assert record["bank_size"] == len(indices["train"])
        assert record["num_queries"] == len(indices["test"])


def test_same_seed_same_metrics(tiny: list[str], tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = run_train(*tiny, f"run_name={name}", "eval.online_every_n_epochs=0")
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"runs/{n}/metrics.json").read_text()) for n in ("a", "b"))
    for m in (a, b):
        m["run"].pop("wall_time_s")
    assert a == b
    # The promise is "same machine and build": metrics.json says which build that was.
    import torch

    build = a["run"]["build"]
    assert build["torch"] == torch.__version__
    assert build["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert build["torch_threads"] >= 1 and build["device"] == "cpu"


def test_quick_start_config_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python train.py` without arguments trains what the README's quick start describes."""
    from ssl_syre.config import load_config
    from ssl_syre.training import pipeline

    trained = []
    monkeypatch.setattr(pipeline, "train", lambda cfg: trained.append(cfg) or ROOT)
    pipeline.main([])
    (cfg,) = trained
    assert cfg == load_config(str(ROOT / "configs" / "default.yaml"))
    readme = (ROOT / "README.md").read_text()
    steps = cfg.trainer.max_epochs * (cfg.data.train_subset // cfg.data.batch_size)  # drop_last
    assert cfg.method == "simclr" and cfg.syre.enabled and "SimCLR + SyRe" in readme
    assert cfg.data.name == "fashion_mnist"
    flat = readme.replace("\n", " ")
    assert f"`{cfg.backbone.name}` without its stem max-pool" in readme
    assert not cfg.backbone.stem_max_pool
    assert f"{cfg.data.train_subset:,} Fashion-MNIST training" in readme
    assert f"images, {cfg.trainer.max_epochs} epochs" in flat
    assert f"{steps:,} steps of batch {cfg.data.batch_size}" in flat


@pytest.mark.parametrize(
    "method, mode",
    [("simclr", "decoupled")] + [(name, "coupled") for name in sorted(METHODS)],
)
def test_syre_off_equals_syre_with_sigma0_zero_bit_for_bit(
    tmp_path: Path, method: str, mode: str, one_thread: None
) -> None:
    """The off arm differs from SyRe only in the anchor: at σ0 = 0 the two runs are one run,
    for every method (momentum copies and queues included)."""
    import torch

    from tests.conftest import train_in_process

    quick = [
        f"method={method}",
        f"syre.mode={mode}",
        "trainer.limit_train_batches=2",
        "optimizer.weight_decay=0.05",  # strong enough that a missing decay shows in the bits
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "eval.raw_pixel_baseline=false",
        "export=false",
    ]

    def weights(*overrides: str) -> dict[str, torch.Tensor]:
        run_dir = train_in_process(tmp_path / "_".join(overrides), *quick, *overrides)
        checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["run"]["decay"]["mode"] == mode
        return checkpoint["state_dict"]

    off = weights("syre.enabled=false")
    zero = weights("syre.sigma0=0.0")
    anchored = weights("syre.sigma0=0.3")
    assert off.keys() == zero.keys()
    assert all(torch.equal(off[name], zero[name]) for name in off)
    # The comparison can fail: the anchor alone changes the trained weights.
    covered = [name for name in off if name.startswith("backbone.") and off[name].ndim >= 2]
    assert covered and not all(torch.equal(off[name], anchored[name]) for name in covered)
