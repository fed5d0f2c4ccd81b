"""Pieces shared by the two-branch ("siamese", Chen and He 2021) methods: SimCLR,
MoCo v2, BYOL, SimSiam, Barlow Twins and VICReg.

- :func:`siamese_views`: two global views (``views.two_view_preset``) plus optional
  local crops (multi-crop, thesis 4.2.4; Fig. 4.2 and Table 5.16 apply it to SimCLR,
  MoCo v2 and BYOL);
- :class:`SiameseBranch`: backbone then projector, the backbone run once per crop
  resolution, the projector once per view;
- :func:`view_pairs` and :func:`mean_over_pairs`: which views a loss compares, and
  the mean of the loss over those pairs (thesis Eq. 4.6: every global view is a
  target for every other view);
- :func:`spread_logs` and :func:`spread_warnings`: the embedding-spread statistic and
  its collapse warning (``monitor.embedding_std``);
- :func:`frozen_copy`: the EMA teacher of BYOL and MoCo v2;
- ``ADAMW_SMALL_BATCH``: the default optimizer of the methods that use LARS at scale;
  ``MOCOV2_AUGMENTATION``: the view arguments MoCo v2 and SimSiam share.

Not a method (the leading underscore keeps the registry from importing it as one).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from nolabel.heads import mlp
from nolabel.methods.base import forward_multicrop
from nolabel.monitor import embedding_collapse_warning, embedding_std
from nolabel.views import SMALL_IMAGE, ViewSpec, local_size, two_view_preset

N_GLOBAL = 2                      # every preset here has two global views, first in the list
LOCAL_SCALE = (0.05, 0.14)        # local crops' area fraction: SwAV's multi-crop (thesis 4.2.5)
LOCAL_BLUR = 0.5                  # blur probability of local crops (thesis 5.3.2, DINO's locals)

# Default optimizer of the methods whose papers train with LARS at batches of 2048-8192
# (SimCLR, BYOL, Barlow Twins, VICReg; each file gives its paper's recipe as flags).
# LARS exists for such batches; nolabel's defaults target small images and CPU or
# single-GPU batches (tens to hundreds), where the default backbone is a ViT
# (presets.default_backbone), the architecture DINO (thesis 5.3.2) and MoCo v3 train
# with AdamW. Adam's steps also do not grow with the loss scale, which differs by
# orders of magnitude between these losses (Barlow Twins sums over d^2 correlations).
# Values: DINO's base lr 5e-4 x batch/256 and (starting) weight decay 0.04.
ADAMW_SMALL_BATCH = {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.04}

# MoCo v2's augmentation (Chen et al. 2020, Section 2, and its reference code), which
# SimSiam reuses (Chen and He 2021, Section 4): crops of (0.2, 1), jitter (0.4, 0.4, 0.4,
# 0.1) p 0.8, grayscale p 0.2, blur p 0.5 on both views, no solarisation.
MOCOV2_AUGMENTATION = {"scale": (0.2, 1.0), "solarize": False, "blur": 0.5, "jitter_strength": (0.4, 0.4, 0.4, 0.1)}


def size_default(value, image_size: int, large, small):
    """``value`` if set, else the paper's ``large`` value from 96 px up and ``small`` below."""
    if value is not None:
        return value
    return large if image_size >= SMALL_IMAGE else small


def expander_student(backbone: nn.Module, proj_dim: int | None, image_size: int) -> tuple[nn.Module, int]:
    """Barlow Twins' and VICReg's student: backbone + a 3-layer expander of width
    ``proj_dim`` (BN + ReLU after the first two; 8192 in both papers, 2048 below 96 px
    by default). Returns (the branch, the width used)."""
    width = size_default(proj_dim, image_size, 8192, 2048)
    expander = mlp(backbone.num_features, width, width, n_layers=3, norm="bn", last_bias=False)
    return SiameseBranch(backbone, expander), width


def siamese_views(image_size: int, n_local: int = 0, scale: tuple[float, float] = (0.08, 1.0),
                  solarize: bool = True, blur: float | None = None,
                  jitter_strength: tuple[float, float, float, float] | None = None) -> list[ViewSpec]:
    """Two global views of ``image_size`` px, then ``n_local`` local views.

    The globals are :func:`views.two_view_preset` (BYOL's augmentations: blur p 1.0 and
    0.1, solarisation p 0 and 0.2) with area fraction ``scale``. ``solarize=False``
    drops solarisation; ``blur`` (a probability) replaces the asymmetric blur by the
    same probability on both views (SimCLR, MoCo v2: 0.5); ``jitter_strength``
    replaces the colour-jitter strengths. Blur stays off wherever the preset turns it
    off (below 64 px). Locals are ``views.local_size(image_size)`` px, area in
    ``LOCAL_SCALE``, the first global's colour augmentations, blur p 0.5, no solarisation.
    """
    if n_local < 0:
        raise ValueError(f"n_local_views must be >= 0, got {n_local}")
    specs = two_view_preset(image_size, scale, solarize=solarize)
    blur_on = specs[0].blur > 0                     # the preset decides whether blur suits this size
    changes: dict = {}
    if jitter_strength is not None:
        changes["jitter_strength"] = tuple(jitter_strength)
    if blur is not None and blur_on:
        changes["blur"] = blur
    specs = [replace(s, **changes) for s in specs]
    if n_local > 0:
        specs.append(replace(specs[0], size=local_size(image_size), scale=LOCAL_SCALE, count=n_local,
                             blur=LOCAL_BLUR if blur_on else 0.0, solarize=0.0, is_global=False))
    return specs


class SiameseBranch(nn.Module):
    """f then g: backbone then projector. The backbone runs once per run of same-size
    views (``forward_multicrop``); the projector runs once per view, so each of its
    BatchNorm layers normalises one view's batch, as in the papers' code."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """views: V tensors (B,3,h,w). Returns (features (V*B, D), projections (V, B, d))."""
        feats = forward_multicrop(self.backbone, views)                      # (V*B, D)
        z = per_view(self.projector, feats, len(views))                      # (V, B, d)
        return feats, z


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy without gradients: the momentum (EMA) teacher of BYOL and MoCo."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def per_view(module: nn.Module, x: torch.Tensor, n_views: int) -> torch.Tensor:
    """Apply ``module`` to each view's rows: x (V*B, d_in) or (V, B, d_in) -> (V, B, d_out)."""
    return torch.stack([module(chunk) for chunk in x.reshape(n_views, -1, x.shape[-1])])


def view_pairs(n_views: int, ordered: bool, n_targets: int = N_GLOBAL) -> list[tuple[int, int]]:
    """The (target, other) view pairs a loss compares; targets are the first ``n_targets``
    global views (2, or 1 for MoCo's one-direction loss).

    ``ordered=True`` (BYOL, SimSiam, MoCo: the target side is a stop-gradient or
    momentum branch): every target t with every other view s != t (2 (V - 1) pairs for
    two targets). ``ordered=False`` (SimCLR, Barlow Twins, VICReg: symmetric losses):
    each unordered pair holding at least one target, once (2V - 3 pairs for two
    targets). With two views and two targets these are the papers' two-view losses:
    ``[(0, 1), (1, 0)]`` and ``[(0, 1)]``.
    """
    if n_views < N_GLOBAL or not 1 <= n_targets <= N_GLOBAL:
        raise ValueError(f"need at least {N_GLOBAL} views and 1-{N_GLOBAL} targets, got {n_views} and {n_targets}")
    if ordered:
        return [(t, s) for t in range(n_targets) for s in range(n_views) if s != t]
    return [(t, s) for t in range(n_targets) for s in range(t + 1, n_views)]


def mean_over_pairs(pairs: list[tuple[int, int]], loss_fn: Callable) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of ``loss_fn(t, s)`` over ``pairs``. ``loss_fn`` returns a scalar tensor or
    ``(scalar, {name: scalar})``; the named terms are averaged too (floats, for logs)."""
    total: torch.Tensor | None = None
    terms: dict[str, float] = {}
    for t, s in pairs:
        out = loss_fn(t, s)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        total = loss if total is None else total + loss
        for k, v in extra.items():
            terms[k] = terms.get(k, 0.0) + float(v) / len(pairs)
    assert total is not None
    return total / len(pairs), terms


@torch.no_grad()
def spread_logs(feats: torch.Tensor, z: torch.Tensor, batch: int) -> dict[str, float]:
    """``emb_std``: spread of the l2-normalised backbone features of the first global view
    (about 1/sqrt(D) when healthy, 0 at collapse); ``z_std``: the same for its projection
    (SimSiam's collapse statistic, Chen and He 2021, Fig. 2)."""
    return {"emb_std": embedding_std(feats[:batch].detach().float()),
            "z_std": embedding_std(z[0].detach().float())}


def spread_warnings(epoch_means: dict[str, float], feature_dim: int, projection_dim: int) -> list[str]:
    """Collapse warnings from the epoch means of :func:`spread_logs`."""
    out = []
    for key, dim, what in (("emb_std", feature_dim, "backbone features"), ("z_std", projection_dim, "projections")):
        warning = embedding_collapse_warning(epoch_means.get(key), dim)
        if warning:
            out.append(f"{what}: {warning}")
    return out
