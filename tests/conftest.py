"""Shared fixtures: tiny configs and a helper that runs train.py as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# A run of a few seconds on the 8x8 digits: the shape of a real run, none of its cost.
TINY = [
    "backbone.name=test_resnet",
    "data.name=digits",
    "data.batch_size=64",
    "data.num_workers=0",
    "method_kwargs.projection_hidden_dim=32",
    "method_kwargs.projection_output_dim=16",
    "eval.online_train_subset=300",
    "eval.online_test_subset=100",
    "eval.linear_epochs=5",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
]


def run_train(
    *args: str, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run `python train.py ARGS` in a subprocess, as a user types it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SSL_SYRE_RUN_DIR", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def git_status() -> set[str] | None:
    """`git status --porcelain` lines of the checkout (untracked files listed one by one), or
    None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return set(result.stdout.splitlines()) if result.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean() -> Iterator[None]:
    """Fail the session if its tests left new or changed files in the checkout: tests write
    under tmp_path, never into the tree (a results file there would pass for a measurement)."""
    before = git_status()
    yield
    if before is None:
        return
    after = git_status()
    left = sorted((after or set()) - before)
    if left:
        pytest.fail(
            "the tests left files in the checkout (write them under tmp_path):\n  "
            + "\n  ".join(left),
            pytrace=False,
        )


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    """TINY overrides with an output_dir inside tmp_path."""
    return [*TINY, f"output_dir={tmp_path / 'runs'}"]


# ViT-only methods (`SSLMethod.needs_vit`) build on timm's tiny ViT instead: by default 32 px cut
# into 8-px patches, a 4 x 4 grid to mask; MAE on 16-px digits with 4-px patches and a one-block
# decoder.
VIT_TINY = ["backbone.name=test_vit", "data.image_size=32", "backbone.kwargs.patch_size=8"]
VIT_TINY_OF = {
    "mae": [
        "backbone.name=test_vit",
        "backbone.kwargs.patch_size=4",
        "method_kwargs.decoder_dim=32",
        "method_kwargs.decoder_depth=1",
        "method_kwargs.decoder_num_heads=2",
    ],
}


def vit_overrides(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """The tiny ViT build when the method the overrides name needs a ViT and they name no
    backbone."""
    from ssl_syre.methods import METHODS

    methods = [o.removeprefix("method=") for o in overrides if o.startswith("method=")]
    named = any(o.startswith("backbone.name=") for o in overrides)
    method = METHODS.get(methods[-1]) if methods else None
    if method is None or not method.needs_vit or named:
        return []
    return list(VIT_TINY_OF.get(method.name, VIT_TINY))


def train_in_process(output_dir: Path, *overrides: str) -> Path:
    """Run the training job of train.py in this process (no second interpreter to start)."""
    from ssl_syre.config import load_config
    from ssl_syre.training.pipeline import train

    base = [*TINY, *vit_overrides(overrides), f"output_dir={output_dir}", "run_name=run"]
    return train(load_config(None, [*base, *overrides]))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: thread hand-offs would cost more than the math on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A method's model on the 8x8 digits with tiny heads: no training, just the module.
METHOD_TINY = [
    "backbone.name=test_resnet",
    "data.name=digits",
    "method_kwargs.projection_hidden_dim=32",
    "method_kwargs.projection_output_dim=16",
]


def build_method(method: str, *extra: str):
    """Build `method` from METHOD_TINY plus `extra` overrides; return (model, cfg)."""
    from ssl_syre.config import load_config
    from ssl_syre.data import data_info
    from ssl_syre.methods import METHODS

    tiny = [*METHOD_TINY, *vit_overrides([f"method={method}", *extra])]
    cfg = load_config(None, [f"method={method}", *tiny, *extra])
    return METHODS[method](cfg, data_info(cfg.data)), cfg


def losses_on_fixed_views(
    model, views, steps: int, optimizer=None, lr: float = 0.01
) -> list[float]:
    """The training loss at each of `steps` updates on the same views (SGD momentum 0.9 over
    the method's trainable parts unless `optimizer` is given): the methods' loss-falls tests."""
    if optimizer is None:
        params = [p for m in model.trainable_parts().values() for p in m.parameters()]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.training_loss(views)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def check_prototype_koleo_knob(build, views, prototype: str) -> None:
    """`method_kwargs.prototype_koleo_weight` of the method `build(*overrides)` builds: at 0 the
    loss and gradients of a model built without the key, bit for bit, nothing logged; at 0.5
    that loss plus exactly 0.5 x the model's prototype_koleo(), logged, and its gradient on the
    `prototype` parameter. Every model starts from the same weights and sees `views`."""
    state = {k: v.clone() for k, v in build().state_dict().items()}

    def step(*overrides: str):
        model = build(*overrides)
        model.load_state_dict(state)
        logged: dict[str, torch.Tensor] = {}
        model.log = lambda name, value, **_: logged.__setitem__(name, value)
        loss = model.training_loss(views)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return model, loss.detach(), grads, logged

    _, base, base_grads, _ = step()
    _, zero, zero_grads, zero_logged = step("method_kwargs.prototype_koleo_weight=0")
    assert torch.equal(zero, base) and zero_grads.keys() == base_grads.keys()
    assert all(torch.equal(zero_grads[n], base_grads[n]) for n in base_grads)
    assert "train/prototype_koleo_loss" not in zero_logged

    # The KoLeo term of the weights the step saw (SwAV renormalises its prototypes in place).
    on, loss, grads, logged = step("method_kwargs.prototype_koleo_weight=0.5")
    koleo = on.prototype_koleo()
    (koleo_grad,) = torch.autograd.grad(koleo, dict(on.named_parameters())[prototype])
    assert torch.equal(loss, base + 0.5 * koleo.detach())
    assert torch.equal(logged["train/prototype_koleo_loss"], koleo.detach())
    assert koleo_grad.abs().max() > 0
    torch.testing.assert_close(grads[prototype] - base_grads[prototype], 0.5 * koleo_grad)
