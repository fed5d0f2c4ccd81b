"""SimSiam: simple siamese networks with a stop-gradient (Chen and He, "Exploring
Simple Siamese Representation Learning", CVPR 2021).

One network (``student``: backbone f, projector) plus a predictor h; the prediction
of one view is pulled toward the projection of the other, which is treated as a
constant: ``L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` (Eq. 4, D the
negative cosine, :func:`nolabel.losses.regression.negative_cosine`). No negatives, no
momentum encoder: the stop-gradient alone prevents collapse (Section 4.1, Fig. 2).

Collapse signal (Fig. 2, middle): the per-dimension std of the l2-normalised
projections z, about 1/sqrt(d) when healthy, falls to 0 when every image maps to one
point; logged as ``z_std`` and warned about by :meth:`health`.
``stop_gradient=False`` is the paper's ablation (it collapses).

Multi-crop (``n_local_views`` > 0): projections of the two global views are the
targets; every other view's prediction is pulled toward each global target, and the
loss is the mean over these pairs (with two views: Eq. 4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.regression import negative_cosine
from nolabel.methods import register
from nolabel.methods._siamese import SiameseBranch, mean_over_pairs, spread_logs, spread_warnings, view_pairs
from nolabel.methods.base import Method, RunShape, per_view
from nolabel.view_presets import MOCOV2_AUGMENTATION, siamese_views


@dataclass
class SimSiamConfig:
    # Projector (Section 4, "Projection MLP"): 3 layers of 2048, BN on every layer
    # including the output (no ReLU there).
    proj_hidden_dim: int = 2048
    out_dim: int = 2048
    proj_layers: int = 3
    # Predictor (Section 4, "Prediction MLP"): a bottleneck 2048 -> 512 -> 2048, BN+ReLU in the hidden layer only.
    pred_hidden_dim: int = 512
    stop_gradient: bool = True          # False: the collapsing ablation of Section 4.1
    n_local_views: int = 0              # multi-crop locals (thesis 4.2.4)


def _negative_cosine_with_gradient(p, z):
    """D(p, z) with gradient through z too: the no-stop-gradient ablation."""
    return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()


@register
class SimSiam(Method):
    name = "simsiam"
    Config = SimSiamConfig
    # Paper (Section 4): SGD, momentum 0.9, lr 0.05 x batch/256, weight decay 1e-4, cosine,
    # batch 512, no LARS and no warm-up. A small-batch recipe, so it stays the default on
    # CPU too. With a ViT backbone, --optim.optimizer=adamw --optim.lr=5e-4
    # --optim.weight_decay=0.04 is the usual choice (MoCo v3). The predictor keeps the base lr
    # throughout, without the cosine decay (param_group_rules), as in the paper's predictor
    # study, where a predictor lr that is not decayed did slightly better.
    default_optim = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "warmup_epochs": 0.0}
    # The small recipe (presets.apply_recipe): the heads at a quarter (projector 512 wide, out
    # 512, predictor bottleneck 128). At ResNet-18 x0.25 the paper's 2048 / 2048 / 512 heads held
    # training at 0.71 of the bare backbone passes (0.98 at a quarter); over the same 1,560 steps
    # on CIFAR-10 (8 epochs of 50,000) the two gave k-NN 35.6 against 35.9 (k=200), NMI 0.140
    # both, random init 30.8 (BENCHMARKS.md, "CPU speed", "Narrower heads").
    recipes = {"small": {"simsiam.proj_hidden_dim": 512, "simsiam.out_dim": 512, "simsiam.pred_hidden_dim": 128}}
    encoder_prefix = "student.backbone"

    def param_group_rules(self) -> dict[str, dict]:
        return {"predictor": {"fixed_lr": True}}

    def __init__(self, cfg: SimSiamConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.out_dim, n_layers=cfg.proj_layers,
                        norm="bn", last_norm="bn", last_bias=False)
        self.student = SiameseBranch(backbone, projector)
        self.predictor = mlp(cfg.out_dim, cfg.pred_hidden_dim, cfg.out_dim, n_layers=2, norm="bn")

    def view_specs(self):
        return siamese_views(self.shape.image_size, self.cfg.n_local_views, **MOCOV2_AUGMENTATION)   # Section 4

    def training_step(self, views, info):
        feats, z = self.student(views)                                   # (V*B, D), (V, B, d)
        p = per_view(self.predictor, z, len(views))                      # (V, B, d)
        criterion = negative_cosine if self.cfg.stop_gradient else _negative_cosine_with_gradient
        pairs = view_pairs(len(views), ordered=True, n_targets=self.n_global_views)
        loss, terms = mean_over_pairs(pairs, lambda t, s: criterion(p[s], z[t]))
        return loss, {**terms, **spread_logs(feats, z, views[0].shape[0])}

    def health(self, epoch_means):
        return spread_warnings(epoch_means, self.student.backbone.num_features, self.cfg.out_dim)
