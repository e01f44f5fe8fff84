"""Config loading and validation: every mistake is one clear line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssl_syre.config import load_config
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
    assert cfg.backbone.name == "resnet18" and cfg.seed == 3
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


def test_a_later_file_can_fill_an_earlier_files_missing_value(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("data:\n  root: ???\n")
    (tmp_path / "b.yaml").write_text("data:\n  root: /images\n")
    assert load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"]).data.root == "/images"
    assert "data.root" in error_of(str(tmp_path / "a.yaml"))
