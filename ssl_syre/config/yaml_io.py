"""Reading config YAML (files and dotted overrides) safely, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_syre.errors import UserError

# The most YAML nodes a document may stand for once its aliases are expanded. Aliases can
# nest ("billion laughs": nine levels of ten *a each are 10^9 nodes in a 300-byte file), and
# OmegaConf copies every expanded node, so such a file would hang and eat memory without
# end. Our configs have a few hundred nodes.
MAX_YAML_NODES = 100_000


class YamlTooLargeError(yaml.YAMLError):
    """A document whose aliases expand past MAX_YAML_NODES, or refer to themselves."""


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many nodes `node` stands for with every alias expanded (shared nodes counted once
    per use, as OmegaConf copies them)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise YamlTooLargeError("an alias refers to the node that contains it")
    open_.add(id(node))
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_nodes(child, sizes, open_)
        if total > MAX_YAML_NODES:
            raise YamlTooLargeError(f"its aliases expand to more than {MAX_YAML_NODES} values")
    open_.discard(id(node))
    sizes[id(node)] = total
    return total


def safe_yaml(text: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_NODES.

    Raises:
        yaml.YAMLError: not YAML; YamlTooLargeError: an alias bomb or a recursive alias.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> DictConfig:
    if path.is_dir():
        raise UserError(
            f"config file '{path}' is a directory; pass a .yaml file (e.g. one in {path}/)"
        )
    if not path.is_file():
        hint = "" if path.suffix in (".yaml", ".yml") else " (a config file ends in .yaml)"
        raise UserError(f"config file '{path}' does not exist{hint}; see configs/ for examples")
    try:
        loaded = safe_yaml(path.read_text())
    except YamlTooLargeError as error:
        raise UserError(
            f"config file '{path}' is refused: {error} (YAML anchors and aliases nested to blow "
            "up its size); write the values out"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file '{path}' is not valid YAML{where}; fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"config file '{path}' is not a text YAML file") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise UserError(
            f"config file '{path}' must hold a mapping of keys (key: value), not {type(loaded).__name__}"
        )
    return OmegaConf.create(loaded)


def export_as_section(layer: Any) -> Any:
    """A config (dict or DictConfig) whose `export` is a bool, with it as `export.enabled`.

    `export` was a bool before the export.* section; configs, checkpoints and exports written
    then, and `export=false` on the command line, keep their meaning.
    """
    if isinstance(layer, dict | DictConfig) and isinstance(layer.get("export"), bool):
        if isinstance(layer, DictConfig):
            layer["export"] = {"enabled": layer["export"]}
        else:
            layer = {**layer, "export": {"enabled": layer["export"]}}
    return layer


def _parse_overrides(overrides: list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise UserError(f"cannot read argument '{item}': overrides look like dotted.key=value")
        check_override_value(item)
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as error:
        raise UserError(f"cannot read overrides: {str(error).splitlines()[0]}") from None


def check_override_value(item: str) -> None:
    """Refuse, naming the key, an override value YAML cannot read or an alias bomb.

    OmegaConf parses each value as YAML (`[1, 2]` is a list); its own errors name no key.
    """
    key, _, value = item.partition("=")
    try:
        safe_yaml(value)
    except YamlTooLargeError as error:
        raise UserError(
            f"cannot read the value of '{key}': {error}; write the values out"
        ) from None
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise UserError(
            f"cannot read the value of '{key}' ({value!r}): {problem}; values are YAML (lists "
            f'as [1,2]), so quote one that is text: {key}="..." (tabs are not allowed)'
        ) from None
