"""Bad checkpoints and exports are refused in one line by every command that reads them:
resume, eval/knn.py, python -m ssl_syre.export and python -m ssl_syre.diagnose (issue 33,
items 1, 9-13)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import ssl_syre.export.__main__ as export_cli
from ssl_syre import diagnose
from ssl_syre.errors import UserError, run_cli
from ssl_syre.evaluation.cli import main_knn
from ssl_syre.export import load_backbone
from ssl_syre.training.checkpoint import load_checkpoint
from ssl_syre.training.pipeline import main
from ssl_syre.training.run_dir import RUN_DIR_ENV
from tests.test_reliability import FAST, one_error_line

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch run with its export; tests work on copies."""
    runs = tmp_path_factory.mktemp("finished")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.pop(RUN_DIR_ENV, None)
    try:
        run_cli(main, [*FAST, "export=true", f"output_dir={runs}", "run_name=done"])
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        torch.set_num_threads(threads)
    return runs / "done"


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "done"
    shutil.copytree(finished, copy)
    return copy


def command(capsys: pytest.CaptureFixture[str], entry: Callable, *argv: str) -> tuple[int, str]:
    os.environ.pop(RUN_DIR_ENV, None)
    capsys.readouterr()
    try:
        run_cli(entry, list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    return code, capsys.readouterr().err


def every_reader(run: Path) -> dict[str, tuple[Callable, list[str]]]:
    """The four commands that read a run's last.ckpt, each with its arguments."""
    return {
        "resume": (
            main,
            [
                *FAST,
                "export=true",
                "trainer.max_epochs=2",
                f"output_dir={run.parent}",
                f"resume={run}",
            ],
        ),
        "eval": (main_knn, [str(run)]),
        "export": (export_cli.main, [str(run), "--out", str(run.parent / "new_export")]),
        "diagnose": (diagnose.main, [str(run), "--samples", "0", "--png", "none"]),
    }


MALFORMED: dict[str, Callable[[dict[str, Any]], None]] = {
    "hyper_parameters=3": lambda c: c.update(hyper_parameters=3),
    "cfg=[1,2]": lambda c: c["hyper_parameters"].update(cfg=[1, 2]),
    "cfg.data=5": lambda c: c["hyper_parameters"]["cfg"].update(data=5),
    "info='x'": lambda c: c["hyper_parameters"].update(info="x"),
    "info={'bogus': 1}": lambda c: c["hyper_parameters"].update(info={"bogus": 1}),
    "state_dict=[1]": lambda c: c.update(state_dict=[1]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_checkpoint_of_the_wrong_structure_is_one_line_everywhere(
    case: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 9: such files load with weights_only and then crashed eval and resume."""
    last = run / "checkpoints/last.ckpt"
    state = torch.load(last, weights_only=True)
    MALFORMED[case](state)
    torch.save(state, last)
    for name, (entry, argv) in every_reader(run).items():
        line = one_error_line(*command(capsys, entry, *argv), "cannot load checkpoint")
        assert "not written by" in line, (name, line)


@pytest.mark.slow
def test_an_export_with_nan_weights_is_refused_by_knn_and_diagnose(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items 10-11: diagnose crashed in linalg.svd; kNN reported 13% top-1."""
    weights = run / "export/model.safetensors"
    tensors = load_file(str(weights))
    name = next(key for key, tensor in tensors.items() if tensor.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights))
    for entry, argv in (
        (main_knn, [str(run / "export")]),
        (diagnose.main, [str(run / "export"), "--samples", "0", "--png", "none"]),
    ):
        line = one_error_line(*command(capsys, entry, *argv), "NaN or inf")
        assert f"'{name}'" in line


@pytest.mark.slow
def test_an_export_with_integer_weights_is_refused_naming_the_tensor(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 11: load_state_dict cast them silently (diagnose: '1040 dead')."""
    weights = run / "export/model.safetensors"
    tensors = load_file(str(weights))
    name = next(key for key, tensor in tensors.items() if tensor.is_floating_point())
    tensors[name] = (tensors[name] * 100).to(torch.int32)
    save_file(tensors, str(weights))
    for entry, argv in (
        (main_knn, [str(run / "export")]),
        (diagnose.main, [str(run / "export"), "--samples", "0", "--png", "none"]),
    ):
        line = one_error_line(*command(capsys, entry, *argv), "not as floating-point weights")
        assert f"'{name}'" in line and "int32" in line


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["hf-hub:timm/resnet18.a1_in1k", "local-dir:/elsewhere"])
def test_a_local_export_naming_a_remote_or_other_folder_is_refused(
    architecture: str, run: Path, monkeypatch: Any
) -> None:
    """Item 12: a local load would have reached for the Hub (or another folder)."""
    import json

    config_path = run / "export/config.json"
    config = json.loads(config_path.read_text())
    config["architecture"] = architecture
    config_path.write_text(json.dumps(config))
    built: list[str] = []
    real = timm.create_model

    def create_model(name: str, *args: Any, **kwargs: Any) -> Any:
        built.append(name)
        if ":" in name:
            raise AssertionError(f"timm asked to fetch {name}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    with pytest.raises(UserError, match="not a timm model name") as refused:
        load_backbone(run / "export")
    assert architecture in str(refused.value) and built == []


@pytest.mark.slow
def test_the_export_command_replaces_a_broken_export_and_keeps_a_good_one(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 1: a truncated model.safetensors could not be repaired by `ssl_syre.export`."""
    weights = run / "export/model.safetensors"
    code, stderr = command(capsys, export_cli.main, str(run))
    one_error_line(code, stderr, "already holds an export that loads")
    weights.write_bytes(weights.read_bytes()[:1000])
    code, stderr = command(capsys, export_cli.main, str(run))
    assert code == 0, stderr[-3000:]
    assert "replacing the broken export" in stderr
    state = load_checkpoint(run / "checkpoints/last.ckpt")["state_dict"]
    for name, tensor in load_backbone(run / "export").state_dict().items():
        assert torch.equal(tensor, state[f"backbone.{name}"]), name
    assert sorted(p.name for p in run.glob(".*staging*")) == []


@pytest.mark.slow
def test_weights_that_do_not_fit_name_the_first_missing_key(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 13: 'Error(s) in loading state_dict for SimCLR:' and nothing more."""
    last = run / "checkpoints/last.ckpt"
    state = torch.load(last, weights_only=True)
    name = next(key for key in state["state_dict"] if key.startswith("backbone."))
    del state["state_dict"][name]
    torch.save(state, last)
    line = one_error_line(*command(capsys, main_knn, str(run)), "do not fit")
    assert f"missing key '{name}'" in line


@pytest.mark.parametrize("kind", ["empty", "legacy pickle"])
def test_an_empty_or_legacy_checkpoint_says_what_it_is(kind: str, tmp_path: Path) -> None:
    """Item 13: both were described with torch's mmap text."""
    path = tmp_path / "last.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"state_dict": {}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError) as refused:
        load_checkpoint(path, mmap=True)  # as a resume reads it
    message = str(refused.value)
    assert "mmap" not in message and "\n" not in message
    assert ("empty (0 bytes)" if kind == "empty" else "legacy") in message


def test_an_unreadable_evaluation_override_names_its_key(
    finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 8 at evaluation: eval/knn.py's overrides are YAML values too."""
    code, stderr = command(capsys, main_knn, str(finished), "eval.knn_k=[1,")
    one_error_line(code, stderr, "cannot read the value of 'eval.knn_k'")


def test_diagnose_names_its_own_flag_for_an_unwritable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 13: the message advised --out, which diagnose does not have."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, stderr = command(
        capsys, diagnose.main, str(tmp_path), "--json", str(blocker / "report.json")
    )
    line = one_error_line(code, stderr, "cannot write")
    assert "--json FILE" in line and "--out" not in line
