"""Backbone export: timm alone rebuilds it (ResNet, ViT), the small-image stem needs
load_backbone, `python -m ssl_syre.export` works and never overwrites, nothing is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Subset

from ssl_syre.config import load_config
from ssl_syre.data import build_eval_datasets, data_info
from ssl_syre.errors import UserError, run_cli
from ssl_syre.evaluation.features import eval_loader, extract_features
from ssl_syre.export import (
    export_backbone,
    load_backbone,
    load_model,
    model_from_checkpoint,
)
from ssl_syre.export.__main__ import main
from ssl_syre.methods import METHODS
from tests.conftest import ROOT, TINY, train_in_process

pytestmark = pytest.mark.slow

# Evaluation options that the export does not need: they only cost time here.
FAST = [
    "eval.online_every_n_epochs=0",
    "eval.linear_probe=false",
    "eval.raw_pixel_baseline=false",
    "trainer.enable_progress_bar=false",
]
NUM_IMAGES = 48  # test images pushed through both pipelines

# Runs in a fresh interpreter that never imports ssl_syre, with torch.load and pickle
# disabled: whatever timm needs to rebuild an export must be in config.json + safetensors.
TIMM_ONLY = textwrap.dedent(
    """
    import glob, json, pickle, sys
    import numpy as np, torch

    def forbidden(*args, **kwargs):
        raise AssertionError("an export must load without pickle")

    torch.load = pickle.load = pickle.loads = forbidden
    import timm
    from PIL import Image

    results = {}
    for name, job in json.loads(sys.argv[1]).items():
        try:
            model = timm.create_model("local-dir:" + job["export"], pretrained=True).eval()
        except Exception as error:
            results[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        data_config = timm.data.resolve_data_config(model=model)
        if "images" in job:  # preprocess PNGs by the export's own data config
            transform = timm.data.create_transform(**data_config)
            files = sorted(glob.glob(job["images"] + "/*.png"))
            batch = torch.stack([transform(Image.open(f).convert("L")) for f in files])
        else:
            batch = torch.from_numpy(np.load(job["inputs"]))
        with torch.no_grad():
            np.save(job["out"], model(batch).numpy())
        results[name] = {"data_config": data_config}
    results["ssl_syre_imported"] = "ssl_syre" in sys.modules
    print(json.dumps(results))
    """
)


def tiny_method(*overrides: str):
    """An untrained method with BN statistics moved off their init by two train-mode passes."""
    cfg = load_config(None, [*TINY, *overrides])
    info = data_info(cfg.data)
    model = METHODS[cfg.method](cfg, info)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(2):
            model.backbone(
                torch.rand(16, info.in_chans, info.image_size, info.image_size, generator=generator)
            )
    return model.eval(), info


def backbone_features(backbone: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return backbone.eval()(inputs).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny training run (ResNet), a ViT and a small-stem export, and one timm-only
    interpreter that loads all three."""
    root = tmp_path_factory.mktemp("export")
    run_dir = train_in_process(root / "runs", *FAST)

    cfg = load_config(None, [*TINY])
    _, test = build_eval_datasets(cfg.data, cfg.seed)
    images = root / "images"
    images.mkdir()
    for position in range(NUM_IMAGES):
        test._image(position).save(images / f"{position:03d}.png")

    vit, vit_info = tiny_method("backbone.name=test_vit", "data.image_size=32")
    export_backbone(vit, root / "vit")
    vit_inputs = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    np.save(root / "vit_inputs.npy", vit_inputs.numpy())

    stem, _ = tiny_method("backbone.small_image_stem=true")
    export_backbone(stem, root / "stem")
    nopool, _ = tiny_method("backbone.stem_max_pool=false")
    export_backbone(nopool, root / "nopool")

    jobs = {
        "resnet": {
            "export": str(run_dir / "export"),
            "images": str(images),
            "out": str(root / "resnet.npy"),
        },
        "vit": {
            "export": str(root / "vit"),
            "inputs": str(root / "vit_inputs.npy"),
            "out": str(root / "vit.npy"),
        },
        "stem": {
            "export": str(root / "stem"),
            "inputs": str(root / "vit_inputs.npy"),
            "out": str(root / "stem.npy"),
        },
        "nopool": {
            "export": str(root / "nopool"),
            "inputs": str(root / "vit_inputs.npy"),
            "out": str(root / "nopool.npy"),
        },
    }
    done = subprocess.run(
        [sys.executable, "-c", TIMM_ONLY, json.dumps(jobs)],
        capture_output=True,
        text=True,
        cwd=root,  # not the repository: nothing of ours on sys.path
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "root": root,
        "run_dir": run_dir,
        "images": images,
        "timm": json.loads(done.stdout.strip().splitlines()[-1]),
        "vit": vit,
        "vit_inputs": vit_inputs,
        "stem": stem,
        "nopool": nopool,
    }


def test_timm_alone_rebuilds_the_resnet_with_its_preprocessing(exported: dict) -> None:
    """Images preprocessed by the export's data config and fed to timm's rebuild give the
    features of the trained backbone on our eval transform."""
    assert exported["timm"]["ssl_syre_imported"] is False
    model, _ = model_from_checkpoint(exported["run_dir"] / "checkpoints" / "last.ckpt")
    cfg = load_config(None, [*TINY])
    _, test = build_eval_datasets(cfg.data, cfg.seed)
    ours = extract_features(model.backbone, eval_loader(Subset(test, range(NUM_IMAGES)), 64))
    theirs = np.load(exported["root"] / "resnet.npy")
    np.testing.assert_allclose(theirs, ours.by_kind["backbone"].numpy(), atol=1e-5, rtol=0)
    data_config = exported["timm"]["resnet"]["data_config"]
    assert data_config["input_size"] == [1, 16, 16] and data_config["crop_pct"] == 1.0


def test_timm_alone_rebuilds_a_vit_with_its_image_size(exported: dict) -> None:
    config = json.loads((exported["root"] / "vit" / "config.json").read_text())
    assert config["architecture"] == "test_vit"
    assert list(config["model_args"]["img_size"]) in ([32, 32], [32])  # timm may store (32, 32)
    assert config["pretrained_cfg"]["input_size"] == [1, 32, 32]
    assert config["ssl_syre"]["data"]["image_size"] == 32
    theirs = np.load(exported["root"] / "vit.npy")
    ours = backbone_features(exported["vit"].backbone, exported["vit_inputs"])
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("export", "key", "first_stride"),
    [("stem", "small_image_stem", (1, 1)), ("nopool", "stem_max_pool", (2, 2))],
)
def test_stems_timm_cannot_express_are_refused_by_timm_and_rebuilt_by_load_backbone(
    exported: dict, export: str, key: str, first_stride: tuple[int, int]
) -> None:
    # timm has no argument for a stride-1 stem without max-pool (small_image_stem) nor for its
    # own strided stem without the max-pool (stem_max_pool=false); test_resnet's weights would
    # fit its default stem either way. The export makes timm fail loudly instead.
    error = exported["timm"][export]["error"]
    assert key in error, error
    inputs = exported["vit_inputs"][:, :, :16, :16].contiguous()
    rebuilt = load_backbone(exported["root"] / export)
    np.testing.assert_allclose(
        backbone_features(rebuilt, inputs),
        backbone_features(exported[export].backbone, inputs),
        atol=1e-5,
        rtol=0,
    )
    assert isinstance(rebuilt.maxpool, torch.nn.Identity)
    assert rebuilt.conv1[0].stride == first_stride  # test_resnet's deep stem: conv1 is a Sequential


def test_config_json_records_the_run_and_weights_are_safetensors_only(exported: dict) -> None:
    run_dir = exported["run_dir"]
    export = run_dir / "export"
    assert sorted(p.name for p in export.iterdir()) == ["config.json", "model.safetensors"]
    assert not (export / "pytorch_model.bin").exists()
    section = json.loads((export / "config.json").read_text())["ssl_syre"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = load_config(str(run_dir / "config.yaml"))
    assert section["method"] == "simclr" and section["backbone"] == "test_resnet"
    assert section["syre"]["enabled"] is True and section["syre"]["sigma0"] == cfg.syre.sigma0
    assert section["data"]["name"] == "digits" and section["data"]["image_size"] == 16
    assert section["data"]["num_classes"] == 10 and section["in_chans"] == 1
    assert section["eval"]["knn_k"] == list(cfg.eval.knn_k)
    assert section["knn"] == [r for r in metrics["knn"] if r["features"] == "backbone"]
    assert {r["k"] for r in section["knn"]} == set(cfg.eval.knn_k)
    model, _ = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    weights = load_file(str(export / "model.safetensors"))
    expected = model.backbone.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in weights)


def test_load_backbone_never_unpickles(exported: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("load_backbone must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    rebuilt = load_backbone(exported["root"] / "vit")
    np.testing.assert_allclose(
        backbone_features(rebuilt, exported["vit_inputs"]),
        backbone_features(exported["vit"].backbone, exported["vit_inputs"]),
        atol=1e-5,
        rtol=0,
    )


def test_export_cli_writes_a_loadable_export_and_refuses_to_overwrite(
    exported: dict, capsys: pytest.CaptureFixture
) -> None:
    run_dir = exported["run_dir"]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    out = exported["root"] / "cli_export"
    done = subprocess.run(
        [sys.executable, "-m", "ssl_syre.export", str(checkpoint), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"local-dir:{out}" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    # The same export as the one train.py wrote, kNN results included (same weights and step).
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (run_dir / "export" / "config.json").read_text()
    )
    first = load_file(str(out / "model.safetensors"))
    reference = load_file(str(run_dir / "export" / "model.safetensors"))
    assert all(torch.equal(first[name], reference[name]) for name in reference)

    before = (out / "model.safetensors").stat().st_mtime_ns
    for argv in ([str(checkpoint), "--out", str(out)], [str(checkpoint)], [str(run_dir)]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv)
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "already holds an export" in lines[0], lines
    assert (out / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: root / "missing.ckpt", "does not exist"),
        (lambda root: _write(root / "garbage.ckpt", b"not a checkpoint"), "cannot load checkpoint"),
    ],
)
def test_export_cli_bad_checkpoint_is_one_line(
    make, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(make(tmp_path)), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (tmp_path / "out").exists()


def _edit_config(export: Path, change) -> None:
    config = json.loads((export / "config.json").read_text())
    change(config)
    (export / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "not a safetensors file"),
        (lambda d: (d / "model.safetensors").write_bytes(b""), "not a safetensors file"),
        (lambda d: _edit_config(d, lambda c: c.update(architecture="no_such_net")), "cannot build"),
        (lambda d: _edit_config(d, lambda c: c["model_args"].update(foo=1)), "cannot build"),
        (lambda d: _edit_config(d, lambda c: c.update(model_args=[1])), "malformed"),
        (lambda d: _edit_config(d, lambda c: c["ssl_syre"].update(data=[1])), "malformed"),
    ],
)
def test_a_damaged_export_is_a_user_error_not_a_traceback(
    damage, needle: str, tmp_path: Path
) -> None:
    """A truncated model.safetensors, an architecture or arguments this timm lacks, or a
    hand-edited config.json: one UserError naming the file (eval/knn.py prints it as one
    line), not a SafetensorError, RuntimeError, TypeError or AttributeError traceback."""
    model, _ = tiny_method()
    export = export_backbone(model, tmp_path / "export")
    damage(export)
    with pytest.raises(UserError, match=needle):
        load_model(export)


def test_export_cli_unwritable_out_is_one_line(
    exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = _write(tmp_path / "a_file", b"") / "export"  # its parent is a file: cannot be made
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(exported["run_dir"]), "--out", str(out)])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot write the export" in lines[0], lines


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_channels_last_backbone_trains_and_exports_contiguous(tmp_path: Path) -> None:
    """backbone.channels_last trains in NHWC and still exports (safetensors needs contiguous
    tensors) to the same features."""
    run_dir = train_in_process(tmp_path, *FAST, "backbone.channels_last=true")
    model, _ = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    conv = next(
        p for p in model.backbone.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1
    )
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    inputs = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    reloaded = load_backbone(run_dir / "export")
    np.testing.assert_allclose(
        backbone_features(reloaded, inputs), backbone_features(model.backbone, inputs), atol=1e-5
    )


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_export_weights_get_the_mode_the_umask_gives(mask: int, tmp_path: Path) -> None:
    """safetensors writes model.safetensors 0600; the export gives it 0o666 less the umask."""
    model, _ = tiny_method()
    previous = os.umask(mask)
    try:
        export = export_backbone(model, tmp_path / "export")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((export / name).stat().st_mode) == 0o666 & ~mask, name


def test_list_valued_backbone_kwargs_reach_the_export_as_json(tmp_path: Path) -> None:
    """backbone.kwargs.channels=[...] from the command line is an omegaconf list: the export's
    config.json (timm's json.dumps) must still be written, and timm rebuild the same widths."""
    from tests.conftest import build_method

    model, _ = build_method("simclr", "backbone.kwargs.channels=[16,24,24,40]")
    assert model.backbone_kwargs["channels"] == [16, 24, 24, 40]
    assert type(model.backbone_kwargs["channels"]) is list
    out = export_backbone(model, tmp_path / "export")
    stored = json.loads((out / "config.json").read_text())
    assert stored["model_args"]["channels"] == [16, 24, 24, 40]
    assert load_backbone(out).num_features == 40
