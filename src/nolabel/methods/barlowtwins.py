"""Barlow Twins: self-supervised learning by redundancy reduction (Zbontar, Jing,
Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021).

One network (``student``: backbone + projector) embeds both views; the
cross-correlation matrix of the two batches of embeddings, standardised along the
batch, is pushed to the identity: diagonal to 1 (invariance), off-diagonal to 0
(redundancy reduction), Eq. 1, :func:`nolabel.losses.redundancy.barlow_twins_loss` (its two sums from
:func:`~nolabel.losses.redundancy.barlow_twins_terms`).
No negatives, no predictor, no momentum encoder; the loss itself excludes a collapsed
(constant) embedding.

Logs ``on_diag`` (sum_i (1 - C_ii)^2) and ``off_diag`` (sum_{i != j} C_ij^2), the two
terms of Eq. 1 before weighting (computed again without gradient).

Multi-crop (``n_local_views`` > 0): the loss is taken on every unordered view pair
holding a global view, (g1, g2), (g1, l), (g2, l), and averaged; each pair's
correlation matrix is computed over that pair's batches.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nolabel.losses.redundancy import barlow_twins_terms
from nolabel.methods import register
from nolabel.methods._siamese import (ADAMW_SMALL_BATCH, expander_student, expander_width, mean_over_pairs,
                                      spread_logs, spread_warnings, view_pairs)
from nolabel.methods.base import Method, RunShape, fill
from nolabel.view_presets import siamese_views


@dataclass
class BarlowTwinsConfig:
    # Projector ("Implementation details"): 3 linear layers of 8192 units, BN + ReLU after
    # the first two. None: 8192 from 96 px up; below, VICReg's rule (_siamese.expander_width):
    # 4 x the backbone's features, at most 2048 (small images, CPU: its two 8192 x 8192 layers
    # alone hold 134M parameters; the paper's width ablation shows accuracy still rising with
    # the width, so this trades some accuracy for speed).
    proj_dim: int | None = None         # hidden and output width
    # Weight of the redundancy term: 5e-3 ("Implementation details", for 8192; solo-learn and
    # lightly keep it at 2048). None: 5e-3 from 2048 wide up, 5e-3 x 2048 / proj_dim below, so
    # that lambda x d, the redundancy term's share against the d on-diagonal terms, stays
    # as at 2048. Measured at ResNet-18 x0.25 (512 wide) after 312 steps: k-NN 31.2 with 0.02,
    # 30.6 with 0.01, 29.6 with 5e-3, against 32.0 for 2048 wide at 5e-3, which trains at 0.65
    # of the bare backbone passes where 512 trains at 0.95 (BENCHMARKS.md, "CPU speed").
    lambd: float | None = None
    n_local_views: int = 0              # multi-crop locals (thesis 4.2.4)


def redundancy_weight(proj_dim: int) -> float:
    """The default lambda for a ``proj_dim``-wide projector (``BarlowTwinsConfig.lambd``)."""
    return 5e-3 if proj_dim >= 2048 else 5e-3 * 2048 / proj_dim


@register
class BarlowTwins(Method):
    name = "barlowtwins"
    Config = BarlowTwinsConfig
    # Paper ("Implementation details"): LARS, batch 2048, lr 0.2 x batch/256 for weights
    # (0.0048 for biases and BN), weight decay 1.5e-6, 10 warm-up epochs, cosine:
    # --optim.optimizer=lars --optim.lr=0.2 --optim.weight_decay=1.5e-6 (one lr for all).
    # Default: AdamW for small batches (see ADAMW_SMALL_BATCH).
    default_optim = dict(ADAMW_SMALL_BATCH)
    encoder_prefix = "student.backbone"

    @classmethod
    def resolve_config(cls, cfg: BarlowTwinsConfig, shape: RunShape) -> None:
        fill(cfg, "proj_dim", expander_width(shape.image_size, shape.feature_dim))
        fill(cfg, "lambd", redundancy_weight(cfg.proj_dim))

    def __init__(self, cfg: BarlowTwinsConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.proj_dim = cfg.proj_dim
        self.student = expander_student(backbone, cfg.proj_dim)

    def view_specs(self):
        # The paper follows BYOL's augmentations (Appendix): view_presets.two_view_preset's defaults.
        return siamese_views(self.shape.image_size, self.cfg.n_local_views)

    def training_step(self, views, info):
        feats, z = self.student(views)                                   # (V*B, D), (V, B, d)
        lambd = self.cfg.lambd

        def pair_loss(a, b):
            on_diag, off_diag = barlow_twins_terms(z[a], z[b])          # Eq. 1's two sums, one C
            return on_diag + lambd * off_diag, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}

        loss, terms = mean_over_pairs(view_pairs(len(views), ordered=False, n_targets=self.n_global_views), pair_loss)
        return loss, {**terms, **spread_logs(feats, z, views[0].shape[0])}

    def health(self, epoch_means):
        return spread_warnings(epoch_means, self.student.backbone.num_features, self.proj_dim)
