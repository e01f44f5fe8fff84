"""Config loading and validation: every mistake is one clear line."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssl_syre.config import check_ranges, load_config, ranged
from ssl_syre.errors import UserError
from ssl_syre.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent


def error_of(path: str | None = None, overrides: list[str] | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides or [])
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["data.batch_size=32", "syre.enabled=false", "trainer.max_epochs=3"])
    assert cfg.data.batch_size == 32
    assert cfg.syre.enabled is False
    assert cfg.trainer.max_epochs == 3
    assert cfg.method == "simclr"


@pytest.mark.parametrize("path", sorted(str(p) for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path: str) -> None:
    overrides = ["data.root=/some/folder"] if "imagefolder" in path else []
    cfg = load_config(path, overrides)
    assert cfg.method in path or Path(path).name == "default.yaml"


@pytest.mark.parametrize(
    "path", sorted(str(p) for p in (ROOT / "benchmarks" / "configs").glob("*.yaml"))
)
def test_every_benchmark_config_validates(path: str) -> None:
    assert load_config(path).method in Path(path).stem


@pytest.mark.parametrize("method", sorted(str(p) for p in (ROOT / "configs/method").glob("*.yaml")))
@pytest.mark.parametrize("data", sorted(str(p) for p in (ROOT / "configs/data").glob("*.yaml")))
def test_data_and_method_files_compose_in_order(data: str, method: str) -> None:
    cfg = load_config([data, method], ["seed=3"])
    assert cfg.method == Path(method).stem and cfg.data.name == Path(data).stem
    # The data file's ResNet-18, unless the method needs another (iBOT's ViT): the later file wins.
    backbone = OmegaConf.load(method).get("backbone", {}).get("name", "resnet18")
    assert cfg.backbone.name == backbone and cfg.seed == 3
    later = load_config([data, method, data], [])  # the later file wins where both set a key
    assert later.data.cj_strength == cfg.data.cj_strength  # data files leave it to the method
    assert later.data.batch_size == OmegaConf.load(data).data.batch_size


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_loads_from_the_quick_start(method: str) -> None:
    """`python train.py method=M` as a new user types it: the quick start's other method's
    settings are dropped with a warning, the rest validates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(str(ROOT / "configs" / "default.yaml"), [f"method={method}"])
    assert cfg.method == method and cfg.syre.parts is None


def test_syre_parts_must_be_parts_of_the_method() -> None:
    message = error_of(overrides=["method=simclr", "syre.parts=[prediction_head]"])
    assert "'prediction_head' is not a part of method simclr" in message
    assert "backbone, projection_head" in message
    assert load_config(None, ["method=byol", "syre.parts=[prediction_head]"]).syre.parts == [
        "prediction_head"
    ]
    message = error_of(overrides=["method=vicreg", "syre.parts=[backbone, projector]"])
    assert "'projector'" in message and "did you mean 'projection_head'" in message


def test_syre_that_covers_nothing_is_refused_while_enabled() -> None:
    message = error_of(overrides=["syre.parts=[]"])
    assert "covers nothing" in message and "syre.enabled=false" in message
    assert load_config(None, ["syre.parts=[]", "syre.enabled=false"]).syre.parts == []


def test_a_method_recipe_applies_below_files_and_overrides() -> None:
    """VICReg brings LARS unless a file or override picks the optimizer."""
    default = str(ROOT / "configs" / "default.yaml")
    assert load_config(default, ["method=vicreg"]).optimizer.name == "lars"
    assert load_config(default, ["method=vicreg", "optimizer.lr=0.1"]).optimizer.lr == 0.1
    sgd = load_config(default, ["method=vicreg", "optimizer.name=sgd"]).optimizer
    assert sgd.name == "sgd" and sgd.lr == 0.06 and sgd.warmup_epochs == 0
    assert load_config(default, ["method=simclr"]).optimizer.name == "sgd"


def test_unknown_key_suggests_the_right_one() -> None:
    message = error_of(overrides=["data.batch_sise=3"])
    assert "data.batch_sise" in message and "batch_size" in message


def test_unknown_top_level_key() -> None:
    assert "'sede'" in error_of(overrides=["sede=1"]) and "seed" in error_of(overrides=["sede=1"])


def test_wrong_type() -> None:
    message = error_of(overrides=["data.batch_size=many"])
    assert "data.batch_size" in message


@pytest.mark.parametrize(
    ("override", "needle", "hint"),
    [
        ("method=simclrr", "method", "simclr"),
        ("data.name=fashion_mnis", "data.name", "fashion_mnist"),
        ("backbone.name=resnet1", "backbone.name", "resnet"),
        ("trainer.max_epoch=2", "trainer.max_epoch", "max_epochs"),
        ("method_kwargs.temprature=0.2", "temprature", "temperature"),
        ("optimizer.name=adam", "optimizer.name", "adamw"),
        ("syre.anchor_scale=absolut", "syre.anchor_scale", "absolute"),
        ("syre.anchor_storage=bf16", "syre.anchor_storage", "bfloat16"),
        ("syre.mode=couple", "syre.mode", "coupled"),
        ("data.augment_on=gpu", "data.augment_on", "device"),
    ],
)
def test_unknown_names(override: str, needle: str, hint: str) -> None:
    message = error_of(overrides=[override])
    assert needle in message and hint in message


def test_range_checks() -> None:
    assert "data.batch_size" in error_of(overrides=["data.batch_size=0"])
    assert "syre.d_eps" in error_of(overrides=["syre.d_eps=1.5"])
    # Refused before training, not by the final linear probe after it (no metrics, no export).
    assert "eval.linear_epochs" in error_of(overrides=["eval.linear_epochs=0"])
    load_config(None, ["eval.linear_epochs=0", "eval.linear_probe=false"])  # no probe: fine


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("optimizer.momentum=1.0", "'optimizer.momentum' must be in [0, 1), got 1.0"),
        ("optimizer.momentum=-0.1", "'optimizer.momentum' must be in [0, 1)"),
        ("optimizer.warmup_epochs=-1", "'optimizer.warmup_epochs' must be in [0, inf), got -1"),
        ("optimizer.warmup_epochs=11", "at most trainer.max_epochs (10)"),
        (
            "method_kwargs.temperature=0",
            "'method_kwargs.temperature' of simclr must be in (0, inf)",
        ),
        ("method_kwargs.temperature=nan", "'method_kwargs.temperature' of simclr"),
        ("method_kwargs.projection_output_dim=0", "'method_kwargs.projection_output_dim'"),
        ("method=byol method_kwargs.momentum_start=1.5", "'method_kwargs.momentum_start' of byol"),
        ("method=byol method_kwargs.momentum_end=-0.1", "must be in [0, 1], got -0.1"),
        ("method=simsiam method_kwargs.prediction_hidden_dim=0", "prediction_hidden_dim"),
    ],
)
def test_values_out_of_range_are_refused_naming_key_and_range(override: str, needle: str) -> None:
    assert needle in error_of(overrides=override.split())


def test_adamw_betas_are_two_numbers_below_one() -> None:
    assert load_config(None, ["optimizer.betas=[0.9,0.95]"]).optimizer.betas == [0.9, 0.95]
    for bad in ("[0.9,1.0]", "[0.9]", "[-0.1,0.9]"):
        assert "'optimizer.betas' must be two numbers in [0, 1)" in error_of(
            overrides=[f"optimizer.betas={bad}"]
        )


def test_warmup_as_long_as_the_run_and_range_ends_are_accepted() -> None:
    load_config(None, ["optimizer.warmup_epochs=10", "optimizer.momentum=0"])
    load_config(
        None, ["method=byol", "method_kwargs.momentum_start=0", "method_kwargs.momentum_end=1"]
    )


@pytest.mark.parametrize(
    ("method", "key", "value", "interval"),
    [
        ("mocov2", "temperature", "0", "(0, inf)"),
        ("mocov2", "queue_size", "0", "[1, inf)"),
        ("mocov2", "momentum_start", "1.5", "[0, 1]"),
        ("mocov2", "projection_output_dim", "0", "[1, inf)"),
        ("barlowtwins", "lambda_param", "-0.001", "[0, inf)"),
        ("barlowtwins", "projection_hidden_dim", "0", "[1, inf)"),
        ("vicreg", "mu_param", "-1", "[0, inf)"),
        ("vicreg", "projection_layers", "1", "[2, inf)"),
        ("dino", "teacher_temp", "0", "(0, inf)"),
        ("dino", "warmup_teacher_temp", "-0.04", "(0, inf)"),
        ("dino", "student_temp", "0", "(0, inf)"),
        ("dino", "warmup_teacher_temp_epochs", "-1", "[0, inf)"),
        ("dino", "center_momentum", "1.1", "[0, 1]"),
        ("dino", "momentum_end", "-0.5", "[0, 1]"),
        ("dino", "freeze_last_layer", "-1", "[0, inf)"),
        ("dino", "bottleneck_dim", "0", "[1, inf)"),
        ("dino", "n_local_views", "-2", "[0, inf)"),
        ("mae", "mask_ratio", "1.0", "(0, 1)"),
        ("mae", "decoder_depth", "0", "[1, inf)"),
        ("lejepa", "lambda_param", "1.5", "[0, 1]"),
        ("lejepa", "sigreg_knots", "1", "[2, inf)"),
    ],
)
def test_new_methods_refuse_bad_kwargs_before_any_run_directory(
    method: str, key: str, value: str, interval: str, tmp_path: Path
) -> None:
    message = error_of(
        overrides=[f"method={method}", f"method_kwargs.{key}={value}", f"output_dir={tmp_path}"]
    )
    assert f"'method_kwargs.{key}' of {method} must be in {interval}, got {value}" in message
    assert not any(tmp_path.iterdir()), "refused before a run directory exists"


def test_new_methods_accept_the_ends_of_their_ranges() -> None:
    load_config(
        None, ["method=mocov2", "method_kwargs.queue_size=1", "method_kwargs.momentum_end=1"]
    )
    load_config(None, ["method=barlowtwins", "method_kwargs.lambda_param=0"])
    load_config(
        None, ["method=vicreg", "method_kwargs.nu_param=0", "method_kwargs.projection_layers=2"]
    )
    load_config(
        None,
        [
            "method=dino",
            "method_kwargs.center_momentum=0",
            "method_kwargs.freeze_last_layer=0",
            "method_kwargs.warmup_teacher_temp_epochs=0",
            "method_kwargs.n_local_views=0",
        ],
    )


def test_ranged_fields_of_a_new_settings_class_are_checked_by_check_ranges() -> None:
    """What a new method gets by annotating its Kwargs: the interval's ends, open or closed."""

    @dataclasses.dataclass
    class Kwargs:
        rate: float = ranged(0.5, "(0, 1]")
        count: int = ranged(3, "[1, inf)")
        optional: float | None = ranged(None, "[0, 1]")

    check_ranges(Kwargs(rate=1.0, count=1), Kwargs, "method_kwargs")
    with pytest.raises(UserError, match=r"'method_kwargs.rate' of new must be in \(0, 1\], got 0"):
        check_ranges(Kwargs(rate=0.0), Kwargs, "method_kwargs", owner="of new")
    with pytest.raises(UserError, match="'x.count' must be in"):
        check_ranges(Kwargs(count=0), Kwargs, "x")
    with pytest.raises(ValueError, match="not an interval"):
        ranged(1, "]0, 1[")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    assert "does not exist" in error_of(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [simclr\n")
    assert "not valid YAML" in error_of(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    assert "mapping" in error_of(str(scalar))


def test_bad_override_syntax() -> None:
    assert "dotted.key=value" in error_of(overrides=["data.batch_size"])


def test_required_value(tmp_path: Path) -> None:
    message = error_of(str(ROOT / "configs" / "simclr_imagefolder.yaml"))
    assert "data.root" in message


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["seed=7"])
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize(
    ("optimizer", "mode", "expected"),
    [
        ("sgd", "auto", "coupled"),  # the paper's loss and torch SGD's own weight_decay
        ("lars", "auto", "coupled"),  # LARS puts the decay inside its trust ratio
        ("adamw", "auto", "decoupled"),  # AdamW's own decay
        ("sgd", "decoupled", "decoupled"),
        ("adamw", "coupled", "coupled"),
    ],
)
def test_syre_mode_auto_follows_the_optimizers_own_decay(
    optimizer: str, mode: str, expected: str
) -> None:
    from ssl_syre.config import syre_mode

    cfg = load_config(None, [f"optimizer.name={optimizer}", f"syre.mode={mode}"])
    assert cfg.syre.mode == mode and syre_mode(cfg) == expected


def test_another_methods_kwargs_are_dropped_with_a_warning() -> None:
    """The quick start sets SimCLR's temperature; method=byol still runs from it."""
    with pytest.warns(UserWarning, match="temperature"):
        cfg = load_config(None, ["method=byol", "method_kwargs.temperature=0.2"])
    assert "temperature" not in cfg.method_kwargs
    assert load_config(None, ["method_kwargs.temperature=0.2"]).method_kwargs.temperature == 0.2
    assert "temprature" in error_of(overrides=["method=byol", "method_kwargs.temprature=0.2"])


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("optimizer.learning_rate=0.1", "optimizer.lr"),  # a synonym, far in spelling
        ("optimizer.wd=0.1", "optimizer.weight_decay"),
        ("data.lr=0.1", "optimizer.lr"),  # the right key in another section
        ("syre.sigma=1.0", "syre.sigma0"),
        ("eval.knn_kk=3", "eval.knn_k"),  # a typo: still the whole dotted key
        ("trainer.epochs=3", "trainer.max_epochs"),
        ("trainer.max_epoch=3", "trainer.max_epochs"),
    ],
)
def test_a_wrong_key_suggests_the_whole_dotted_key(override: str, suggestion: str) -> None:
    with pytest.raises(UserError) as refused:
        load_config(None, [override])
    assert f"(did you mean '{suggestion}'?)" in str(refused.value)


def test_a_key_far_from_every_key_gets_no_suggestion() -> None:
    with pytest.raises(UserError) as refused:
        load_config(None, ["zebra=1"])
    assert "did you mean" not in str(refused.value)


def test_export_bool_of_older_configs_means_export_enabled(tmp_path: Path) -> None:
    assert load_config(None, []).export.enabled is True
    assert load_config(None, ["export=false"]).export.enabled is False
    assert load_config(None, ["export.enabled=false"]).export.enabled is False
    old = tmp_path / "old.yaml"
    old.write_text("export: false\n")
    assert load_config(old, []).export.enabled is False
    from ssl_syre.config import with_defaults

    assert with_defaults({"export": False}).export.enabled is False
    assert with_defaults({"export": True}).export.push_to_hub is None


def test_new_eval_keys_are_range_checked() -> None:
    for override, key in [
        ("eval.umap_points=0", "eval.umap_points"),
        ("eval.online_linear_lr=0", "eval.online_linear_lr"),
        ("eval.umap_every_n_epochs=-1", "eval.umap_every_n_epochs"),
    ]:
        with pytest.raises(UserError, match=f"config key '{key}' must be"):
            load_config(None, [override])


def test_speed_switches_are_checked() -> None:
    assert "optimizer.implementation" in error_of(overrides=["optimizer.implementation=fast"])
    assert "fused" in error_of(overrides=["optimizer.implementation=fast"])
    lars = error_of(overrides=["optimizer.name=lars", "optimizer.implementation=fused"])
    assert "sgd and adamw only" in lars
    assert ">= 1" in error_of(overrides=["checkpoint_every_n_epochs=0"])
    cfg = load_config(None, [])
    assert not cfg.backbone.compile and not cfg.data.on_device and cfg.eval.on_device
    assert cfg.optimizer.implementation == "auto" and cfg.checkpoint_every_n_epochs == 1


def test_a_later_file_can_fill_an_earlier_files_missing_value(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("data:\n  root: ???\n")
    (tmp_path / "b.yaml").write_text("data:\n  root: /images\n")
    assert load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"]).data.root == "/images"
    assert "data.root" in error_of(str(tmp_path / "a.yaml"))


# --- issue 33: a hang and tracebacks where one line is promised ------------------------------

BOMB_LEVELS = 9  # ten aliases per level: 10^9 values from a few hundred bytes


def alias_bomb() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, BOMB_LEVELS):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def bounded_load(*args: str) -> str:
    """load_config(file or None, overrides) in a child with 2 GiB of address space and 60 s
    (the code before the check hung there, growing without end); its one error line."""
    import subprocess
    import sys

    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from ssl_syre.config import load_config\nfrom ssl_syre.errors import UserError\n"
        "try:\n    load_config(sys.argv[1] or None, sys.argv[2:])\nexcept UserError as error:\n"
        "    print(error); sys.exit(2)\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("loading the alias bomb did not end within 60 s")
    assert done.returncode == 2, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_yaml_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    """Item 4: nine nested levels of aliases in the config file."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    message = bounded_load(str(bomb))
    assert "aliases expand to more than" in message and str(bomb) in message


def test_an_alias_bomb_in_an_override_value_is_refused_naming_the_key() -> None:
    levels = ["&a0 [x,x,x,x,x,x,x,x,x,x]"]
    levels += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    message = bounded_load("", f"data.root=[{','.join(levels)}]")
    assert "'data.root'" in message and "aliases expand" in message


def test_ordinary_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("eval:\n  knn_k: &ks [5, 20]\n  online_every_n_epochs: 0\nx_ks: *ks\n")
    with pytest.raises(UserError, match="x_ks"):  # the alias resolves; the key is unknown
        load_config(str(path), [])
    path.write_text("seed: &s 7\ndata:\n  batch_size: *s\n")
    assert load_config(str(path), []).data.batch_size == 7


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("eval.knn_k=[1,", "eval.knn_k"),
        ("run_name=a\tb", "run_name"),
        ("data.root={a", "data.root"),
    ],
)
def test_an_override_value_yaml_cannot_read_names_its_key(override: str, key: str) -> None:
    """Item 8: OmegaConf's own error was a multi-line YAML traceback naming no key."""
    message = error_of(None, [override])
    assert message.startswith(f"cannot read the value of '{key}'")


def test_a_self_referencing_interpolation_names_its_key() -> None:
    """Item 13: `seed=${seed}` said only 'Recursive interpolation detected'."""
    message = error_of(None, ["seed=${seed}"])
    assert "'seed'" in message and "interpolation" in message


def test_a_config_path_that_is_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    """Item 13: it was called missing."""
    message = error_of(str(tmp_path))
    assert "is a directory" in message and "does not exist" not in message


def test_a_files_optimizer_stays_with_the_method_it_names() -> None:
    """The quick start's SimCLR lr does not carry over to `method=mae` or `method=vicreg`: each
    gets its own recipe's optimizer; the quick start itself keeps its own."""
    default = str(ROOT / "configs" / "default.yaml")
    quick = load_config(default).optimizer
    assert quick.lr == 0.18 and quick.warmup_epochs == 1
    for method in ("mae", "vicreg", "byol"):
        with pytest.warns(UserWarning, match=f"optimizer settings are for simclr, not {method}"):
            mine = load_config(default, [f"method={method}"]).optimizer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bare = load_config(None, [f"method={method}"]).optimizer
        assert mine == bare, method
    assert load_config(default, ["method=mae", "optimizer.lr=0.001"]).optimizer.lr == 0.001
