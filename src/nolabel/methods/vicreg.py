"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce, LeCun,
"VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022).

One network (``student``: backbone + expander) embeds both views; the loss (Eq. 6,
:func:`nolabel.losses.redundancy.vicreg_loss`) pulls the two embeddings of an image
together (invariance, MSE), keeps the std of every embedding dimension above 1
(variance hinge: collapse shows as this term rising to its maximum of 2) and
decorrelates the dimensions (covariance). The three unweighted terms are logged as
``invariance``, ``variance`` and ``covariance``.

Multi-crop (``n_local_views`` > 0): the loss is taken on every unordered view pair
holding a global view, (g1, g2), (g1, l), (g2, l), and averaged (each pair's variance
and covariance terms are over that pair's two batches).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nolabel.losses.redundancy import vicreg_loss
from nolabel.methods import register
from nolabel.methods._siamese import (ADAMW_SMALL_BATCH, expander_student, expander_width, mean_over_pairs,
                                      spread_logs, spread_warnings, view_pairs)
from nolabel.methods.base import Method, RunShape, fill
from nolabel.view_presets import siamese_views

VARIANCE_COLLAPSED = 1.8        # of the variance term's maximum 2 (gamma = 1, two views): stds near 0


@dataclass
class VICRegConfig:
    # Expander (Section 4.1): 3 linear layers of 8192 units, BN + ReLU after the first two.
    # None: 8192 from 96 px up; below (small images, CPU: its two 8192 x 8192 layers alone hold
    # 134M parameters) 4 x the backbone's features, at most 2048 (_siamese.expander_width): 512
    # at ResNet-18 x0.25, where it measured 34.5 k-NN after 312 steps against 33.5 with 2048, at
    # 0.93 of the bare backbone's images/s against 0.63 (BENCHMARKS.md, "CPU speed").
    proj_dim: int | None = None
    # Loss weights (Section 4.1): lambda = mu = 25, nu = 1; gamma = 1, eps = 1e-4 (Eqs. 1-6).
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    n_local_views: int = 0              # multi-crop locals (thesis 4.2.4)


@register
class VICReg(Method):
    name = "vicreg"
    Config = VICRegConfig
    # Paper (Section 4.1): LARS, batch 2048, lr 0.2 x batch/256, weight decay 1e-6, 10 warm-up
    # epochs, cosine: --optim.optimizer=lars --optim.lr=0.2 --optim.weight_decay=1e-6.
    # Default: AdamW for small batches (see ADAMW_SMALL_BATCH).
    default_optim = dict(ADAMW_SMALL_BATCH)
    encoder_prefix = "student.backbone"

    @classmethod
    def resolve_config(cls, cfg: VICRegConfig, shape: RunShape) -> None:
        fill(cfg, "proj_dim", expander_width(shape.image_size, shape.feature_dim))

    def __init__(self, cfg: VICRegConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.proj_dim = cfg.proj_dim
        self.student = expander_student(backbone, cfg.proj_dim)

    def view_specs(self):
        # VICReg follows BYOL's augmentations (Appendix): view_presets.two_view_preset's defaults.
        return siamese_views(self.shape.image_size, self.cfg.n_local_views)

    def training_step(self, views, info):
        feats, z = self.student(views)                                   # (V*B, D), (V, B, d)
        c = self.cfg
        loss, terms = mean_over_pairs(view_pairs(len(views), ordered=False, n_targets=self.n_global_views),
                                      lambda a, b: vicreg_loss(z[a], z[b], c.sim_weight, c.var_weight, c.cov_weight))
        return loss, {**terms, **spread_logs(feats, z, views[0].shape[0])}

    def health(self, epoch_means):
        warnings = spread_warnings(epoch_means, self.student.backbone.num_features, self.proj_dim)
        variance = epoch_means.get("variance")
        if variance is not None and variance > VARIANCE_COLLAPSED:
            warnings.append(f"collapse: VICReg variance term {variance:.3f} near its maximum 2: the embedding "
                            "dimensions have std near 0 (raise --vicreg.var_weight?)")
        return warnings
