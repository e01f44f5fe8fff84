"""Every shipped config names its reference and matches it knob by knob, or recipes.yaml says
why not; docs/recipes.md is the rendering of that comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import recipe_table as rt
import torch


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return rt.load_table()


@pytest.fixture(scope="module")
def rows(table: dict[str, Any]) -> list[rt.Row]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # builds each config's model once, for its views
    try:
        return rt.compare(table, rt.shipped_configs())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("file", rt.config_files())
def test_every_config_names_one_known_reference(file: str, table: dict[str, Any]) -> None:
    references = rt.header_references(rt.ROOT / file)
    assert len(references) == 1, f"{file}: one '# reference: ...' header line, got {references}"
    source, _ = rt.reference_source(references[0], table["sources"])
    assert source in table["recipes"], f"{file}: '{source}' has no recipes in recipes.yaml"


@pytest.mark.parametrize("config", rt.shipped_configs(), ids=lambda c: c.name)
def test_config_matches_its_reference_or_says_why(config: rt.ShippedConfig, rows) -> None:
    mine = [row for row in rows if row.config == config]
    assert mine, f"{config.name}: no knob of its reference was checked"
    differs = [
        f"{row.knob}: ours {rt._cell(row.ours)}, {row.source} {rt._cell(row.reference)} "
        f"({row.where}){' - ' + row.reason if row.reason else ''}"
        for row in mine
        if row.status == "differs"
    ]
    assert not differs, (
        f"{config.name} differs from its reference without a deviation in recipes.yaml:\n"
        + "\n".join(differs)
    )


def test_every_deviation_explains_a_difference(table: dict[str, Any], rows) -> None:
    assert rt.stale_deviations(table, rows) == []


def _pending_knobs() -> list[tuple[str, str, str, str]]:
    table = rt.load_table()
    return [
        (source, method, knob, entry["pending"])
        for source, methods in table["recipes"].items()
        for method, knobs in methods.items()
        for knob, entry in knobs.items()
        if "pending" in entry
    ]


@pytest.mark.parametrize(
    "source, method, knob, pending", _pending_knobs(), ids=lambda v: str(v)[:40]
)
def test_pending_knob_is_checked_once_its_key_exists(
    source: str, method: str, knob: str, pending: str, rows
) -> None:
    """A knob another change adds: skipped by name while its key is missing, then checked by
    test_config_matches_its_reference_or_says_why like any other."""
    mine = [r for r in rows if (r.source, r.method, r.knob) == (source, method, knob)]
    if not mine:
        pytest.skip(f"no shipped config follows {method} under '{source}' yet")
    if any(r.status == "pending" for r in mine):
        pytest.skip(f"{knob} of {method} ({source}): key not in the schema yet: {pending}")
    assert all(r.status in ("match", "deviation") for r in mine)


def test_a_config_value_off_its_reference_is_caught(table: dict[str, Any]) -> None:
    """The check can fail: a reference value our config does not run is reported."""
    config = rt.ShippedConfig(("configs/simclr_cifar10.yaml",))
    changed = {**table, "deviations": []}
    lightly = dict(table["recipes"]["lightly CIFAR-10 benchmark"])
    lightly["simclr"] = {
        **lightly["simclr"],
        "method_kwargs.temperature": {"value": 0.3, "where": "test"},
        "views.min_scale": {"value": 0.5, "where": "test"},
    }
    changed["recipes"] = {**table["recipes"], "lightly CIFAR-10 benchmark": lightly}
    rows = {r.knob: r for r in rt.compare(changed, [config])}
    assert rows["method_kwargs.temperature"].status == "differs"
    assert rows["method_kwargs.temperature"].ours == 0.5
    assert rows["views.min_scale"].status == "differs"
    assert rows["optimizer.lr"].status == "match"


@pytest.mark.parametrize(
    "line",
    [
        "lightly CIFAR-10 benchmark (cifar10_benchmark.py)",
        "ours (CPU-sized; based on lightly CIFAR-10 benchmark)",
    ],
)
def test_reference_lines_name_a_source(line: str, table: dict[str, Any]) -> None:
    source, ours = rt.reference_source(line, table["sources"])
    assert source == "lightly CIFAR-10 benchmark" and ours == line.startswith("ours")


@pytest.mark.parametrize(
    "line", ["lightly's recipe", "ours (CPU-sized)", "ours (based on a blog post)"]
)
def test_reference_lines_naming_no_source_are_refused(line: str, table: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="names no source"):
        rt.reference_source(line, table["sources"])


def test_header_reference_is_read_from_the_leading_comments_only(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "# reference: DINO paper (main_dino.py)\n# more\nmethod: dino\n# reference: x\n"
    )
    assert rt.header_references(path) == ["DINO paper (main_dino.py)"]


def test_values_compare_as_config_values() -> None:
    assert rt.same(0.06, 0.06) and rt.same(512, 512.0) and rt.same([0.4, 0.1], (0.4, 0.1))
    assert not rt.same(True, 1) and not rt.same(None, 0) and not rt.same([0.4], [0.4, 0.1])
    assert rt.same(None, None) and rt.same("sgd", "sgd") and not rt.same("sgd", "lars")


def test_every_knob_names_its_value_and_where_the_source_sets_it(table: dict[str, Any]) -> None:
    for source, methods in table["recipes"].items():
        assert source in table["sources"], source
        for method, knobs in methods.items():
            for knob, entry in knobs.items():
                assert {"value", "where"} <= set(entry), (source, method, knob)
                assert str(entry["where"]).strip(), (source, method, knob)
    for deviation in table["deviations"]:
        assert deviation["configs"] and deviation["knobs"] and deviation["reason"].strip()


def test_docs_recipes_md_is_the_rendered_table(table: dict[str, Any], rows) -> None:
    rendered = rt.render(table, rows)
    assert rt.DOC.read_text() == rendered, (
        "docs/recipes.md is out of date: run python tests/reference/recipe_table.py"
    )


def test_readme_method_table_and_recipes_page_link_each_other() -> None:
    """The README's method table has a row per registered method, and the paragraph under it
    links the recipes page, which links back."""
    from ssl_syre.methods import METHODS

    lines = (rt.ROOT / "README.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| `method` | paper |")))
    end = start + next(i for i, line in enumerate(lines[start:]) if not line.startswith("|"))
    rows = {line.split("|")[1].strip().strip("`") for line in lines[start + 2 : end]}
    assert rows == set(METHODS)
    assert "(docs/recipes.md)" in " ".join(lines[end : end + 4])
    assert "](../README.md)" in rt.DOC.read_text()
