"""SimCLR: contrastive learning of visual representations (Chen, Kornblith, Norouzi,
Hinton, "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020).

One network f (backbone) + g (projection MLP); each view's projection must pick out
the other view of the same image among the 2N - 1 other views of the batch (NT-Xent,
Eq. 1, :func:`nolabel.losses.contrastive.nt_xent`). No momentum encoder, no queue.

Multi-crop (thesis 4.2.4, Fig. 4.2: +2.4 top-1 for SimCLR): with ``n_local_views``
> 0 the NT-Xent loss is computed on every unordered view pair holding a global view,
(g1, g2), (g1, l), (g2, l), and averaged; the negatives of a pair are that pair's
other 2N - 2 views. Without locals this is the paper's loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.contrastive import nt_xent
from nolabel.methods import register
from nolabel.methods._siamese import (ADAMW_SMALL_BATCH, SiameseBranch, mean_over_pairs,
                                      size_default, spread_logs, spread_warnings, view_pairs)
from nolabel.methods.base import Method, RunShape, fill
from nolabel.view_presets import siamese_views


@dataclass
class SimCLRConfig:
    # Projection head g (Section 2.1, 4.2): one hidden layer (ReLU, BN) as wide as the
    # ResNet-50 features, output 128 (Fig. 8: the output size hardly matters).
    hidden_dim: int = 2048
    out_dim: int = 128
    # tau (Section 5.1, Table 5). None: 0.1 (ImageNet) from 96 px up; 0.5 below, the
    # CIFAR-10 value of Appendix B.9 and of the reference code's CIFAR-10 command.
    temperature: float | None = None
    # Colour distortion strength s (Appendix A): jitter (0.8s, 0.8s, 0.8s, 0.2s), p 0.8.
    # None: 1.0 from 96 px up, 0.5 below (CIFAR-10, Appendix B.9). No solarisation;
    # blur p 0.5 on both views (off below 64 px, as SimCLR does on CIFAR-10).
    color_strength: float | None = None
    # Hue strength of the jitter. None: 0.2 s, the paper's. 0.5 turns the whole hue circle,
    # which removes colour as a cue where objects differ only in shape (demo, BENCHMARKS.md).
    hue: float | None = None
    n_local_views: int = 0              # multi-crop locals (thesis 4.2.4); 0: the paper's two views
    # Smallest crop area of the two global views (Appendix A: random resized crop of (0.08, 1)).
    scale_min: float = 0.08


@register
class SimCLR(Method):
    name = "simclr"
    Config = SimCLRConfig
    # Paper (Section 2.2, Appendix B.1): LARS, lr 0.3 x batch/256, weight decay 1e-6, 10
    # warm-up epochs, cosine, batch 4096: --optim.optimizer=lars --optim.lr=0.3
    # --optim.weight_decay=1e-6. Default: AdamW for small batches (see ADAMW_SMALL_BATCH).
    default_optim = dict(ADAMW_SMALL_BATCH)
    # The small recipe (presets.apply_recipe): 65.1% k-NN (k=200) on CIFAR-10 in 60 minutes
    # on 2 CPU cores, +24.6 over raw pixels (BENCHMARKS.md, "Convergence in 60 minutes"):
    # temperature 0.2 (the paper's CIFAR-10 0.5 tied random init on the demo in a short run,
    # 0.2 gained 19 points, BENCHMARKS.md "The demo"), AdamW at 4x the ImageNet-ViT rate and
    # weight decay 1e-4 (the ResNet value of the SGD recipes) instead of 0.04.
    recipes = {"small": {"simclr.temperature": 0.2, "optim.lr": 2e-3, "optim.weight_decay": 1e-4}}
    encoder_prefix = "student.backbone"

    @classmethod
    def resolve_config(cls, cfg: SimCLRConfig, shape: RunShape) -> None:
        fill(cfg, "temperature", size_default(None, shape.image_size, 0.1, 0.5))
        fill(cfg, "hue", 0.2 * fill(cfg, "color_strength", size_default(None, shape.image_size, 1.0, 0.5)))

    def __init__(self, cfg: SimCLRConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.temperature = cfg.temperature
        self.color_strength = cfg.color_strength
        self.student = SiameseBranch(backbone, mlp(backbone.num_features, cfg.hidden_dim, cfg.out_dim,
                                                   n_layers=2, norm="bn"))

    def view_specs(self):
        s = self.color_strength
        return siamese_views(self.shape.image_size, self.cfg.n_local_views, scale=(self.cfg.scale_min, 1.0),
                             solarize=False, blur=0.5,
                             jitter_strength=(0.8 * s, 0.8 * s, 0.8 * s, self.cfg.hue))

    def training_step(self, views, info):
        feats, z = self.student(views)                                    # (V*B, D), (V, B, d)

        def pair_loss(a, b):
            positive_cos = F.cosine_similarity(z[a], z[b], dim=1).mean().detach()
            return nt_xent(z[a], z[b], self.temperature), {"positive_cos": positive_cos}

        loss, terms = mean_over_pairs(view_pairs(len(views), ordered=False, n_targets=self.n_global_views), pair_loss)
        return loss, {**terms, **spread_logs(feats, z, views[0].shape[0])}

    def health(self, epoch_means):
        return spread_warnings(epoch_means, self.student.backbone.num_features, self.cfg.out_dim)
