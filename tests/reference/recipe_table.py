"""The shipped configs set beside the reference recipes of tests/reference/recipes.yaml, and
docs/recipes.md rendered from that comparison.

    python tests/reference/recipe_table.py          # rewrite docs/recipes.md

test_recipes.py runs the same comparison and fails on any difference the table does not
explain; it also fails when docs/recipes.md is not what this script writes.
"""

from __future__ import annotations

import atexit
import fnmatch
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "reference" / "recipes.yaml"
DOC = ROOT / "docs" / "recipes.md"
# Method files compose after a data file (configs/data/<set>.yaml configs/method/<m>.yaml).
COMPOSED_AFTER = ("configs/data/cifar10.yaml", "configs/data/cifar100.yaml")
MISSING = object()  # a knob whose config key does not exist


@dataclass(frozen=True)
class ShippedConfig:
    """One config as users run it: a file, or a data file and a method file composed."""

    files: tuple[str, ...]  # relative to the repository root, in merge order

    @property
    def name(self) -> str:
        return " + ".join(self.files)

    @property
    def recipe_file(self) -> str:
        """The file that brings the recipe (and names the reference): the last one."""
        return self.files[-1]


@dataclass
class Row:
    """One knob of one config against its reference."""

    config: ShippedConfig
    source: str
    method: str
    knob: str
    reference: Any
    where: str
    ours: Any
    status: str  # match | deviation | differs | pending
    reason: str = ""


def load_table(path: Path = TABLE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def config_files(root: Path = ROOT) -> list[str]:
    """Every YAML file under configs/, relative to the root."""
    return sorted(str(p.relative_to(root)) for p in (root / "configs").rglob("*.yaml"))


def shipped_configs(root: Path = ROOT) -> list[ShippedConfig]:
    """Top-level configs alone; each method file after each data file it names."""
    configs = []
    for file in config_files(root):
        parts = Path(file).parts
        if len(parts) == 2:
            configs.append(ShippedConfig((file,)))
        elif parts[1] == "method":
            configs += [ShippedConfig((data, file)) for data in COMPOSED_AFTER]
    return configs


def header_references(path: Path) -> list[str]:
    """The `# reference: ...` lines of a file's leading comment block."""
    found = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#\s*reference:\s*(.+?)\s*$", line)
        if match:
            found.append(match.group(1))
    return found


def reference_source(text: str, sources: dict[str, Any]) -> tuple[str, bool]:
    """(source name, whether the config is our own recipe) of a `# reference:` line.

    Raises:
        ValueError: the line names no source of the table.
    """
    ours = text.startswith("ours")
    if ours:
        match = re.search(r"based on (.+?)\)?$", text)
        named = match.group(1).strip() if match else ""
    else:
        named = next((name for name in sources if text.startswith(name)), "")
    if named not in sources:
        raise ValueError(
            f"'# reference: {text}' names no source of recipes.yaml ({', '.join(sources)}); "
            "write '<source> (<file>)' or 'ours (<why>; based on <source>)'"
        )
    return named, ours


@cache
def _image_folder() -> str:
    """A folder with one tiny labelled image: imagefolder configs need a data.root to load."""
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="recipes-images-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    (root / "class").mkdir()
    Image.new("RGB", (8, 8)).save(root / "class" / "0.png")
    return str(root)


@cache
def load(config: ShippedConfig) -> Any:
    from ssl_syre.config import load_config

    paths = [ROOT / f for f in config.files]
    text = "".join(p.read_text() for p in paths)
    overrides = [f"data.root={_image_folder()}"] if "root: ???" in text else []
    return load_config(paths, overrides)


@cache
def _views(config: ShippedConfig) -> list[Any]:
    """The method's view recipes (lightly's settings of each view) for this config."""
    from ssl_syre.data import data_info
    from ssl_syre.methods import METHODS

    cfg = load(config)
    model = METHODS[cfg.method](cfg, data_info(cfg.data))
    return list(model.make_augmentation().recipes)


def _view_knob(config: ShippedConfig, name: str) -> Any:
    first, second = _views(config)[:2]
    if name == "color_jitter":
        factors = (first.cj_bright, first.cj_contrast, first.cj_sat, first.cj_hue)
        return [round(first.cj_strength * f, 6) for f in factors]
    if name in ("gaussian_blur", "solarization"):
        field = "gaussian_blur" if name == "gaussian_blur" else "solarization_prob"
        return [float(getattr(first, field)), float(getattr(second, field))]
    return getattr(first, name, MISSING)


def _code_knob(cfg: Any, name: str) -> Any:
    """Settings fixed in our code rather than the config (the optimizer we build)."""
    import inspect

    from lightly.utils.lars import LARS

    if name == "lars_trust_coefficient":
        return inspect.signature(LARS).parameters["trust_coefficient"].default
    if name == "lars_clip_lr":
        return False  # lightly's LARS, which SyReLARS extends, has no lr clipping
    return MISSING


def knob_value(config: ShippedConfig, knob: str) -> Any:
    """The value a config runs with for `knob`, or MISSING when no such key exists."""
    from omegaconf import OmegaConf

    from ssl_syre.methods import METHODS

    cfg = load(config)
    section, _, rest = knob.partition(".")
    if section == "views":
        return _view_knob(config, rest)
    if section == "code":
        return _code_knob(cfg, rest)
    if section == "trainer":
        defaults = {"precision": "32-true"}  # Lightning's default
        return cfg.trainer.get(rest, defaults.get(rest))
    if section == "method_kwargs":
        kwargs = METHODS[cfg.method].check_kwargs(cfg.method_kwargs)
        return getattr(kwargs, rest, MISSING)
    if knob.startswith("backbone.kwargs."):  # absent: the timm model's own default
        return OmegaConf.select(cfg, knob, default=None)
    index = re.match(r"(.+)\[(\d+)\]$", knob)
    key = index.group(1) if index else knob
    value = OmegaConf.select(cfg, key, default=MISSING)
    if value is MISSING or not index:
        return value
    return list(value)[int(index.group(2))]


def same(ours: Any, reference: Any) -> bool:
    """Equal as config values: bools only equal bools, numbers to float precision."""
    if isinstance(ours, list | tuple) or isinstance(reference, list | tuple):
        if not (isinstance(ours, list | tuple) and isinstance(reference, list | tuple)):
            return False
        pairs = zip(ours, reference, strict=False)
        return len(ours) == len(reference) and all(same(a, b) for a, b in pairs)
    if isinstance(ours, bool) or isinstance(reference, bool):
        return ours is reference
    if isinstance(ours, int | float) and isinstance(reference, int | float):
        return math.isclose(float(ours), float(reference), rel_tol=1e-9, abs_tol=1e-12)
    return (
        str(ours) == str(reference)
        if ours is not None and reference is not None
        else ours is reference
    )


def recipe(table: dict[str, Any], source: str, method: str) -> dict[str, dict[str, Any]]:
    """The knobs of `method` in `source`: the source's shared ones, then the method's."""
    by_method = table["recipes"].get(source, {})
    if method not in by_method:
        raise ValueError(f"recipes.yaml has no {method} recipe under '{source}'")
    return {**by_method.get("all", {}), **by_method[method]}


def deviation_for(table: dict[str, Any], config: ShippedConfig, knob: str) -> dict | None:
    for deviation in table.get("deviations", []):
        if knob not in deviation["knobs"]:
            continue
        if any(
            fnmatch.fnmatch(f, pattern) for f in config.files for pattern in deviation["configs"]
        ):
            return deviation
    return None


def config_source(config: ShippedConfig, sources: dict[str, Any]) -> tuple[str, bool]:
    references = header_references(ROOT / config.recipe_file)
    if len(references) != 1:
        raise ValueError(f"{config.recipe_file} has {len(references)} '# reference:' lines, not 1")
    return reference_source(references[0], sources)


def compare(table: dict[str, Any], configs: list[ShippedConfig]) -> list[Row]:
    """Every knob of every config's reference recipe, with its status."""
    rows = []
    for config in configs:
        source, _ = config_source(config, table["sources"])
        method = str(load(config).method)
        for knob, entry in recipe(table, source, method).items():
            ours = knob_value(config, knob)
            row = Row(config, source, method, knob, entry["value"], entry["where"], ours, "match")
            deviation = deviation_for(table, config, knob)
            if ours is MISSING:
                row.status = "pending" if "pending" in entry else "differs"
                row.reason = entry.get("pending", f"no config key '{knob}'")
            elif not same(ours, entry["value"]):
                row.status = "deviation" if deviation else "differs"
                row.reason = deviation["reason"] if deviation else ""
            rows.append(row)
    return rows


def stale_deviations(table: dict[str, Any], rows: list[Row]) -> list[str]:
    """Deviation entries (config pattern x knob) that explain no actual difference."""
    used = {(r.knob, r.reason) for r in rows if r.status == "deviation"}
    return [
        f"{deviation['configs']} {knob}"
        for deviation in table.get("deviations", [])
        for knob in deviation["knobs"]
        if (knob, deviation["reason"]) not in used
    ]


def _cell(value: Any) -> str:
    if value is MISSING:
        return "(no key yet)"
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(config: ShippedConfig) -> str:
    return " + ".join(
        Path(f).name if f.count("/") == 1 else f[len("configs/") :] for f in config.files
    )


def _groups(rows: list[Row]) -> Iterator[tuple[tuple[str, str], list[Row]]]:
    keys: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        keys.setdefault((row.source, row.method), []).append(row)
    yield from keys.items()


def render(table: dict[str, Any], rows: list[Row]) -> str:
    """docs/recipes.md: per source and method, each knob's reference value, where the source
    sets it, what our configs run and why they differ."""
    lines = [
        "# Recipes: our configs beside their references",
        "",
        "[← README](../README.md)",
        "",
        "Every config in [configs/](../configs) names its reference in its first lines "
        "(`# reference: ...`): a published recipe it reproduces, or `ours (...; based on ...)` "
        "for the CPU-sized and image-folder recipes built from one. This page sets every knob "
        "of each reference beside what our configs run, and says why where they differ. It is "
        "written by `python tests/reference/recipe_table.py` from "
        "[tests/reference/recipes.yaml](../tests/reference/recipes.yaml), and "
        "`tests/reference/test_recipes.py` fails when a config differs from its reference "
        "without a reason there, or when this page is out of date.",
        "",
        "`views.*` are the effective augmentations of the first two views (color_jitter is "
        "strength × [brightness, contrast, saturation, hue]); `code.*` are settings of our "
        'code, not of a config. "(no key yet)" marks a knob whose setting is being added; '
        "its test is skipped by name until it exists.",
        "",
        "## Sources",
        "",
        "| source | where | what |",
        "|---|---|---|",
    ]
    for name, source in table["sources"].items():
        where = ""
        if "repo" in source:
            where = f"`{source['repo']}` `{source['file']}` at `{source['commit'][:10]}`"
        lines.append(f"| {name} | {where} | {' '.join(source['about'].split())} |")
    used = {(r.source, r.method) for r in rows}
    unused = [
        (source, method)
        for source, methods in table["recipes"].items()
        for method in methods
        if method != "all" and (source, method) not in used
    ]
    for (source, method), group in _groups(rows):
        configs = list(dict.fromkeys(_short(r.config) for r in group))
        lines += [
            "",
            f"## {method}: {source}",
            "",
            "Configs: " + ", ".join(f"`{c}`" for c in configs),
            "",
        ]
        lines += [
            "| knob | reference | source says | ours | why it differs |",
            "|---|---|---|---|---|",
        ]
        for knob in dict.fromkeys(r.knob for r in group):
            knob_rows = [r for r in group if r.knob == knob]
            first = knob_rows[0]
            odd = [r for r in knob_rows if r.status != "match"]
            if not odd:
                ours = "same"
            else:
                values: dict[str, list[str]] = {}
                for r in odd:
                    values.setdefault(_cell(r.ours), []).append(_short(r.config))
                ours = "; ".join(
                    f"{value} ({', '.join(names) if len(names) < len(knob_rows) else 'all'})"
                    for value, names in values.items()
                )
            reasons = "; ".join(dict.fromkeys(r.reason for r in odd if r.reason))
            where = first.where.replace("|", "\\|")
            lines.append(f"| `{knob}` | {_cell(first.reference)} | {where} | {ours} | {reasons} |")
    for source, method in unused:
        lines += ["", f"## {method}: {source} (no config follows it yet)", ""]
        lines += ["| knob | reference | source says |", "|---|---|---|"]
        for knob, entry in recipe(table, source, method).items():
            where = entry["where"].replace("|", "\\|")
            lines.append(f"| `{knob}` | {_cell(entry['value'])} | {where} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    table = load_table()
    DOC.write_text(render(table, compare(table, shipped_configs())))
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
