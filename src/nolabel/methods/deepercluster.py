"""DeeperCluster (thesis section 3.3.1, Eqs. 3.3-3.4): DeepCluster with rotation x cluster
targets and a hierarchical loss.

Every ``reassign_every`` epochs the non-rotated centre-crop features of the whole dataset
are PCA-whitened and l2-normalised, split into m super-clusters by k-means, and each
super-cluster into (at most) k sub-clusters by k-means inside it. During training every
image is shown in its four rotations (``rotate4``): the super-class is (rotation,
super-cluster), 4m classes predicted by a linear layer V, and the sub-class is the
image's sub-cluster, predicted by the head W_s of its true super-class s (one of 4m heads
with k outputs; sub-clusters a super-cluster lacks are masked to -inf). The loss is
``losses.hierarchical.hierarchical_loss``. Both classifiers are re-initialised at every
reassignment, as DeepCluster's (no correspondence between clusterings).

Runs in one process with one set of heads (the thesis' per-group heads and group-wise
k-means are a distributed layout of the same computation). The optional RotNet
initialisation (3.3.1) is the loop's ``--model.init=ROTNET_RUN`` (a ``rotnet`` run or
export of the same backbone). Not done: inverse-size weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nolabel.losses.hierarchical import hierarchical_loss_terms, super_class_targets
from nolabel.methods import register
from nolabel.methods import _clustering as C
from nolabel.methods.base import Method, RunShape, StepInfo, fill
from nolabel.methods.deepcluster import reset_linear_, sobel_backbone
from nolabel.methods.rotnet import rotate4
from nolabel.monitor import embedding_std
from nolabel.view_presets import plain_views
from nolabel.views import ViewSpec


@dataclass
class DeeperClusterConfig:
    n_super: int = 4                 # m (3.3.1: "we typically use m = 4"), at most n_images // 10
    n_sub: int | None = None         # k per super-cluster; None: min(80000, n_images // (10 m)), >= 2 (3.3.1: 80k)
    pca_dim: int = 256               # whitening + l2 before clustering (3.3.1)
    kmeans_iters: int = 10           # 3.3.1: "k-means converges in 10 iterations"
    reassign_every: int = 3          # 3.3.1: "We reassign clusters every 3 epochs"
    sobel: bool = False
    scale_min: float = 0.08          # random sizes and aspect ratios + flips (3.3.1)


@register
class DeeperCluster(Method):
    name = "deepercluster"
    Config = DeeperClusterConfig
    # 3.3.1: SGD with momentum and weight decay, constant lr 0.1 (batch 3072, here per 256);
    # weight decay 1e-5 as DeepCluster (the thesis gives no value).
    default_optim = {"optimizer": "sgd", "lr": 0.1, "min_lr": 0.1, "weight_decay": 1e-5,
                     "weight_decay_end": 1e-5, "clip_grad": 0.0, "warmup_epochs": 0.0}
    encoder_prefix = "backbone"

    @classmethod
    def check_config(cls, cfg: DeeperClusterConfig) -> None:
        if cfg.n_super < 1 or cfg.reassign_every < 1:
            raise ValueError(f"deepercluster needs n_super >= 1 and reassign_every >= 1, got {cfg.n_super}, "
                             f"{cfg.reassign_every}")

    @staticmethod
    def super_clusters(cfg: DeeperClusterConfig, n_images: int) -> int:
        """m: the super-classes actually used (at least 10 images each)."""
        return max(1, min(cfg.n_super, n_images // 10))

    @classmethod
    def resolve_config(cls, cfg: DeeperClusterConfig, shape: RunShape) -> None:
        fill(cfg, "n_sub", C.default_k(shape.n_images // cls.super_clusters(cfg, shape.n_images), 80000))

    def __init__(self, cfg: DeeperClusterConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.m = m = self.super_clusters(cfg, shape.n_images)
        self.k = k = cfg.n_sub
        self.backbone = sobel_backbone(backbone, cfg.sobel)
        d = self.backbone.num_features
        self.super_head = nn.Linear(d, 4 * m)                              # V
        self.sub_heads = nn.Linear(d, 4 * m * k)                          # W_1..W_4m stacked
        self.register_buffer("super_labels", torch.full((shape.n_images,), -1, dtype=torch.int32))
        self.register_buffer("sub_labels", torch.full((shape.n_images,), -1, dtype=torch.int32))
        self.register_buffer("sub_valid", torch.ones(m, k, dtype=torch.bool))  # sub-cluster j exists in c
        self.register_buffer("label_epoch", torch.tensor(-1))
        self.register_buffer("cluster_stats", torch.zeros(len(C.STAT_NAMES)))  # of the super-clusters

    def view_specs(self) -> list[ViewSpec]:
        return plain_views(self.shape.image_size, self.cfg.scale_min)

    def on_epoch_start(self, epoch, data_pass):
        if epoch % self.cfg.reassign_every:
            return
        feats, index = data_pass(self.backbone)                            # non-rotated (M, D)
        x = C.whiten(feats, self.cfg.pca_dim)
        top = C.cluster(x, self.m, seed=epoch, n_iters=self.cfg.kmeans_iters)
        sub = torch.zeros(len(x), dtype=torch.long)
        self.sub_valid.zero_()
        for c in range(self.m):
            members = torch.nonzero(top.assignments == c).flatten()
            inner = C.cluster(x[members], min(self.k, len(members)), seed=epoch * self.m + c,
                              n_iters=self.cfg.kmeans_iters)
            sub[members] = inner.assignments
            self.sub_valid[c, :min(self.k, len(members))] = True
        previous = self.super_labels[index].long() if int(self.label_epoch) >= 0 else None
        self.cluster_stats.copy_(C.stats(top.assignments, self.m, previous, top.n_empty_fixed,
                                          C.true_labels(data_pass, index)))
        self.super_labels.fill_(-1)
        self.sub_labels.fill_(-1)
        self.super_labels[index] = top.assignments.to(self.super_labels)
        self.sub_labels[index] = sub.to(self.sub_labels)
        reset_linear_(self.super_head, seed=2 * epoch)
        reset_linear_(self.sub_heads, seed=2 * epoch + 1)
        self.label_epoch.fill_(epoch)

    def training_step(self, views, info: StepInfo):
        if info.index is None:
            raise ValueError("deepercluster looks up each image's clusters: info.index is missing")
        index = info.index.to(self.super_labels.device)
        if bool((self.super_labels[index] < 0).any()):
            raise ValueError("deepercluster: an image of the batch has no cluster (was on_epoch_start run?)")
        images, rotation = rotate4(views[0])                               # (4B,3,S,S), (4B,)
        feats = self.backbone(images)                                      # (4B, D)
        n_super = 4 * self.m
        super_logits = self.super_head(feats).float()                      # (4B, 4m)
        sub_logits = self.sub_heads(feats).float().view(-1, n_super, self.k)   # (4B, 4m, k)
        valid = self.sub_valid.repeat(4, 1)                                # (4m, k): s = r * m + c
        sub_logits = sub_logits.masked_fill(~valid, float("-inf")).transpose(0, 1)  # (4m, 4B, k)
        super_targets = super_class_targets(rotation, self.super_labels[index].long().repeat(4), self.m)
        sub_targets = self.sub_labels[index].long().repeat(4)              # same for the 4 rotations
        super_term, sub_term = hierarchical_loss_terms(super_logits, sub_logits, super_targets, sub_targets)
        logs = {"super_loss": super_term.detach(), "sub_loss": sub_term.detach(),
                "super_accuracy": (super_logits.argmax(1) == super_targets).float().mean(),
                "label_epoch": self.label_epoch.float(), **C.stat_logs(self.cluster_stats),
                "emb_std": embedding_std(feats.detach().float())}
        return super_term + sub_term, logs
