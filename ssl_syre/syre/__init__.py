"""SyRe: weight decay toward fixed random anchors, applied through optimizer step hooks.

Implements syre from Liu Ziyin, Yizhou Xu, Isaac Chuang, "Remove Symmetries to Control Model
Expressivity and Improve Optimization", ICLR 2025, https://arxiv.org/abs/2408.15495:

    "We then propose a simple and theoretically justified algorithm, syre, to remove almost all
    symmetry-induced low-capacity states in neural networks."

The paper trains ℓ(θ + θ0) + γ/2·θᵀDθ with θ0 a random bias drawn once and never trained, and D
the identity or a random positive diagonal ("advanced removal", for rotation symmetries). In the
effective weights w = θ + θ0 this is weight decay toward θ0 instead of toward 0, so the model
keeps its usual parameters (nothing changes in the forward pass or in the exported weights) and
SyRe only touches the optimizer step.

One concern per module, each importing only those listed before it:

- `anchors`: how θ0 and D are drawn (seeded by name), copied to the device, and measured;
- `storage`: how they are kept (an fp32 copy, a rounded copy, or regenerated at each step);
- `coverage`: which parameters are covered, and `syre_param_groups` for the optimizer;
- `decay`: the step itself (`decay_toward_anchor`, one fused pass per bucket of tensors), its
  buckets, `steady_pull`, and the hook that runs it after the gradients;
- `state`: the state dict that checkpoints carry;
- `core`: the `SyRe` class, which ties them to a model and an optimizer.

- [0] Remove Symmetries to Control Model Expressivity and Improve Optimization, 2024,
  https://arxiv.org/abs/2408.15495
"""

from ssl_syre.syre.anchors import ANCHOR_SCALES, ANCHOR_STORAGES
from ssl_syre.syre.core import SyRe
from ssl_syre.syre.coverage import NamedParameters, syre_param_groups
from ssl_syre.syre.decay import MODES, decay_toward_anchor, steady_pull

__all__ = [
    "ANCHOR_SCALES",
    "ANCHOR_STORAGES",
    "MODES",
    "NamedParameters",
    "SyRe",
    "decay_toward_anchor",
    "steady_pull",
    "syre_param_groups",
]
