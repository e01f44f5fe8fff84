"""Publishing on the Hugging Face Hub: the folder timm's push_to_hf_hub would upload rebuilds
the backbone with timm alone, and offline (as in CI) a push is one line and keeps the export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from safetensors.torch import load_file

from ssl_syre.config import load_config
from ssl_syre.errors import UserError, run_cli
from ssl_syre.export import export_backbone, load_backbone
from ssl_syre.export.__main__ import main
from ssl_syre.export.hub import check_hub_ready, check_repo_id, export_and_push, push_export
from tests.conftest import build_method


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    model, _ = build_method("simclr")
    return export_backbone(model, tmp_path / "run" / "export", extra={"knn": []})


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """HfApi as timm's push_to_hf_hub uses it, recording what it would upload (no network)."""
    sent: dict = {"folder": tmp_path / "uploaded"}

    class FakeApi:
        def __init__(self, **kwargs) -> None:
            sent["api"] = kwargs

        def create_repo(self, repo_id: str, private: bool, exist_ok: bool):
            sent.update(repo_id=repo_id, private=private)
            return SimpleNamespace(repo_id=repo_id)

        def file_exists(self, repo_id: str, filename: str, revision=None) -> bool:
            return False

        def upload_folder(self, repo_id: str, folder_path: str, **kwargs) -> str:
            shutil.copytree(folder_path, sent["folder"])
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(timm.models._hub, "HfApi", FakeApi)
    return sent


def test_the_upload_is_the_export_and_timm_rebuilds_it(export_dir: Path, fake_hub: dict) -> None:
    url = push_export(export_dir, "someone/tiny-simclr", private=True)
    assert url.startswith("https://huggingface.co/someone/tiny-simclr")
    assert fake_hub["repo_id"] == "someone/tiny-simclr" and fake_hub["private"] is True
    folder = fake_hub["folder"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]  # safetensors only: no pickled pytorch_model.bin
    uploaded = json.loads((folder / "config.json").read_text())
    assert uploaded == json.loads((export_dir / "config.json").read_text())
    channels, height, width = uploaded["pretrained_cfg"]["input_size"]
    assert channels == 1 and "mean" in uploaded["pretrained_cfg"]
    assert uploaded["ssl_syre"]["method"] == "simclr"
    # What timm.create_model("hf-hub:someone/tiny-simclr", pretrained=True) does, from the folder:
    rebuilt = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    reference = load_backbone(export_dir)
    assert rebuilt.pretrained_cfg["mean"] == reference.pretrained_cfg["mean"]
    weights = load_file(str(folder / "model.safetensors"))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(weights[name], tensor), name
    images = torch.rand(2, channels, height, width)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), reference(images))
    assert "hf-hub:someone/tiny-simclr" in (folder / "README.md").read_text()


def test_offline_push_is_one_line_and_keeps_the_export(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without internet, but at once
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    before = {p.name: p.read_bytes() for p in export_dir.iterdir()}
    with pytest.raises(SystemExit) as exit_code:
        run_cli(main, [str(export_dir.parent), "--push-to-hub", "someone/tiny"])
    assert exit_code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot push")
    assert "the local export is kept" in lines[0] and "--push-to-hub someone/tiny" in lines[0]
    assert {p.name: p.read_bytes() for p in export_dir.iterdir()} == before


def test_no_token_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored token
    with pytest.raises(UserError, match="needs a Hugging Face token; log in with `hf auth login`"):
        check_hub_ready("someone/tiny")


def test_a_run_without_export_is_exported_then_pushed(
    tmp_path: Path, fake_hub: dict, capsys: pytest.CaptureFixture
) -> None:
    model, _ = build_method("simclr")
    run = tmp_path / "run"
    export_backbone(model, run / "export")
    export_and_push(run, None, "someone/tiny", private=False)
    assert (fake_hub["folder"] / "config.json").is_file()
    assert "timm.create_model('hf-hub:someone/tiny', pretrained=True)" in capsys.readouterr().out


@pytest.mark.parametrize("repo", ["tiny", "a/b/c", "/name", "user/na me", ""])
def test_bad_repository_ids(repo: str) -> None:
    with pytest.raises(UserError, match="is not a Hub repository id; give USER/NAME"):
        check_repo_id(repo, "--push-to-hub")


def test_config_checks_of_push_to_hub() -> None:
    assert load_config(None, ["export.push_to_hub=me/model"]).export.push_to_hub == "me/model"
    with pytest.raises(UserError, match=r"this stem \(backbone.small_image_stem=true\)"):
        load_config(None, ["export.push_to_hub=me/model", "backbone.small_image_stem=true"])
    with pytest.raises(UserError, match=r"this stem \(backbone.stem_max_pool=false\)"):
        load_config(None, ["export.push_to_hub=me/model", "backbone.stem_max_pool=false"])
    # A ViT has no stem max-pool to drop: the quick start's stem setting does not stop its push.
    vit = ["backbone.name=test_vit", "data.image_size=32", "backbone.stem_max_pool=false"]
    assert load_config(None, ["export.push_to_hub=me/model", *vit]).backbone.stem_max_pool is False
    with pytest.raises(UserError, match="needs export.enabled=true"):
        load_config(None, ["export.push_to_hub=me/model", "export.enabled=false"])
    with pytest.raises(UserError, match="export.push_to_hub='nope' is not a Hub repository id"):
        load_config(None, ["export.push_to_hub=nope"])


@pytest.mark.parametrize("stem", ["small_image_stem=true", "stem_max_pool=false"])
def test_stems_timm_cannot_build_are_not_pushed(tmp_path: Path, fake_hub: dict, stem: str) -> None:
    model, _ = build_method("simclr", f"backbone.{stem}")
    export = export_backbone(model, tmp_path / "export")
    with pytest.raises(UserError, match="timm alone cannot build"):
        push_export(export, "someone/tiny")
    assert not fake_hub["folder"].exists()


def test_train_with_push_to_hub_refuses_offline_before_the_run_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.conftest import train_in_process

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub or it refuses"):
        train_in_process(tmp_path / "runs", "export.push_to_hub=someone/tiny")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_push_that_fails_after_training_keeps_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ssl_syre.training import pipeline
    from tests.conftest import train_in_process

    monkeypatch.setattr(pipeline, "check_hub_ready", lambda repo: None)  # the network goes away
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="the local export is kept"):
        train_in_process(tmp_path, "export.push_to_hub=someone/tiny", "eval.linear_probe=false")
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and (run / "export" / "model.safetensors").is_file()
    assert load_backbone(run / "export") is not None
