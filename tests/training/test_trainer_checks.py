"""trainer.* checks: Lightning's types and refusals become one line before anything is written."""

from __future__ import annotations

import typing
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from ssl_syre.config import load_config
from ssl_syre.errors import UserError
from ssl_syre.training.pipeline import check_trainer
from tests.conftest import TINY

# Every precision value Lightning's Trainer declares, read from its signature.
PRECISIONS = [
    value
    for arm in typing.get_args(typing.get_type_hints(pl.Trainer.__init__)["precision"])
    for value in typing.get_args(arm)
]


def weight_dtype(precision: str | int) -> torch.dtype | None:
    """The dtype Lightning's precision plugin gives a module's weights; None if it cannot build."""
    try:
        trainer = pl.Trainer(
            accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False
        )
    except ModuleNotFoundError:  # transformer-engine modes need NVIDIA's transformer_engine
        return None
    return trainer.strategy.precision_plugin.convert_module(nn.Linear(2, 2)).weight.dtype


@pytest.mark.parametrize("precision", PRECISIONS, ids=repr)
def test_precision_refused_exactly_when_weights_become_16_bit(precision: str | int) -> None:
    dtype = weight_dtype(precision)
    # Lightning's TransformerEnginePrecision keeps weights in bf16 ('transformer-engine') or
    # fp16 ('-float16'); it cannot be built without the package, so its dtype is not observed.
    sixteen_bit = dtype in (torch.float16, torch.bfloat16) if dtype is not None else True
    # repr quotes strings, so that '64' stays a string and 64 an int, as in a YAML file.
    cfg = load_config(None, [*TINY, f"trainer.precision={precision!r}"])
    assert cfg.trainer.precision == precision and type(cfg.trainer.precision) is type(precision)
    if sixteen_bit:
        with pytest.raises(UserError, match=r"trainer\.precision=.*bf16-mixed"):
            check_trainer(cfg, steps_per_epoch=3)
    else:
        assert check_trainer(cfg, steps_per_epoch=3)["precision"] == precision


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("trainer.max_steps=x", "trainer.max_steps"),
        ("trainer.log_every_n_steps=x", "trainer.log_every_n_steps"),
        ("trainer.precision=banana", "trainer.precision"),
        ("trainer.deterministic=maybe", "trainer.deterministic"),
        ("trainer.devices=[a]", "trainer.devices"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ],
)
def test_wrong_trainer_types_are_refused_when_loading(override: str, key: str) -> None:
    with pytest.raises(UserError) as info:
        load_config(None, [*TINY, override])
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_epochs=-5", "trainer.max_epochs"),
        ("trainer.devices=abc", "trainer.devices"),
        ("trainer.devices=0", "trainer.devices"),
        ("trainer.strategy=foo", "trainer.strategy"),
        ("trainer.limit_train_batches=-1", "trainer.limit_train_batches"),
    ],
)
def test_lightning_refusals_name_the_key(override: str, key: str) -> None:
    cfg = load_config(None, [*TINY, override])  # the types are right: Lightning refuses
    with pytest.raises(UserError) as info:
        check_trainer(cfg, steps_per_epoch=3)
    message = str(info.value)
    assert f"'{key}'" in message and "Lightning says" in message and "\n" not in message


def test_valid_trainer_settings_pass(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "trainer.devices=1", "trainer.max_time=00:00:10:00"])
    kwargs = check_trainer(cfg, steps_per_epoch=3)
    assert kwargs["max_epochs"] == 1 and kwargs["devices"] == 1
    assert not list(tmp_path.iterdir())
