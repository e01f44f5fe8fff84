"""VICReg: each weight reaches its term, the loss falls, and the views solarize before blur."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import build_method, losses_on_fixed_views

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_weight_scales_its_own_term() -> None:
    """Collapsed embeddings (every sample the same vector) have no invariance or covariance
    term, only the variance hinge, so the loss is linear in mu and blind to lambda and nu;
    two views that differ add the invariance term, weighted by lambda."""
    collapsed = torch.ones(32, 16)
    loss = {}
    for mu in (1.0, 2.0):
        model, _ = build_method("vicreg", f"method_kwargs.mu_param={mu}")
        loss[mu] = model.criterion(collapsed, collapsed).item()
    assert loss[1.0] > 0.5 and loss[2.0] == pytest.approx(2 * loss[1.0])
    model, _ = build_method("vicreg", "method_kwargs.mu_param=0", "method_kwargs.nu_param=0")
    assert model.criterion(collapsed, collapsed).item() == 0.0
    shifted = collapsed + 0.5
    model, _ = build_method("vicreg", "method_kwargs.mu_param=0", "method_kwargs.lambda_param=2")
    assert model.criterion(collapsed, shifted).item() == pytest.approx(2 * 0.25)


def test_the_papers_variance_term_is_the_sum_of_both_views_hinges() -> None:
    """On collapsed embeddings (std 0 in every dimension) each view's hinge is
    relu(1 - sqrt(1e-4)) = 0.99: the paper's form (Algorithm 1, solo-learn) adds the two, mu *
    1.98; lightly's form (and the authors' repository) averages them, mu * 0.99."""
    collapsed = torch.ones(32, 16)
    hinge = 1 - 1e-4**0.5
    for form, views in (("paper", 2), ("lightly", 1)):
        model, _ = build_method("vicreg", f"method_kwargs.variance_form={form}")
        loss = model.criterion(collapsed, collapsed).item()
        assert loss == pytest.approx(25.0 * views * hinge)


def test_an_unknown_variance_form_is_refused() -> None:
    from ssl_syre.errors import UserError

    with pytest.raises(UserError, match="variance_form 'solo'.*lightly, paper"):
        build_method("vicreg", "method_kwargs.variance_form=solo")


def test_loss_falls_on_a_fixed_batch() -> None:
    model, _ = build_method("vicreg")
    size = model.info.image_size
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(16, 1, size, size, generator=generator) for _ in range(2)]
    losses = losses_on_fixed_views(model, views, steps=6, lr=0.01)
    assert losses[-1] < 0.95 * losses[0], losses


def test_recipe_solarizes_before_blur_as_lightly_does() -> None:
    from ssl_syre.methods import METHODS

    model, cfg = build_method("vicreg", "data.name=stl10")
    (recipe, other) = METHODS["vicreg"].view_recipes(model.info, cfg.data)
    assert recipe == other and recipe.solarize_before_blur and recipe.solarization_prob == 0.1
    assert recipe.sigmas == (0.1, 2.0)  # VICRegTransform's, not its view transform's (0.2, 2)
