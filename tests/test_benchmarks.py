"""The benchmark scripts' own logic: RESULTS.md blocks, collapse-study variants, one tiny sweep,
and their command lines (options unchanged, every documented command accepted)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TINY

sys.path.insert(0, str(ROOT / "benchmarks"))
import collapse_stress  # noqa: E402
import results_table  # noqa: E402


def test_write_block_replaces_only_its_own_block(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written text\n")
    results_table.write_block("a", "first", md)
    results_table.write_block("b", "other", md)
    results_table.write_block("a", "second", md)
    text = md.read_text()
    assert "hand-written text" in text
    assert "second" in text and "first" not in text
    assert text.count("<!-- a:begin -->") == 1 and "other" in text


def test_summarize_rows_mean_and_std_over_seeds() -> None:
    stats = results_table.summarize_rows({0: {"x": 1.0, "y": 5.0}, 1: {"x": 3.0}})
    assert stats["x"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert stats["y"]["n"] == 1
    assert results_table.fmt(stats["x"]) == "2.0 ± 1.4"
    assert results_table.fmt(stats["y"]) == "5.0"


def test_collapse_variants_parse_sigma0_and_d_eps() -> None:
    assert collapse_stress.variant_overrides("off") == ["syre.enabled=false"]
    assert collapse_stress.variant_overrides("0.01:0.1") == [
        "syre.enabled=true",
        "syre.sigma0=0.01",
        "syre.d_eps=0.1",
    ]
    assert collapse_stress.variant_label("0.1:0.5") == "SyRe sigma0=0.1, D eps=0.5"
    assert collapse_stress.variant_label("off") == "decay toward 0"
    with pytest.raises(SystemExit, match="SIGMA0"):
        collapse_stress.variant_overrides("0.01:big")


@pytest.mark.slow
def test_collapse_study_runs_and_writes_table_plots_and_json(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "collapse_stress.py"),
        "--variants",
        "off,0.01:0.1",
        "--modes",
        "coupled",
        "--seeds",
        "0",
        "--tag",
        "tiny",
        "--output-dir",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--results-md",
        str(md),
        "--threads",
        "1",
        "--set",
        *TINY,
        "trainer.max_steps=3",
        "data.test_subset=null",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "results" / "tiny.json").read_text())["rows"]
    assert set(rows) == {"coupled/off", "coupled/0.01:0.1"}
    assert rows["coupled/off"]["seeds"] == [0]
    assert (tmp_path / "runs" / "tiny_coupled_0.01-d0.1_seed0" / "config.yaml").is_file()
    table = md.read_text()
    # Each row names its decay: target, mode and pull per step (lr 0.06·64/128 · γ 0.2 / 0.1).
    assert "| coupled | decay toward 0 | coupled toward 0, 0.06/step | 0 |" in table
    assert (
        "| coupled | SyRe sigma0=0.01, D eps=0.1 | coupled toward θ0 (σ0=0.01), D eps=0.1" in table
    )
    assert "| coupled | SyRe sigma0=0.01, D eps=0.1 | 0 |" in table  # the paired difference
    for kind in ("projector", "backbone"):
        assert (tmp_path / "results" / f"tiny_{kind}_spectra.png").stat().st_size > 0
    # A rerun skips the finished runs instead of training again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skip (done)") == 2


def fake_metrics(knn: float, mode: str, sigma0: float) -> dict:
    """The parts of a metrics.json that the tables read."""
    return {
        "knn": [{"features": "backbone", "k": 200, "top1": knn}],
        "linear_probe": [{"features": "backbone", "top1": knn + 0.01}],
        "collapse": [
            {"features": "backbone", "rankme": 10.0, "low_rankness": 0.0, "dim": 96},
        ],
        "run": {
            "wall_time_s": 1.0,
            "steps": 3,
            "decay": {
                "toward": "anchor" if sigma0 else "zero",
                "mode": mode,
                "sigma0": sigma0,
                "d_eps": 0.0,
                "pull_per_step": 6e-4 if mode == "coupled" else 6e-5,
            },
        },
    }


def test_ablation_pairs_each_sigma0_with_the_off_cell_of_its_mode(tmp_path: Path) -> None:
    import argparse

    import ablation

    args = argparse.Namespace(
        output_dir=str(tmp_path),
        scale="cpu",
        modes=["coupled"],
        sigma0=[0.3],
        table_seeds=None,
        set=[],
    )
    accuracies = {(0.0, 0): 0.50, (0.0, 1): 0.60, (0.3, 0): 0.55, (0.3, 1): 0.62}
    for (sigma0, seed), knn in accuracies.items():
        run_dir = tmp_path / "cpu" / ablation.run_name("simclr", "coupled", sigma0, seed, 300)
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(fake_metrics(knn, "coupled", sigma0)))
    assert ablation.syre_overrides("coupled", 0.0) == ["syre.enabled=false", "syre.mode=coupled"]
    table = ablation.collect(args, 300)
    assert [(row["sigma0"], row["seeds"]) for row in table["rows"]] == [
        (0.0, [0, 1]),
        (0.3, [0, 1]),
    ]
    text = ablation.markdown(table)
    assert "| simclr | off (toward 0) | coupled toward 0, 0.0006/step | 0,1 | 55.0 ± 7.1 |" in text
    # Paired by seed: +5 and +2 points -> 3.5 ± 2.1, not the 3.5 ± 10 of unpaired means.
    assert "| simclr | coupled | sigma0=0.3 | 0,1 | 3.5 ± 2.1 |" in text


def test_paper_table_pairs_each_arm_with_decay_toward_0_and_prints_the_paper(
    tmp_path: Path,
) -> None:
    """Collect and markdown of benchmarks/paper_ssl_table.py on fake finished cells."""
    import argparse

    import paper_ssl_table

    args = argparse.Namespace(
        output_dir=str(tmp_path), scale="cpu", arms=["off", "abs0.01"], seeds=[0, 1], set=[]
    )
    for (arm, seed), knn in {("off", 0): 0.5, ("off", 1): 0.6, ("abs0.01", 0): 0.55}.items():
        run_dir = paper_ssl_table.run_dir_of(arm, seed, args)
        run_dir.mkdir(parents=True)
        metrics = fake_metrics(knn, "coupled", 0.0 if arm == "off" else 0.01)
        metrics["symmetry"] = {"dead_units": 3, "duplicated_units": 2 + seed, "low_rank_0.001": 0.5}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        # The projector's shares are cached beside the run; no checkpoint is needed then.
        shares = {"0.01": 90.0, "0.001": 70.0 + seed, "0.0001": 10.0}
        (run_dir / "paper_table_cell.json").write_text(json.dumps(shares))
    table = paper_ssl_table.collect(args)
    assert [(arm, row["seeds"]) for arm, row in table["rows"].items()] == [
        ("off", [0, 1]),
        ("abs0.01", [0]),
    ]
    assert "syre.cover=conv_linear" in table["overrides"]
    text = paper_ssl_table.markdown(table)
    off_row = next(line for line in text.splitlines() if line.startswith("| decay toward 0 |"))
    cells = [cell.strip() for cell in off_row.strip("|").split("|")]
    assert cells[3:6] == ["90.0 ± 0.0", "70.5 ± 0.7", "10.0 ± 0.0"]
    assert cells[10] == "3.0 ± 0.0" and cells[12] == "2.5 ± 0.7" and cells[13] == "50.00 ± 0.00"
    assert cells[-3:] == ["70%", "22.2", "~46.8"]  # the paper's numbers beside
    assert "| sigma0=0.01 absolute (paper) | 0 | 0.0 |" in text  # paired with off, seed 0


@pytest.mark.slow  # a few minutes: every phase of the device check on the CPU, compile included
def test_gpu_check_smoke_runs_every_phase_on_the_cpu(tmp_path: Path) -> None:
    fashion = Path("/usr/share/datasets/fashion-mnist")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "FASHION_MNIST": str(fashion)}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--smoke", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )
    summary = (tmp_path / "summary.txt").read_text()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exit 0" in summary
    for phase in ("ceilings", "split", "ladder", "syncfree", "accuracy"):
        record = json.loads((tmp_path / f"step_{phase}.json").read_text())
        assert record["smoke"] and phase in record, phase
    ladder = json.loads((tmp_path / "step_ladder.json").read_text())["ladder"]
    assert list(ladder) == ["today", "sync_free", "resident", "fused", "compiled"]
    assert all(row["ms_per_step"] > 0 for row in ladder.values())
    sync = json.loads((tmp_path / "step_syncfree.json").read_text())["syncfree"]
    assert sync["ok"] and sync["quiet_steps_checked"] >= 1
    accuracy = json.loads((tmp_path / "step_accuracy.json").read_text())["accuracy"]
    assert set(accuracy["fast"]["knn_top1"]) == {"raw_pixels", "backbone"}
    assert "side by side" in summary and "x today" in summary


@pytest.mark.parametrize("where", ["default", "--out", "positional"])
def test_gpu_check_smoke_writes_to_a_temporary_or_given_directory(
    tmp_path: Path, where: str
) -> None:
    """A smoke run never writes into benchmarks/results/gpu, where measured results live.

    PYTHON=true stands in for every Python step, so this checks only where the script writes.
    """
    given = tmp_path / "given"
    extra = {"default": [], "--out": ["--out", str(given)], "positional": [str(given)]}[where]
    env = {**os.environ, "PYTHON": "true", "TMPDIR": str(tmp_path), "OUT": str(tmp_path / "o")}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--smoke", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    if where == "default":
        (folder,) = tmp_path.glob("gpu_check_smoke.*")
    else:
        folder = given
    assert (folder / "summary.txt").is_file()
    assert f"results in {folder}" in result.stdout
    assert not (tmp_path / "o").exists(), "a smoke run ignores $OUT unless --out is given"


def test_ablation_finds_every_method_config_and_resolves_auto_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method joins the table by its benchmarks/configs/<name>.yaml; 'auto' runs it in its
    recipe's mode (coupled under sgd and lars, decoupled under adamw)."""
    import ablation

    assert ablation.METHODS == (
        *("simclr", "byol", "simsiam", "mocov2", "barlowtwins", "vicreg", "dino"),
        *("swav", "nnclr", "dcl", "mocov3", "ibot", "dinov2", "mae", "lejepa"),
    )
    assert not any(name.startswith("stress_") for name in ablation.METHODS)
    # Each method in its recipe's mode: coupled under SGD and LARS (vicreg, mocov3) and under
    # lightly's Adam with L2 decay (swav), decoupled under AdamW.
    coupled = ("simclr", "byol", "simsiam", "mocov2", "barlowtwins", "vicreg", "swav")
    coupled += ("nnclr", "dcl", "mocov3")
    for method in ablation.METHODS:
        expected = "coupled" if method in coupled else "decoupled"
        assert ablation.modes_of(method, ["auto"]) == [expected], method
    assert ablation.modes_of("simclr", ["auto", "coupled", "decoupled"]) == ["coupled", "decoupled"]
    (tmp_path / "adamw_method.yaml").write_text("method: x\noptimizer:\n  name: adamw\n")
    monkeypatch.setattr(ablation, "CONFIGS", tmp_path)
    assert ablation.modes_of("adamw_method", ["auto"]) == ["decoupled"]


@pytest.mark.parametrize("scale", ["cpu", "cpu_small", "gpu"])
def test_every_ablation_cell_builds_at_every_scale(scale: str) -> None:
    """Each method's cell config with a scale's overrides and both arms' SyRe settings loads
    and builds its model (a ViT's crops and patches fit); MAE and LeJEPA run at their
    recipes' weight decay."""
    import ablation

    from ssl_syre.config import load_config
    from ssl_syre.data import data_info
    from ssl_syre.methods import METHODS

    for method in ablation.METHODS:
        (mode,) = ablation.modes_of(method, ["auto"])
        for sigma0 in (0.0, 1.0):
            overrides = [
                *ablation.syre_overrides(mode, sigma0),
                *ablation.cell_overrides(method, scale),
            ]
            cfg = load_config(str(ablation.CONFIGS / f"{method}.yaml"), overrides)
            assert cfg.method == method and bool(cfg.syre.enabled) == bool(sigma0)
        METHODS[method](cfg, data_info(cfg.data))
    assert ablation.cell_overrides("dino", scale) == ablation.SCALES[scale]["overrides"]
    recipe_decay = {"mae": 0.05, "lejepa": 0.05}  # the MAE paper's, lightly's LeJEPA benchmark
    for method, decay in recipe_decay.items():
        assert load_config(str(ablation.CONFIGS / f"{method}.yaml")).optimizer.weight_decay == decay


# Each script's command line, as `--help` shows it (flags, dest, default, type, nargs, choices,
# help), recorded from the scripts before their common options moved to common_args.py. A
# deliberate change to an option updates this file; an accidental one fails here.
PARSERS = json.loads((ROOT / "tests" / "benchmark_parsers.json").read_text())
# Defaults that depend on the machine or on the configs folder: the golden file names them.
DYNAMIC = {
    ("gpu_throughput", "num_workers", "default"): "min(14, os.cpu_count())",
    ("ablation", "method", "default"): "ablation.METHODS",
    ("ablation", "method", "choices"): "ablation.METHODS",
}


def _describe(parser: argparse.ArgumentParser, script: str) -> dict[str, Any]:
    """The parser as plain JSON values, with this checkout's root written as <ROOT>."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path | str):
            return str(value).replace(str(ROOT), "<ROOT>")
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    actions = []
    for action in parser._actions:
        row = {
            "option_strings": action.option_strings,
            "dest": action.dest,
            "default": plain(action.default),
            "type": getattr(action.type, "__name__", None),
            "nargs": action.nargs,
            "choices": plain(action.choices),
            "help": action.help,
            "action": type(action).__name__,
            "required": action.required,
        }
        for (name, dest, key), marker in DYNAMIC.items():
            if name == script and dest == action.dest:
                row[key] = marker
        actions.append(row)
    return {"description": parser.description, "actions": actions}


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_benchmark_parser_keeps_its_options_and_defaults(script: str) -> None:
    module = importlib.import_module(script)
    assert _describe(module.build_parser(), script) == PARSERS[script]


def test_dynamic_parser_defaults_are_what_the_golden_file_names() -> None:
    import ablation
    import gpu_throughput

    (method,) = [a for a in ablation.build_parser()._actions if a.dest == "method"]
    assert method.default == list(ablation.METHODS) and method.choices == ablation.METHODS
    (workers,) = [a for a in gpu_throughput.build_parser()._actions if a.dest == "num_workers"]
    assert workers.default == min(14, os.cpu_count() or 1)


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every `python benchmarks/NAME.py ...` in RESULTS.md, its study pages, README.md and docs/:
    (NAME, args).

    Inline code spans may wrap across lines; code-block lines may continue with a backslash.
    Shell comments, pipes, redirections and chained commands are cut off; `[--flag]` is read as
    the optional flag it marks.
    """
    commands = []
    pages = [ROOT / "benchmarks" / "RESULTS.md", *sorted(ROOT.glob("benchmarks/results/*.md"))]
    for path in [*pages, ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        text = path.read_text()
        found = re.findall(r"`(python benchmarks/[^`]+)`", text, flags=re.S)
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
            block = block.replace("\\\n", " ")
            found += [line for line in block.splitlines() if "python benchmarks/" in line]
        for command in found:
            command = command[command.index("python benchmarks/") :]
            command = re.split(r"\s#|\||&&|;|\s2?>|\s&\s*$", command)[0]
            command = re.sub(r"\[(--[\w-]+)\]", r"\1", command)  # usage-style [--flag]
            tokens = shlex.split(command)
            script = Path(tokens[1]).stem
            commands.append((script, tokens[2:]))
    return commands


DOCUMENTED = _documented_commands()


def test_documented_benchmark_commands_are_found() -> None:
    scripts = {script for script, _ in DOCUMENTED}
    assert {"ablation", "collapse_stress", "throughput", "syre_overhead"} <= scripts
    assert all(script in PARSERS for script in scripts), scripts - set(PARSERS)


@pytest.mark.parametrize(
    ("script", "args"), DOCUMENTED, ids=[" ".join([s, *a])[:80] for s, a in DOCUMENTED]
)
def test_documented_benchmark_command_parses(script: str, args: list[str]) -> None:
    parser = importlib.import_module(script).build_parser()
    parsed, unknown = parser.parse_known_args(args)
    assert unknown == [], f"{script} does not accept {unknown}"
    flags = [arg.split("=")[0] for arg in args if arg.startswith("--")]
    for flag in flags:  # spelled out in full, not an abbreviation argparse happens to expand
        assert flag in parser._option_string_actions, f"{script}: {flag}"
        assert parser._option_string_actions[flag].dest in vars(parsed)


def test_cell_runner_skips_finished_cells_and_reports_a_run_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cells

    finished = tmp_path / "done"
    finished.mkdir()
    (finished / "metrics.json").write_text("{}")
    assert cells.run_cell(finished, "unused.yaml", []) == finished
    assert "skip (done)" in capsys.readouterr().out
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "leftover").write_text("x")
    # dry run: the command is printed, the broken directory is not touched yet
    cells.run_cell(broken, "c.yaml", ["seed=3"], dry_run=True)
    printed = capsys.readouterr().out
    assert "seed=3" in printed and f"run_name={broken.name}" in printed
    assert (broken / "leftover").exists()
    with pytest.raises(SystemExit) as stop:  # a config that does not exist: train.py's error line
        cells.run_cell(broken, tmp_path / "missing.yaml", [], threads=1)
    message = str(stop.value)
    assert message.startswith("error:") and "missing.yaml" in message and "broken.log" in message
    assert not (broken / "leftover").exists()  # the broken cell was cleared before training


def test_study_tables_go_to_the_page_that_holds_their_block() -> None:
    assert results_table.study_page("ablation_cpu_small_steps100", "x").name == "ablation.md"
    assert results_table.study_page("stress_vicreg", "x").name == "anti_collapse_terms.md"
    assert results_table.study_page("no_such_block", "collapse_stress").name == "collapse_stress.md"


def test_results_index_is_short_and_links_every_study_page() -> None:
    index = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert len(index) <= 12_000
    pages = sorted(p.name for p in (ROOT / "benchmarks" / "results").glob("*.md"))
    assert pages, "no study pages"
    for page in pages:
        assert f"results/{page}" in index, f"RESULTS.md does not link {page}"
    for link in re.findall(r"\]\(([^)#]+\.md)", index):
        assert (ROOT / "benchmarks" / link).is_file(), link


def test_syre_memory_reports_bytes_per_storage_into_a_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/syre_memory.py on a tiny model: 4, 2, 2 and 0 bytes per covered value, the
    off arm's ratio 1, and the results in a new temporary directory when --out is not given."""
    import tempfile

    import syre_memory

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = ["--models", "test_vit", "--repeats", "2", "--steps", "1", "--warmup", "0"]
    result = syre_memory.main([*argv, "--threads", "1"])
    (folder,) = tmp_path.glob("syre_memory.*")
    assert json.loads((folder / "syre_memory.json").read_text())["optimizer_step"]
    model = result["optimizer_step"]["test_vit"]
    per_value = {
        arm: row["held_bytes"].get("cpu", 0) / model["covered_values"]
        for arm, row in model["arms"].items()
    }
    assert per_value == {"off": 4, "float32": 4, "bfloat16": 2, "float16": 2, "regenerate": 0}
    assert model["arms"]["off"]["ratio_vs_off"] == 1.0
    assert "| test_vit | 295,552 | regenerate | 0.0 |" in (folder / "syre_memory.md").read_text()
