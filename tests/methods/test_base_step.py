"""ssl_syre.methods.base: a training step reads nothing back from the device outside logging
steps (each read is a host sync that empties the GPU's queue)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from ssl_syre.methods import SSLMethod
from tests.conftest import train_in_process

# The Tensor methods that read a value back to the host.
READS = ("item", "__bool__", "__float__", "__int__", "tolist")


@pytest.mark.slow
def test_training_steps_read_nothing_back_outside_logging_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    reads: dict[int, Counter[str]] = {}
    step: list[int | None] = [None]

    def counting(name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if step[0] is not None:
                reads.setdefault(step[0], Counter())[name] += 1
            return original(self, *args, **kwargs)

        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))

    def on_train_batch_start(self: SSLMethod, batch: Any, batch_idx: int) -> None:
        step[0] = self.global_step  # counts until the next batch starts: logging included

    def on_train_end(self: SSLMethod) -> None:
        step[0] = None

    monkeypatch.setattr(SSLMethod, "on_train_batch_start", on_train_batch_start, raising=False)
    monkeypatch.setattr(SSLMethod, "on_train_end", on_train_end, raising=False)
    train_in_process(
        tmp_path,
        "trainer.limit_train_batches=8",
        "trainer.log_every_n_steps=3",
        "trainer.enable_progress_bar=true",
        "eval.online_every_n_epochs=0",
        "eval.linear_probe=false",
        "eval.knn_k=[5]",
        "export=false",
    )
    logging = {2, 5, 7}  # every 3rd step (Lightning counts from 1) and the epoch's last
    quiet = {s: dict(reads.get(s, {})) for s in range(8) if s not in logging}
    assert quiet == {s: {} for s in quiet}
    # The counting sees the reads that remain: the finite check and the logger's.
    assert all(sum(reads[s].values()) >= 1 for s in logging), reads


@pytest.mark.slow
def test_a_nan_between_logging_steps_stops_the_epoch_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """No logging step in the run: epoch 1's first loss is NaN; the check at the epoch's last
    step names that step, and last.ckpt stays epoch 0's."""
    from ssl_syre.methods.base import NonFiniteLossError
    from ssl_syre.methods.simclr import SimCLR
    from ssl_syre.training.checkpoint import load_checkpoint

    original = SimCLR.training_loss

    def training_loss(self: SimCLR, views: Any) -> torch.Tensor:
        loss = original(self, views)
        return loss * float("nan") if self.global_step == 4 else loss

    monkeypatch.setattr(SimCLR, "training_loss", training_loss)
    with pytest.raises(NonFiniteLossError, match="became nan at step 4 .epoch 1."):
        train_in_process(
            tmp_path,
            "trainer.limit_train_batches=4",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=100",
            "eval.online_every_n_epochs=0",
            "export=false",
        )
    assert load_checkpoint(tmp_path / "run/checkpoints/last.ckpt")["epoch"] == 0


def _steps(model: SSLMethod, steps: int = 3) -> dict[str, torch.Tensor]:
    """`steps` SGD+SyRe updates of `model` on fixed views, through configure_optimizers."""
    from unittest import mock

    trainer = mock.MagicMock(
        world_size=1,
        estimated_stepping_batches=10,
        max_epochs=1,
        num_training_batches=10,
        accumulate_grad_batches=1,
    )
    model._trainer = trainer
    optimizer = model.configure_optimizers()["optimizer"]
    generator = torch.Generator().manual_seed(0)
    size = model.info.image_size
    views = [torch.randn(8, 1, size, size, generator=generator) for _ in range(2)]
    for _ in range(steps):
        optimizer.zero_grad()
        model.training_loss(views).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("implementation", ["for_loop", "foreach", "fused"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_implementations_give_the_reference_update(
    implementation: str, optimizer: str, one_thread: None
) -> None:
    from tests.conftest import build_method

    # One step for fused: later gradients see its rounding, which Adam's first, sign-like
    # steps amplify where a gradient is near 0.
    steps = 1 if implementation == "fused" else 3
    torch.manual_seed(0)
    reference = _steps(build_method("simclr", f"optimizer.name={optimizer}")[0], steps)
    torch.manual_seed(0)
    model, _ = build_method(
        "simclr", f"optimizer.name={optimizer}", f"optimizer.implementation={implementation}"
    )
    ours = _steps(model, steps)
    for name, value in reference.items():
        if implementation == "fused":  # another rounding order inside the fused kernel:
            # within 1% of one step's size (lr under AdamW's normalisation)
            torch.testing.assert_close(ours[name], value, rtol=0, atol=0.01 * model.learning_rate())
        else:
            assert torch.equal(ours[name], value), name


@pytest.mark.slow  # inductor compiles for ~30 s on a CPU
def test_compiled_backbone_keeps_its_keys_and_the_eager_numbers(one_thread: None) -> None:
    from tests.conftest import build_method

    torch.manual_seed(0)
    eager, _ = build_method("simclr")
    torch.manual_seed(0)
    compiled, _ = build_method("simclr", "backbone.compile=true")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())
    size = eager.info.image_size
    views = [
        torch.randn(8, 1, size, size, generator=torch.Generator().manual_seed(i)) for i in (0, 1)
    ]
    torch.testing.assert_close(
        compiled.training_loss(views), eager.training_loss(views), rtol=1e-5, atol=1e-5
    )
