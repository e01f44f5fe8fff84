"""VICReg from lightly's projection head, loss and transform.

- [0] VICReg, 2022, https://arxiv.org/abs/2105.04906
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.transforms import VICRegTransform
from lightly.transforms.vicreg_transform import VICRegViewTransform
from torch import Tensor

from ssl_syre.config import DataConfig, ranged
from ssl_syre.data import DataInfo, ssl_transform_kwargs
from ssl_syre.data.augment import ViewRecipe
from ssl_syre.errors import check_choice
from ssl_syre.methods.base import SSLMethod

# variance_form -> factor on lightly's variance term, which is 0.5 * (v(Z) + v(Z')):
VARIANCE_FORMS = {
    # The paper [0] (Algorithm 1, eq. 6: mu * [v(Z) + v(Z')]) and solo-learn
    # (solo/losses/vicreg.py variance_loss), whose CIFAR numbers our VICReg configs follow.
    "paper": 2.0,
    # lightly's VICRegLoss and the authors' repository (facebookresearch/vicreg, main_vicreg.py:
    # each view's hinge divided by 2): half the paper's weight at the same mu.
    "lightly": 1.0,
}


@dataclass
class VICRegKwargs:
    projection_hidden_dim: int = ranged(2048, "[1, inf)")
    projection_output_dim: int = ranged(2048, "[1, inf)")
    projection_layers: int = ranged(3, "[2, inf)")
    # Invariance: mean squared distance of the two views.
    lambda_param: float = ranged(25.0, "[0, inf)")
    # Variance: hinge on each dimension's std over the batch.
    mu_param: float = ranged(25.0, "[0, inf)")
    # The variance term's scale, where the references differ (see VARIANCE_FORMS): "paper"
    # sums the two views' hinges, "lightly" averages them.
    variance_form: str = "paper"
    # Covariance: squared off-diagonal covariances.
    nu_param: float = ranged(1.0, "[0, inf)")
    gather_distributed: bool = True  # variance and covariance over all processes' batches


class VICReg(SSLMethod):
    """Invariance, variance and covariance terms on the two views' embeddings [0].

    The variance term (mu_param) keeps every dimension's std over the batch above 1 and the
    covariance term (nu_param) decorrelates the dimensions: together they are what keeps the
    embedding from collapsing, without negatives, predictor or momentum copy. lightly's loss
    averages the two views' variance terms; `variance_form="paper"` (the default) weighs them
    as the paper and solo-learn do, by handing lightly's loss twice mu (exact in floating
    point: a factor of 2 times 0.5).
    """

    name = "vicreg"
    Kwargs = VICRegKwargs
    # solo-learn's VICReg recipe (scripts/pretrain/cifar/vicreg.yaml): LARS lr 0.3 per 256
    # images, wd 1e-4; under SGD at the schema's lr the loss diverges. A one-epoch warm-up
    # (solo-learn: 10 of 1000) suits the short runs this default serves.
    config_defaults = {
        "optimizer": {
            "name": "lars",
            "lr": 0.3,
            "lr_reference_batch": 256,
            "weight_decay": 1e-4,
            "warmup_epochs": 1,
        }
    }

    def build_heads(self, feature_dim: int) -> None:
        self.projection_head = VICRegProjectionHead(
            feature_dim,
            self.kwargs.projection_hidden_dim,
            self.kwargs.projection_output_dim,
            num_layers=self.kwargs.projection_layers,
        )
        check_choice("method_kwargs.variance_form", self.kwargs.variance_form, VARIANCE_FORMS)
        self.criterion = VICRegLoss(
            lambda_param=self.kwargs.lambda_param,
            mu_param=self.kwargs.mu_param * VARIANCE_FORMS[self.kwargs.variance_form],
            nu_param=self.kwargs.nu_param,
            gather_distributed=self.kwargs.gather_distributed,
        )

    def training_loss(self, views: Sequence[Tensor]) -> Tensor:
        z0, z1 = (self.projection_head(self.backbone(view)) for view in views[:2])
        return self.criterion(z0, z1)

    @classmethod
    def build_transform(cls, info: DataInfo, data_cfg: DataConfig) -> VICRegTransform:
        return VICRegTransform(**ssl_transform_kwargs(info, data_cfg))

    @classmethod
    def view_recipes(cls, info: DataInfo, data_cfg: DataConfig) -> list[ViewRecipe]:
        """VICRegTransform's settings (its sigmas differ from its view transform's default)."""
        recipe = ViewRecipe.from_lightly(
            VICRegViewTransform,
            defaults_from=VICRegTransform,
            **ssl_transform_kwargs(info, data_cfg),
        )
        return [recipe, recipe]
