"""Which parameters SyRe covers, and optimizer param groups that decay each one exactly once."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from torch import Tensor, nn

NamedParameters = Iterable[tuple[str, nn.Parameter]]


class Covering(Protocol):
    """What `syre_param_groups` needs of a SyRe: the parameters it decays itself."""

    def covered_parameters(self) -> Iterator[nn.Parameter]: ...


def no_weight_decay_patterns(module: nn.Module) -> list[str]:
    """Collect the `no_weight_decay()` names of `module` and of all its sub-modules.

    timm only asks the top-level model; SSL wrappers hold the timm backbone as a sub-module
    (e.g. `backbone.pos_embed`), so each sub-module's names are prefixed with its path.
    """
    patterns: list[str] = []
    for prefix, submodule in module.named_modules():
        no_weight_decay = getattr(submodule, "no_weight_decay", None)
        if not callable(no_weight_decay):
            continue
        for name in no_weight_decay():
            patterns.append(f"{prefix}.{name}" if prefix else name)
    return patterns


def is_decayed(name: str, param: Tensor, patterns: Iterable[str], include_1d: bool) -> bool:
    """The weight-decay convention of `timm.optim.param_groups_weight_decay`.

    Biases and 1-D tensors (norm weights) and `no_weight_decay()` names get no decay, because
    decaying them only shrinks scales the next layer or norm undoes.
    """
    if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
        return False
    return include_1d or not (param.ndim <= 1 or name.endswith(".bias"))


def select_covered(
    module: nn.Module, parameters: NamedParameters | None, include_1d: bool
) -> dict[str, nn.Parameter]:
    """The parameters SyRe covers, by name, in the order they are found.

    Args:
        module: Its `named_parameters()` are the candidates, its `no_weight_decay()` names
            (and its sub-modules') are left out.
        parameters: Optional (name, parameter) pairs to consider instead.
        include_1d: Also cover biases and other 1-D tensors.

    Raises:
        ValueError: For a name given twice in `parameters`.
    """
    patterns = no_weight_decay_patterns(module)
    candidates = list(module.named_parameters() if parameters is None else parameters)
    covered: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, param in candidates:
        if name in covered:
            raise ValueError(f"SyRe got the parameter name '{name}' twice in parameters=")
        # Shared parameters appear once, as in module.named_parameters().
        if id(param) in seen or not param.requires_grad:
            continue
        if not is_decayed(name, param, patterns, include_1d):
            continue
        seen.add(id(param))
        covered[name] = param
    return covered


def syre_param_groups(
    named_parameters: nn.Module | NamedParameters,
    syre: Covering | None,
    weight_decay: float,
    parameters: NamedParameters | None = None,
    decay_norm_and_bias: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer param groups that give each parameter exactly one kind of decay.

    - "syre": the parameters `syre` covers, with weight_decay=0 (SyRe decays them toward θ0);
    - "decay": other trainable ≥2-D weights, with plain `weight_decay` toward 0, and with
      `decay_norm_and_bias` also the biases and 1-D tensors SyRe does not cover;
    - "no_decay": biases, 1-D tensors (unless `decay_norm_and_bias`) and `no_weight_decay()`
      names, with 0.

    `decay_norm_and_bias` is a property of the recipe, not of SyRe (lightly's CIFAR-10 script
    decays every parameter): it moves the same tensors to plain decay toward 0 whatever the
    anchors are, so a SyRe run and its σ0 = 0 control still differ only in the anchors of the
    covered weights.

    With `syre=None` this is timm's `param_groups_weight_decay` (decay / no_decay). Empty
    groups are left out; frozen parameters are left out. The groups carry a "name" key, which
    torch optimizers keep and Lightning's LearningRateMonitor uses.

    Args:
        named_parameters: A module (its `no_weight_decay()` names, and its sub-modules', are
            honored) or (name, parameter) pairs.
        syre: The SyRe whose covered parameters go to the "syre" group, or None.
        weight_decay: Plain weight decay for the "decay" group.
        parameters: With a module: the (name, parameter) pairs to group instead of all of
            its parameters, names as in `module.named_parameters()`; the module's
            `no_weight_decay()` names still apply to them (as in `SyRe(parameters=...)`).
        decay_norm_and_bias: Also give biases and 1-D tensors (norm weights) the plain
            decay; `no_weight_decay()` names stay undecayed.

    Returns:
        A list of param-group dicts for a torch optimizer.
    """
    if isinstance(named_parameters, nn.Module):
        patterns = no_weight_decay_patterns(named_parameters)
        pairs = list(named_parameters.named_parameters() if parameters is None else parameters)
    else:
        # Bare pairs carry no no_weight_decay() names: pass the module to keep them.
        patterns, pairs = [], list(named_parameters)
    covered = set() if syre is None else {id(p) for p in syre.covered_parameters()}
    groups: dict[str, list[nn.Parameter]] = {"syre": [], "decay": [], "no_decay": []}
    seen: set[int] = set()
    for name, param in pairs:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if id(param) in covered:
            groups["syre"].append(param)
        elif is_decayed(name, param, patterns, include_1d=decay_norm_and_bias):
            groups["decay"].append(param)
        else:
            groups["no_decay"].append(param)
    decay = {"syre": 0.0, "decay": float(weight_decay), "no_decay": 0.0}
    return [
        {"params": params, "weight_decay": decay[name], "name": name}
        for name, params in groups.items()
        if params
    ]
