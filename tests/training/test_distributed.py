"""DDP on CPU (gloo): a 2-process run works, agrees on anchors, and computes the same loss."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_syre.config import load_config
from ssl_syre.data import data_info
from ssl_syre.methods import METHODS
from tests.conftest import ROOT, run_train

# No BatchNorm anywhere (test_vit + heads without BN): per-process batch statistics would
# otherwise make a 2-process loss differ from a 1-process one for reasons other than the loss.
NO_BN = {
    "simclr": ["method_kwargs.projection_batch_norm=false"],
}
GLOBAL_BATCH = 16


def build(method: str, gather: bool = True):
    overrides = [
        f"method={method}",
        "backbone.name=test_vit",
        "data.name=digits",
        "method_kwargs.projection_hidden_dim=32",
        "method_kwargs.projection_output_dim=16",
        *NO_BN.get(method, []),
    ]
    if method == "simclr":
        overrides.append(f"method_kwargs.gather_distributed={str(gather).lower()}")
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    return METHODS[method](cfg, data_info(cfg.data))


def fixed_views() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(GLOBAL_BATCH, 1, 16, 16, generator=generator) for _ in range(2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, method: str, gather: bool, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build(method, gather)
        model.eval()  # no dropout; there is no BN to freeze
        local = GLOBAL_BATCH // world
        views = [v[rank * local : (rank + 1) * local] for v in fixed_views()]
        loss = model.training_loss(views).detach()
        dist.all_reduce(loss)  # DDP averages gradients, so the run's loss is the rank mean
        if rank == 0:
            torch.save(loss / world, out)
    finally:
        dist.destroy_process_group()


def _augment_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build("simclr")
        images = torch.randint(
            0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        views = model.views((images, None), batch_idx=0)  # the same images on every rank
        gathered = [torch.zeros_like(views[0]) for _ in range(world)]
        dist.all_gather(gathered, views[0])
        if rank == 0:
            torch.save(torch.stack(gathered), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_draw_different_augmentations(tmp_path: Path) -> None:
    """Device path: the same images at the same step get other views on each rank (the seed
    includes the rank), so a global batch never holds the same view twice."""
    out = str(tmp_path / "views.pt")
    mp.spawn(_augment_worker, args=(2, free_port(), out), nprocs=2, join=True)
    views = torch.load(out, weights_only=True)
    assert not torch.allclose(views[0], views[1])
    single = build("simclr").views(
        (
            torch.randint(
                0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
            ),
            None,
        ),
        0,
    )
    assert torch.equal(views[0], single[0])  # rank 0 draws what a single process draws


def two_process_loss(method: str, gather: bool, tmp_path: Path) -> float:
    out = str(tmp_path / f"{method}_{gather}.pt")
    mp.spawn(_worker, args=(2, free_port(), method, gather, out), nprocs=2, join=True)
    return float(torch.load(out, weights_only=True))


def _queue_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build("mocov2")
        local = GLOBAL_BATCH // world
        model.training_loss([v[rank * local : (rank + 1) * local] for v in fixed_views()])
        torch.save(model.criterion.memory_bank.bank.clone(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_mocov2_queue_takes_the_keys_of_every_process(tmp_path: Path) -> None:
    """Each process's queue receives the keys of both processes (the MoCo code's
    concat_all_gather), the same queue on every rank."""
    out = str(tmp_path / "queue.pt")
    mp.spawn(_queue_worker, args=(2, free_port(), out), nprocs=2, join=True)
    queues = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    model = build("mocov2")
    model.update_momentum_copies()  # the step's EMA update, as each worker made it
    with torch.no_grad():
        k0, k1 = (torch.nn.functional.normalize(model.keys(v), dim=1) for v in fixed_views())
    half = GLOBAL_BATCH // 2
    expected = torch.cat([k1[:half], k0[:half], k1[half:], k0[half:]])
    for queue in queues:
        torch.testing.assert_close(queue[: 2 * GLOBAL_BATCH], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["simclr", "byol", "simsiam", "mocov2", "swav", "nnclr", "dcl", "mocov3"]
)
def test_first_step_loss_equals_one_process_with_same_global_batch(
    method: str, tmp_path: Path
) -> None:
    model = build(method)
    model.eval()
    single = float(model.training_loss(fixed_views()))
    assert two_process_loss(method, True, tmp_path) == pytest.approx(single, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_simclr_without_gathering_sees_fewer_negatives(tmp_path: Path) -> None:
    """The check above can fail: local-only negatives give another loss (lightly #1458)."""
    model = build("simclr")
    model.eval()
    single = float(model.training_loss(fixed_views()))
    assert abs(two_process_loss("simclr", False, tmp_path) - single) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["float32", "regenerate"])
def test_two_process_ddp_run(tiny: list[str], tmp_path: Path, storage: str) -> None:
    result = run_train(
        *tiny,
        f"syre.anchor_storage={storage}",
        "data.batch_size=32",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "run_name=ddp",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [d for d in (tmp_path / "runs").iterdir()]
    assert [d.name for d in runs] == ["ddp"], "one run directory for all processes"
    metrics = json.loads((tmp_path / "runs/ddp/metrics.json").read_text())
    run = metrics["run"]
    assert run["world_size"] == 2
    assert run["global_batch_size"] == 64
    quick_lr = load_config(str(ROOT / "configs" / "default.yaml")).optimizer.lr  # x batch/128
    assert run["learning_rate"] == pytest.approx(quick_lr * 64 / 128)
    fingerprints = run["syre_anchor_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert metrics["knn"], "rank 0 evaluated"


@pytest.mark.parametrize("storage", ["float32", "bfloat16", "regenerate"])
def test_anchor_fingerprint_tells_seeds_apart(storage: str) -> None:
    from ssl_syre.syre.anchors import fingerprint
    from ssl_syre.training.distributed import anchor_fingerprint

    def method(*extra: str):
        overrides = ["backbone.name=test_vit", "data.name=digits", "syre.d_eps=0.1", *extra]
        cfg = load_config(None, [*overrides, f"syre.anchor_storage={storage}"])
        return METHODS["simclr"](cfg, data_info(cfg.data))

    a, b = method(), method()
    assert anchor_fingerprint(a.syre) == anchor_fingerprint(b.syre)
    # The hash of the anchors the update uses, whatever keeps them.
    assert anchor_fingerprint(a.syre) == fingerprint(a.syre.anchors, a.syre.d_diagonal)
    assert anchor_fingerprint(method("syre.seed=5").syre) != anchor_fingerprint(a.syre)
    assert anchor_fingerprint(method("syre.d_eps=0.2").syre) != anchor_fingerprint(a.syre)
