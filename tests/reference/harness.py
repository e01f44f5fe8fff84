"""Our side of the reference-step tests: a method built in float64 and driven through its real
training step (on_train_batch_start, training_step, backward, on_after_backward, the optimizer
from configure_optimizers with SyRe's hook, under a closure as Lightning calls it) on fixed
views, and the comparison with a `tests.reference.plain.PaperMethod` step by step.

No Trainer: a stub holds what the step reads of one (global_step, current_epoch, the run's
length), so the views go in as given and augmentation is out of the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from ssl_syre.methods import SSLMethod
from tests.conftest import build_method
from tests.reference.plain import (
    DTYPE,
    PaperMethod,
    PlainAdamW,
    PlainLARS,
    PlainSGD,
    Record,
    copy_state,
    decayed,
)

STEPS = 3  # optimizer steps per comparison
BATCH = 8
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
# γ large enough that the decay (and where it pulls) moves the weights far beyond the tolerance
# within 3 steps: lr·γ·|w − θ0| ~ 1e-3 under SGD.
WEIGHT_DECAY = 0.05
# LARS: its trust ratio makes each layer's step η·lr·‖w‖ (η = 1e-3), so a larger lr.
LR = {"sgd": 0.1, "adamw": 1e-3, "lars": 5.0}
MOMENTUM = 0.9
# (optimizer, SyRe): the off arm (θ0 = 0, decay toward 0) and the anchored one, under SGD
# (coupled decay, the SyRe paper's loss form) and AdamW (decoupled).
ARMS = [("sgd", False), ("sgd", True), ("adamw", False), ("adamw", True)]
# LARS as well, for the methods whose papers train with it (Barlow Twins, VICReg).
LARS_ARMS = [("lars", False), ("lars", True)]
# lightly's LARS (and SyReLARS after it) neither scales nor decays a tensor whose gradient is
# exactly 0, which every residual branch of timm's ResNets has at the first step (their last BN
# starts at 0). The LARS arms start those BNs at 1 to compare the common case; the edge case
# has its own test (test_barlowtwins_step.py).
NONZERO_GRADIENTS = ("backbone.kwargs.zero_init_last=false",)


def optimizer_overrides(optimizer: str) -> tuple[str, ...]:
    """Overrides an arm needs besides the optimizer's name (see NONZERO_GRADIENTS)."""
    return NONZERO_GRADIENTS if optimizer == "lars" else ()


def build(method: str, optimizer: str, syre: bool, *overrides: str) -> SSLMethod:
    """`method` at the test's settings, in float64, seeded (its heads and anchors are drawn)."""
    torch.manual_seed(0)
    model, _ = build_method(
        method,
        "data.augment_on=workers",  # the batch's views are the step's views
        f"data.batch_size={BATCH}",
        f"optimizer.name={optimizer}",
        f"optimizer.lr={LR[optimizer]}",
        "optimizer.scale_lr=false",
        "optimizer.scheduler=constant",
        "optimizer.warmup_epochs=0",
        f"optimizer.momentum={MOMENTUM}",
        f"optimizer.weight_decay={WEIGHT_DECAY}",
        f"syre.enabled={str(syre).lower()}",
        *overrides,
    )
    return model.to(DTYPE)


def fixed_views(
    model: SSLMethod, count: int = 2, steps: int = STEPS, seed: int = 0, size: int | None = None
) -> list[list[Tensor]]:
    """`steps` lists of `count` float64 views (BATCH x C x size x size, the data set's image
    size by default), another batch each step."""
    generator = torch.Generator().manual_seed(seed)
    size, channels = size or model.info.image_size, model.info.in_chans
    return [
        [
            torch.randn(BATCH, channels, size, size, generator=generator, dtype=DTYPE)
            for _ in range(count)
        ]
        for _ in range(steps)
    ]


def start_equal(
    model: SSLMethod, reference: PaperMethod, parts: Mapping[str, str]
) -> dict[str, str]:
    """Copy our initial state into `reference`, part by part ({reference part: our attribute},
    e.g. {"online.backbone": "backbone", "target.backbone": "backbone_momentum"}), the
    anchors θ0 of the reference's decayed weights, and its optimizer.

    Returns:
        reference name -> our name, for every state entry of the copied parts.
    """
    reference.to(DTYPE)
    mapping: dict[str, str] = {}
    for ref_part, our_part in parts.items():
        inner = copy_state(getattr(model, our_part), reference.get_submodule(ref_part))
        mapping.update({f"{ref_part}.{r}": f"{our_part}.{o}" for r, o in inner.items()})
    anchors = model.syre.anchors
    reference.anchors = {
        f"online.{name}": anchors.get(mapping[f"online.{name}"], torch.zeros(p.shape)).to(DTYPE)
        for name, p in reference.online.named_parameters()
        if p.requires_grad and decayed(name, p)
    }
    opt = model.cfg.optimizer
    if opt.name == "sgd":
        reference.optimizer = PlainSGD(float(opt.lr), float(opt.momentum), WEIGHT_DECAY)
    elif opt.name == "lars":
        reference.optimizer = PlainLARS(float(opt.lr), float(opt.momentum), WEIGHT_DECAY)
    else:
        reference.optimizer = PlainAdamW(float(opt.lr), WEIGHT_DECAY)
    return mapping


def _trainer(epoch: int, total_steps: int) -> SimpleNamespace:
    """What SSLMethod's step reads of a Trainer, for one epoch of `total_steps` steps."""
    return SimpleNamespace(
        world_size=1,
        global_step=0,
        current_epoch=epoch,
        estimated_stepping_batches=total_steps,
        max_epochs=epoch + 1,
        max_steps=-1,
        num_training_batches=total_steps,
        accumulate_grad_batches=1,
        log_every_n_steps=50,
        optimizers=[],
    )


def is_momentum_copy(key: str) -> bool:
    return key.split(".")[0].endswith("_momentum")


def run_ours(
    model: SSLMethod,
    steps: Sequence[Sequence[Tensor]],
    epoch: int = 0,
    total_steps: int | None = None,
    observe: Callable[[SSLMethod], dict[str, Tensor]] = lambda model: {},
) -> list[Record]:
    """Our training step on each of `steps` (a list of views each), as Lightning runs it."""
    trainer = _trainer(epoch, total_steps or len(steps))
    model._trainer = trainer
    model.log = lambda *args, **kwargs: None  # logging needs a real Trainer; nothing is tested
    model.train()
    optimizer = model.configure_optimizers()
    trainer.optimizers = [optimizer]
    records = []
    for index, views in enumerate(steps):
        batch = (list(views), torch.zeros(BATCH, dtype=torch.long))
        seen: dict[str, object] = {}

        def closure(batch=batch, index=index, seen=seen) -> Tensor:
            loss = model.training_step(batch, index)
            optimizer.zero_grad()
            loss.backward()
            model.on_after_backward()
            seen["loss"] = loss.detach().clone()
            seen["grads"] = {
                n: p.grad.detach().clone()
                for n, p in model.named_parameters()
                if p.grad is not None
            }
            # The momentum copies as this step's loss used them (ours update them first thing).
            seen["targets"] = {
                k: v.detach().clone() for k, v in model.state_dict().items() if is_momentum_copy(k)
            }
            return loss

        model.on_train_batch_start(batch, index)
        optimizer.step(closure)
        trainer.global_step += 1
        state = {
            k: v.detach().clone() for k, v in model.state_dict().items() if not is_momentum_copy(k)
        }
        records.append(
            Record(seen["loss"], seen["grads"], {**state, **seen["targets"]}, observe(model))
        )
    return records


def run_reference(
    reference: PaperMethod, steps: Sequence[Sequence[Tensor]], epoch: int = 0
) -> list[Record]:
    return [reference.step([v.clone() for v in views], epoch) for views in steps]


def assert_same_steps(
    ours: Sequence[Record], reference: Sequence[Record], mapping: Mapping[str, str]
) -> None:
    """Loss, gradients, state after each step (momentum copies as the loss used them) and the
    observed method state, equal to TOLERANCE; every reference gradient has its twin in ours
    and no other parameter of ours got one."""
    assert len(ours) == len(reference)
    for step, (o, r) in enumerate(zip(ours, reference, strict=True)):
        where = f"step {step + 1}"
        torch.testing.assert_close(o.loss, r.loss, **TOLERANCE, msg=f"{where}: loss")
        assert set(o.grads) == {mapping[n] for n in r.grads}, f"{where}: different grads"
        for name, grad in r.grads.items():
            torch.testing.assert_close(
                o.grads[mapping[name]], grad, **TOLERANCE, msg=f"{where}: grad of {name}"
            )
        for name, value in r.state.items():
            torch.testing.assert_close(
                o.state[mapping[name]], value, **TOLERANCE, msg=f"{where}: {name}"
            )
        assert set(o.observed) == set(r.observed)
        for name, value in r.observed.items():
            torch.testing.assert_close(o.observed[name], value, **TOLERANCE, msg=f"{where}: {name}")


def compare(
    model: SSLMethod,
    reference: PaperMethod,
    parts: Mapping[str, str],
    views: Sequence[Sequence[Tensor]] | None = None,
    epoch: int = 0,
    total_steps: int | None = None,
    observe: Callable[[SSLMethod], dict[str, Tensor]] = lambda model: {},
) -> None:
    """Start `reference` equal to `model`, run both on the same views, assert the same steps."""
    mapping = start_equal(model, reference, parts)
    views = fixed_views(model) if views is None else views
    expected = run_reference(reference, views, epoch)
    ours = run_ours(model, views, epoch, total_steps, observe)
    assert_same_steps(ours, expected, mapping)


def backbone_copy(model: SSLMethod) -> nn.Module:
    """The timm network our method trains, as a fresh module of the same layout: the
    reference's encoder f (the method under test is everything around it)."""
    import copy

    return copy.deepcopy(model.backbone)


def assert_ema_schedule(
    records: Sequence[Record], parts: Sequence[str], tau: Callable[[int], float]
) -> None:
    """The target after update k (0-based) is τ(k)·ξ + (1 − τ(k))·θ of the target ξ that step
    k's loss used and the online weights θ after update k, over the parameters of `parts`
    (our attribute names; their momentum copies are `<part>_momentum`)."""
    for k in range(len(records) - 1):
        now, after = records[k], records[k + 1]
        for key, theta in now.state.items():
            part = key.split(".")[0]
            target = key.replace(part, f"{part}_momentum", 1)
            if part not in parts or target not in now.state or theta.dtype != DTYPE:
                continue
            if "running_" in key:  # BN statistics follow the target's own forward passes
                continue
            expected = tau(k) * now.state[target] + (1 - tau(k)) * theta
            torch.testing.assert_close(
                after.state[target], expected, **TOLERANCE, msg=f"EMA after update {k}: {target}"
            )
