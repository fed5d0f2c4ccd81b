"""MoCo v2: momentum contrast with an MLP head and stronger augmentation (He, Fan, Wu,
Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning", 2020).

A query encoder (``student``: backbone + MLP head, trained) and a key encoder
(``teacher``: its EMA, momentum 0.999). A query must pick out the key of its image
among the keys of earlier batches, held in a first-in first-out queue
(InfoNCE, MoCo Eq. 1, :func:`nolabel.losses.contrastive.info_nce`). After each step the
keys of the first global view are enqueued (one key per image, gathered over
processes). The queue starts empty: the first step has no negatives and a loss of 0.

By default the loss is the published one-direction ``info_nce(q(view 2), k(view 1))``;
``symmetric=True`` adds ``info_nce(q(view 1), k(view 2))`` and averages (MoCo v3
symmetrises likewise), at twice the key-encoder cost.

Multi-crop (thesis Table 5.16: +1.8 linear for MoCo-v2 on ViT-S): local views are extra
queries; keys come only from global views (the teacher never sees locals), so every
local is paired with each key view's key; the loss is the mean over these pairs.

Not implemented: MoCo's shuffling BN (3.3). With a BatchNorm backbone the query and key
batch statistics come from the same images, a leak MoCo closes by shuffling samples
across GPUs; ViT backbones and the BN-free head have no such leak.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.contrastive import info_nce
from nolabel.methods import register
from nolabel.methods._siamese import (SiameseBranch, frozen_copy, mean_over_pairs, spread_logs, spread_warnings,
                                      view_pairs)
from nolabel.methods.base import Method, RunShape, fill
from nolabel.ops.queue import FeatureQueue
from nolabel.view_presets import MOCOV2_AUGMENTATION, siamese_views


@dataclass
class MoCoV2Config:
    # Head (MoCo v2, Section 2): 2-layer MLP, hidden 2048, ReLU, no BN; output 128 (MoCo 3.3).
    hidden_dim: int = 2048
    out_dim: int = 128
    temperature: float = 0.2            # MoCo v2, Table 1 (MoCo v1: 0.07)
    # K = 65536 keys (MoCo 4.1). None: 65536, capped at a tenth of the dataset rounded
    # down to a power of two, so the queue holds no stale key of the query's own image
    # (4096 on CIFAR-10's 50,000 images; 65536 on ImageNet).
    queue_size: int | None = None
    momentum: float = 0.999             # key encoder EMA, constant (MoCo 3.2; Table 4)
    symmetric: bool = False             # the published loss is one direction
    n_local_views: int = 0              # multi-crop locals as extra queries (thesis Table 5.16)


def default_queue_size(n_images: int) -> int:
    """65536, or the largest power of two not above ``n_images / 10`` (at least 1) if smaller."""
    cap = max(1, n_images // 10)
    return min(65536, 1 << (cap.bit_length() - 1))


@register
class MoCoV2(Method):
    name = "mocov2"
    Config = MoCoV2Config
    # MoCo v2 (Section 2, MoCo 4.1): SGD, momentum 0.9, lr 0.03 x batch/256, weight decay
    # 1e-4, cosine schedule without warm-up. It is a small-batch method (256), so the
    # paper's optimizer is kept on CPU too. With a ViT backbone, --optim.optimizer=adamw
    # --optim.lr=5e-4 --optim.weight_decay=0.04 is the usual choice (MoCo v3).
    default_optim = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4, "warmup_epochs": 0.0}
    # The small recipe (presets.apply_recipe): 58.8% k-NN (k=200; +18.4 over raw pixels) on
    # CIFAR-10 in 60 minutes on 2 CPU cores (BENCHMARKS.md, "Convergence in 60 minutes"): SimCLR's measured optimiser
    # (AdamW 2e-3 per 256, weight decay 1e-4, a 2-epoch warm-up), a key encoder that follows
    # faster (0.99, solo-learn's and lightly's CIFAR value: 0.999 averages over ~1,000 of the
    # run's ~6,000 steps) and the symmetric loss (both views as queries, for one more key-encoder
    # forward a step, as MoCo v3 and solo-learn's MoCo v2+ do).
    recipes = {"small": {"optim.optimizer": "adamw", "optim.lr": 2e-3, "optim.weight_decay": 1e-4,
                         "optim.warmup_epochs": 2.0, "mocov2.momentum": 0.99, "mocov2.symmetric": True}}
    encoder_prefix = "student.backbone"     # the query encoder (MoCo's linear evaluation)

    @classmethod
    def resolve_config(cls, cfg: MoCoV2Config, shape: RunShape) -> None:
        fill(cfg, "queue_size", default_queue_size(shape.n_images))

    def __init__(self, cfg: MoCoV2Config, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        head = mlp(backbone.num_features, cfg.hidden_dim, cfg.out_dim, n_layers=2)
        self.student = SiameseBranch(backbone, head)
        self.teacher = frozen_copy(self.student)
        self.queue = FeatureQueue(cfg.queue_size, cfg.out_dim)

    def view_specs(self):
        return siamese_views(self.shape.image_size, self.cfg.n_local_views, **MOCOV2_AUGMENTATION)

    def schedules(self, total_steps, steps_per_epoch):
        return {"teacher_momentum": lambda s: self.cfg.momentum}

    def ema_pairs(self):
        return [(self.student, self.teacher)]

    def training_step(self, views, info):
        n_keys = self.n_global_views if self.cfg.symmetric else 1
        feats, q = self.student(views)                                   # (V*B, D), (V, B, d)
        with torch.no_grad():
            _, k = self.teacher(views[:n_keys])                          # (n_keys, B, d)
        negatives = self.queue.features()                                # (M, d), M <= queue size

        def pair_loss(t, s):
            return info_nce(q[s], k[t], negatives, self.cfg.temperature)

        loss, terms = mean_over_pairs(view_pairs(len(views), ordered=True, n_targets=n_keys), pair_loss)
        n_negatives = len(self.queue)
        self.queue.push(k[0])
        return loss, {**terms, "negatives": n_negatives, **spread_logs(feats, q, views[0].shape[0])}

    def health(self, epoch_means):
        return spread_warnings(epoch_means, self.student.backbone.num_features, self.cfg.out_dim)
