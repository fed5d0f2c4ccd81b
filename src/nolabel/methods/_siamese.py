"""Pieces shared by the two-branch ("siamese", Chen and He 2021) methods: SimCLR,
MoCo v2, BYOL, SimSiam, Barlow Twins and VICReg.

- :class:`SiameseBranch`: backbone then projector (``base.project_multicrop``), the
  backbone run once per crop resolution, the projector once per view;
- :func:`view_pairs` and :func:`mean_over_pairs`: which views a loss compares, and
  the mean of the loss over those pairs (thesis Eq. 4.6: every global view is a
  target for every other view);
- :func:`spread_logs` and :func:`spread_warnings`: the embedding-spread statistic and
  its collapse warning (``monitor.embedding_std``);
- :func:`frozen_copy`: the EMA teacher of BYOL and MoCo v2;
- ``ADAMW_SMALL_BATCH``: the default optimizer of the methods that use LARS at scale.

Their views are ``view_presets.siamese_views``.

Not a method (the leading underscore keeps the registry from importing it as one).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from nolabel.heads import mlp
from nolabel.methods.base import project_multicrop
from nolabel.monitor import embedding_collapse_warning, embedding_std
from nolabel.views import SMALL_IMAGE

# Default optimizer of the methods whose papers train with LARS at batches of 2048-8192
# (SimCLR, BYOL, Barlow Twins, VICReg; each file gives its paper's recipe as flags).
# LARS exists for such batches; nolabel's defaults target small images and CPU or
# single-GPU batches (tens to hundreds), where the default backbone is a ViT
# (presets.default_backbone), the architecture DINO (thesis 5.3.2) and MoCo v3 train
# with AdamW. Adam's steps also do not grow with the loss scale, which differs by
# orders of magnitude between these losses (Barlow Twins sums over d^2 correlations).
# Values: DINO's base lr 5e-4 x batch/256 and (starting) weight decay 0.04.
ADAMW_SMALL_BATCH = {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.04}


def size_default(value, image_size: int, large, small):
    """``value`` if set, else the paper's ``large`` value from 96 px up and ``small`` below."""
    if value is not None:
        return value
    return large if image_size >= SMALL_IMAGE else small


def expander_width(image_size: int, feature_dim: int | None = None) -> int:
    """Barlow Twins' and VICReg's default expander width: 8192 in both papers from 96 px up;
    2048 below (small images, small compute), or, given the backbone's ``feature_dim``, 4
    times it, at most 2048 (2048 on ResNet-18's 512, as the CIFAR-10 runs of solo-learn and
    lightly; 512 at the CPU protocol's quarter width, where a 2048-wide expander cost more
    than the backbone's passes: BENCHMARKS.md, "CPU speed")."""
    return size_default(None, image_size, 8192, 2048 if feature_dim is None else min(2048, 4 * feature_dim))


def expander_student(backbone: nn.Module, width: int) -> SiameseBranch:
    """Barlow Twins' and VICReg's student: backbone + a 3-layer expander of ``width``
    (BN + ReLU after the first two)."""
    expander = mlp(backbone.num_features, width, width, n_layers=3, norm="bn", last_bias=False)
    return SiameseBranch(backbone, expander)


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
        return project_multicrop(self.backbone, self.projector, views, per_view_head=True)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy without gradients: the momentum (EMA) teacher of BYOL and MoCo."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def view_pairs(n_views: int, ordered: bool, n_targets: int = 2) -> list[tuple[int, int]]:
    """The (target, other) view pairs a loss compares; targets are the first ``n_targets``
    views, the global ones (``Method.n_global_views``: 2 in every preset here; 1 for MoCo's
    one-direction loss).

    ``ordered=True`` (BYOL, SimSiam, MoCo: the target side is a stop-gradient or
    momentum branch): every target t with every other view s != t (2 (V - 1) pairs for
    two targets). ``ordered=False`` (SimCLR, Barlow Twins, VICReg: symmetric losses):
    each unordered pair holding at least one target, once (2V - 3 pairs for two
    targets). With two views and two targets these are the papers' two-view losses:
    ``[(0, 1), (1, 0)]`` and ``[(0, 1)]``.
    """
    if n_views < 2 or not 1 <= n_targets <= n_views:
        raise ValueError(f"need at least 2 views and 1-{n_views} targets, got {n_views} and {n_targets}")
    if ordered:
        return [(t, s) for t in range(n_targets) for s in range(n_views) if s != t]
    return [(t, s) for t in range(n_targets) for s in range(t + 1, n_views)]


def mean_over_pairs(pairs: list[tuple[int, int]], loss_fn: Callable) -> tuple[torch.Tensor, dict]:
    """Mean of ``loss_fn(t, s)`` over ``pairs``. ``loss_fn`` returns a scalar tensor or
    ``(scalar, {name: scalar})``; the named terms are averaged too (detached tensors or
    floats, for logs: nothing is read back to the host)."""
    total: torch.Tensor | None = None
    terms: dict = {}
    for t, s in pairs:
        out = loss_fn(t, s)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        total = loss if total is None else total + loss
        for k, v in extra.items():
            v = v.detach() if isinstance(v, torch.Tensor) else v
            terms[k] = terms.get(k, 0.0) + v / len(pairs)
    assert total is not None
    return total / len(pairs), terms


@torch.no_grad()
def spread_logs(feats: torch.Tensor, z: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
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
