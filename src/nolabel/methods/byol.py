"""BYOL: bootstrap your own latent (Grill et al., "Bootstrap Your Own Latent: A New
Approach to Self-Supervised Learning", NeurIPS 2020).

An online network (``student``: backbone f, projector g, predictor q) predicts the
projection of the other view made by a target network (``teacher``: f and g only,
an EMA of the online ones, momentum on a cosine from 0.996 to 1, Section 3.2). The
loss is the normalised MSE between the prediction and the target projection
(Eq. 2, :func:`nolabel.losses.regression.normalized_mse`), symmetrised:
``L + L~`` (Section 3.1). No negatives; the predictor and the slow target prevent
collapse (the paper's ablations; thesis Table 5.11, rows 7-8).

Multi-crop (``n_local_views`` > 0): the target sees only the two global views, and
every other view's prediction (the other global and each local) is regressed onto
each global view's target projection; the loss is 2 x the mean over these pairs, so
that with two views it is exactly ``L + L~``. Thesis Table 5.16 reports that multi-crop
hurts BYOL out of the box (-6.6 linear on ViT-S): the default is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.regression import normalized_mse
from nolabel.methods import register
from nolabel.methods._siamese import (ADAMW_SMALL_BATCH, SiameseBranch, frozen_copy, mean_over_pairs, spread_logs,
                                      spread_warnings, view_pairs)
from nolabel.methods.base import Method, RunShape, per_view
from nolabel.ops.schedules import cosine
from nolabel.view_presets import siamese_views


@dataclass
class BYOLConfig:
    # Projector g and predictor q (Section 3.3): Linear(4096), BN, ReLU, Linear(256).
    proj_hidden_dim: int = 4096
    out_dim: int = 256
    pred_hidden_dim: int = 4096
    # Target EMA (Section 3.2): tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2, tau_base 0.996.
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    n_local_views: int = 0              # multi-crop locals (thesis Table 5.16: hurts BYOL as is)


@register
class BYOL(Method):
    name = "byol"
    Config = BYOLConfig
    # Paper (Section 3.3): LARS, lr 0.2 x batch/256, weight decay 1.5e-6, 10 warm-up epochs,
    # cosine, batch 4096: --optim.optimizer=lars --optim.lr=0.2 --optim.weight_decay=1.5e-6.
    # Default: AdamW for small batches (see ADAMW_SMALL_BATCH).
    default_optim = dict(ADAMW_SMALL_BATCH)
    # The small recipe (presets.apply_recipe, 32-95 px): lightly's CIFAR-10 BYOL (heads 1024 hidden,
    # 256 out; SGD 0.06 per 128 = 0.12 per 256, momentum 0.9, weight decay 5e-4) and target momentum
    # 0.99 -> 1: 55.9% k-NN (k=200) on CIFAR-10 in 60 minutes on 2 CPU cores, +15.5 over raw pixels
    # and +25.1 over random init (BENCHMARKS.md, "Convergence in 60 minutes"); with AdamW 2e-3
    # (the optimiser of SimCLR's and SwAV's recipes) instead it reached 47.0.
    recipes = {"small": {"byol.proj_hidden_dim": 1024, "byol.pred_hidden_dim": 1024,
                         "byol.momentum_teacher": 0.99, "optim.optimizer": "sgd", "optim.lr": 0.12,
                         "optim.weight_decay": 5e-4, "optim.weight_decay_end": 5e-4, "optim.min_lr": 0.0}}
    encoder_prefix = "student.backbone"   # BYOL keeps the online encoder f_theta (Section 3.1)

    def __init__(self, cfg: BYOLConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.out_dim, n_layers=2, norm="bn")
        self.student = SiameseBranch(backbone, projector)
        self.predictor = mlp(cfg.out_dim, cfg.pred_hidden_dim, cfg.out_dim, n_layers=2, norm="bn")
        self.teacher = frozen_copy(self.student)

    def view_specs(self):
        # BYOL's augmentations (Appendix B, Table 6) are view_presets.two_view_preset's defaults.
        return siamese_views(self.shape.image_size, self.cfg.n_local_views)

    def schedules(self, total_steps, steps_per_epoch):
        c = self.cfg
        return {"teacher_momentum": lambda s: cosine(s, total_steps, c.momentum_teacher, c.momentum_teacher_end)}

    def ema_pairs(self):
        return [(self.student, self.teacher)]

    def training_step(self, views, info):
        feats, z = self.student(views)                                   # (V*B, D), (V, B, d)
        p = per_view(self.predictor, z, len(views))                      # (V, B, d)
        with torch.no_grad():
            _, target = self.teacher(views[:self.n_global_views])        # (2, B, d): the global views

        def pair_loss(t, s):
            cos = F.cosine_similarity(p[s].detach(), target[t], dim=1).mean()
            return normalized_mse(p[s], target[t]), {"cos": cos}

        loss, terms = mean_over_pairs(view_pairs(len(views), ordered=True, n_targets=self.n_global_views), pair_loss)
        return 2.0 * loss, {**terms, **spread_logs(feats, z, views[0].shape[0])}

    def health(self, epoch_means):
        return spread_warnings(epoch_means, self.student.backbone.num_features, self.cfg.out_dim)
