"""train.py --help: every key of the schema appears with its type, default and comment."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from ssl_syre.config import Config
from ssl_syre.config.usage import config_help, field_comments


def _keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node.keys():
        value = node._get_node(key)  # noqa: SLF001 - the schema node, not its value
        if isinstance(value, DictConfig) and OmegaConf.get_type(value) is not dict:
            keys += _keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_every_schema_key_is_listed_with_its_type_and_default() -> None:
    text = config_help()
    lines = text.splitlines()
    for key in _keys(OmegaConf.structured(Config)):
        assert any(line.split()[:1] == [key] for line in lines), key
    row = next(line for line in lines if line.split()[:1] == ["data.batch_size"])
    assert row.split(None, 1)[1] == "int = 256"
    row = next(line for line in lines if line.split()[:1] == ["syre.weight_decay"])
    assert "float or null = None" in row


def test_comments_come_from_the_schema_source() -> None:
    from ssl_syre.config import DataConfig, EvalConfig

    comments = field_comments(EvalConfig)
    assert comments["online_every_n_epochs"] == "0 disables the online kNN"
    assert "seeded random subset" in field_comments(DataConfig)["train_subset"]
    assert "seeded random subset" not in field_comments(DataConfig).get("test_subset", "")
