"""Gradient clipping (optim.clip_gradients_): DINO's reference rule, one tensor at a time,
by default; torch's global-norm clipping one option away."""
from __future__ import annotations

import pytest
import torch

from nolabel.config import ConfigError, apply_overrides, new_config
from nolabel.optim import CLIP_MODES, check_clip_mode, clip_gradients_


def params_with_grads(seed=0):
    """Parameters whose gradients have norms well below, around and well above 1."""
    torch.manual_seed(seed)
    params = []
    for shape, scale in [((5, 3), 0.01), ((7,), 0.3), ((4, 4), 5.0), ((2, 3, 3), 50.0), ((6,), 1.0)]:
        p = torch.nn.Parameter(torch.randn(shape))
        p.grad = torch.randn(shape) * scale
        params.append(p)
    params.append(torch.nn.Parameter(torch.randn(3)))     # no gradient: skipped
    return params


def naive_per_param(grads, clip):
    """The reference rule, written out: each gradient alone, scaled by clip / (norm + 1e-6)
    when its l2 norm exceeds clip."""
    out = []
    for g in grads:
        g = g.clone()
        norm = float(torch.sqrt((g.double() ** 2).sum()))
        if norm > clip:
            g = g * (clip / (norm + 1e-6))
        out.append(g)
    return out


def test_default_is_per_param():
    assert new_config("dino").optim.clip_mode == "per_param"
    assert CLIP_MODES == ("per_param", "global")


def test_per_param_matches_naive_loop():
    params = params_with_grads()
    before = [p.grad.clone() for p in params if p.grad is not None]
    clip_gradients_(params, 1.0)
    after = [p.grad for p in params if p.grad is not None]
    for got, want in zip(after, naive_per_param(before, 1.0)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert params[-1].grad is None
    norms = [float(g.norm()) for g in after]
    assert norms[0] < 0.1 and all(n <= 1.0 + 1e-5 for n in norms)
    assert torch.equal(after[0], before[0])          # under the bound: untouched, bit for bit
    # each tensor clipped to the bound on its own: not one common factor
    assert norms[2] == pytest.approx(1.0, abs=1e-5) and norms[3] == pytest.approx(1.0, abs=1e-5)


def test_global_matches_clip_grad_norm():
    params, reference = params_with_grads(), params_with_grads()
    clip_gradients_(params, 1.0, "global")
    torch.nn.utils.clip_grad_norm_(reference, 1.0)
    for p, q in zip(params, reference):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)
    # and it differs from the per-parameter rule on these gradients
    per_param = params_with_grads()
    clip_gradients_(per_param, 1.0)
    assert not torch.allclose(per_param[0].grad, params[0].grad)


@pytest.mark.parametrize("mode", CLIP_MODES)
def test_frozen_gradient_dropped_first_does_not_affect_the_others(mode):
    """A frozen layer with a huge gradient: dropped before clipping (as the loop does), the
    other gradients come out as if it did not exist."""
    with_frozen, without = params_with_grads(), params_with_grads()
    frozen = torch.nn.Parameter(torch.randn(8, 8))
    frozen.grad = torch.randn(8, 8) * 1e4
    frozen.grad = None                                  # the loop's method.frozen_parameters step
    clip_gradients_(with_frozen + [frozen], 1.0, mode)
    clip_gradients_(without, 1.0, mode)
    assert frozen.grad is None
    for p, q in zip(with_frozen, without):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_global_mode_would_be_moved_by_a_frozen_gradient():
    """Why the order matters: kept in, a large frozen gradient shrinks every other gradient
    under the global rule, and none under the per-parameter rule."""
    for mode, moved in (("global", True), ("per_param", False)):
        params, baseline = params_with_grads(), params_with_grads()
        frozen = torch.nn.Parameter(torch.randn(8, 8))
        frozen.grad = torch.randn(8, 8) * 1e4
        clip_gradients_(params + [frozen], 1.0, mode)
        clip_gradients_(baseline, 1.0, mode)
        assert (not torch.allclose(params[0].grad, baseline[0].grad)) == moved


def test_bad_mode_names_the_option_and_choices():
    with pytest.raises(ValueError, match=r"--optim\.clip_mode='norm'.*per_param, global"):
        check_clip_mode("norm")
    with pytest.raises(ValueError, match="--optim.clip_mode"):
        clip_gradients_(params_with_grads(), 1.0, "norm")
    cfg = new_config("dino")
    apply_overrides(cfg, ["--optim.clip_mode=global"])
    assert cfg.optim.clip_mode == "global"
    with pytest.raises(ConfigError):
        apply_overrides(cfg, ["--optim.clip_mod=global"])
