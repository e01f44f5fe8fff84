"""Shared by the benchmark scripts: one run's numbers, mean +- std over seeds, study-page blocks.

Every table a script writes sits in its study's page (benchmarks/results/<study>.md, indexed
by benchmarks/RESULTS.md) between `<!-- name:begin -->` and `<!-- name:end -->` markers, so a
rerun replaces its own block and leaves the hand-written text around it alone.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

RESULTS_PAGES = Path(__file__).resolve().parent / "results"


def study_page(name: str, study: str) -> Path:
    """The page that holds the `name` block, else the study's own page results/<study>.md."""
    begin = f"<!-- {name}:begin -->"
    for page in sorted(RESULTS_PAGES.glob("*.md")):
        if begin in page.read_text():
            return page
    return RESULTS_PAGES / f"{study}.md"


def pick(records: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    """The first metrics.json record whose fields equal `where`."""
    for record in records:
        if all(record.get(key) == value for key, value in where.items()):
            return record
    return None


def cell_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of one run's metrics.json that go into a table (accuracies in %)."""
    knn, probe, collapse = metrics["knn"], metrics["linear_probe"], metrics["collapse"]
    row: dict[str, float] = {}
    for features in ("backbone", "projector", "raw_pixels"):
        for k in (200, 20):
            record = pick(knn, features=features, k=k)
            if record is not None:
                row[f"knn{k}_{features}"] = 100 * record["top1"]
        record = pick(probe, features=features)
        if record is not None:
            row[f"linear_{features}"] = 100 * record["top1"]
        record = pick(collapse, features=features)
        if record is not None:
            row[f"rankme_{features}"] = record["rankme"]
            row[f"lowrank_{features}"] = 100 * record["low_rankness"]
            row[f"dim_{features}"] = record["dim"]
            if "dead_units" in record:
                row[f"dead_{features}"] = 100 * record["dead_units"]
    row["wall_time_s"] = metrics["run"]["wall_time_s"]
    row["steps"] = metrics["run"]["steps"]
    pull = metrics["run"].get("decay", {}).get("pull_per_step")
    if pull is not None:  # how hard the decay pulls per step: arms compare by this, not by γ
        row["pull_per_step"] = pull
    return row


def decay_of(metrics: dict[str, Any]) -> str:
    """One cell naming what the decay pulls toward, in which mode, and how hard per step."""
    decay = metrics["run"].get("decay")
    if decay is None:  # runs from before metrics.json recorded it
        return "not recorded"
    absolute = " absolute" if decay.get("anchor_scale") == "absolute" else ""
    toward = "0" if decay["toward"] == "zero" else f"θ0 (σ0={decay['sigma0']:g}{absolute})"
    if decay.get("d_eps"):
        toward += f", D eps={decay['d_eps']:g}"
    pull = decay.get("pull_per_step")
    strength = "-" if pull is None else f"{pull:.2g}/step"
    if decay.get("weight_decay_end") is not None:  # a cosine schedule: γ from start to end
        strength += f", γ {decay['weight_decay']:g}→{decay['weight_decay_end']:g} cosine"
    return f"{decay['mode']} toward {toward}, {strength}"


def paired(
    treated: dict[int, dict[str, float]], control: dict[int, dict[str, float]], keys: list[str]
) -> tuple[list[int], dict[str, dict[str, float]]]:
    """Treated minus control seed by seed, over the seeds both have: mean ± std per key.

    A pair shares init, data order and augmentations (anchors come from their own generator),
    so the difference isolates the one setting the arms differ in.
    """
    seeds = sorted(set(treated) & set(control))
    stats = {
        key: summarize([treated[seed][key] - control[seed][key] for seed in seeds])
        for key in keys
        if seeds and all(key in treated[seed] and key in control[seed] for seed in seeds)
    }
    return seeds, stats


def summarize(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(values)}


def summarize_rows(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and std over seeds of every key that any seed has."""
    keys = sorted({key for numbers in per_seed.values() for key in numbers})
    return {key: summarize([n[key] for n in per_seed.values() if key in n]) for key in keys}


def fmt(stats: dict[str, float] | None, digits: int = 1) -> str:
    if stats is None:
        return "-"
    if stats["n"] > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


def write_study_table(
    name: str,
    study: str,
    table: dict[str, Any],
    markdown: str,
    output_dir: str | Path,
    default_output_dir: str | Path,
    checkout: bool = False,
) -> Path:
    """Write a study's table (JSON and its markdown block) where its cells say it belongs.

    Cells in the study's default folder (runs/<study>: the documented command, rerun) update the
    checkout's results pages; cells anywhere else (--output-dir) keep the table beside them, in
    OUTPUT_DIR/<study>.md and OUTPUT_DIR/<name>.json, so a trial run never touches the checkout
    unless `checkout` (--checkout-results) asks for it. Returns the page written.
    """
    if checkout or Path(output_dir).resolve() == Path(default_output_dir).resolve():
        folder, page = RESULTS_PAGES, study_page(name, study)
    else:
        folder = Path(output_dir)
        page = folder / f"{study}.md"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(table, indent=2))
    write_block(name, markdown, page)
    print(f"wrote {folder / (name + '.json')} and the {name} block of {page}")
    return page


def write_block(name: str, markdown: str, results_md: Path) -> None:
    """Replace (or append) the `name` block of the page `results_md` with `markdown`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown}\n{end}"
    text = results_md.read_text() if results_md.is_file() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results_md.write_text(text)


def paired_table(
    title: str,
    label_columns: list[str],
    pairs: list[tuple[list[str], dict[int, dict[str, float]], dict[int, dict[str, float]]]],
    keys: dict[str, str],
) -> list[str]:
    """Markdown lines of treated − control per seed (see `paired`), one row per pair.

    `pairs` holds (row labels, treated per-seed numbers, control per-seed numbers); `keys` maps
    a number's key to its column title. No lines when no pair shares a seed.
    """
    lines = [
        "",
        title,
        "",
        "| " + " | ".join([*label_columns, "seeds", *keys.values()]) + " |",
        "|" + "---|" * (len(label_columns) + 1 + len(keys)),
    ]
    for labels, treated, control in pairs:
        seeds, stats = paired(treated, control, list(keys))
        if seeds:
            cells = [*labels, ",".join(map(str, seeds)), *(fmt(stats.get(key)) for key in keys)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 5 else []
