"""DeepCluster (thesis section 3.2.1) with the PIC alternative (3.2.2).

Alternates, every ``reassign_every`` epochs, (1) clustering the features of the whole
dataset, computed on centre crops without augmentation (``Method.on_epoch_start``'s
``data_pass``), PCA-reduced to 256 dimensions, whitened and l2-normalised, with k-means
(Eq. 3.2; or PIC, ``clustering: pic``), and (2) training the network to predict these
pseudo-labels with a linear classifier (Eq. 3.1), which is re-initialised at every
reassignment because consecutive clusterings have no correspondence.

Trivial solutions (3.2.1): empty clusters are re-seeded inside ``ops.kmeans``; the
balancing of unbalanced clusters is done by weighting each image's loss by the inverse
of its cluster's size (``ops.cluster_sampling.inverse_size_weights``), which the thesis
states is equivalent to sampling uniformly over pseudo-labels; the sampler form is not
used because the loop owns the data order.

Sobel (3.2.1, ablation 3.2.2): on by default; the backbone is rebuilt from its own spec
with ``sobel=True`` (a fixed grayscale + Sobel layer, 2-channel stem), so the encoder
still takes RGB images and exports and evaluates like any backbone.

Logged: NMI between consecutive assignments (Fig. 3.3b), NMI with the class labels
when the training data has them (Fig. 3.3a, ``nmi_labels``), cluster-size statistics.

The re-initialised classifier also starts with a fresh optimizer state (no momentum from
the previous clustering's classifier): ``reinitialised_parameters``, as the original code,
which rebuilt the classifier's optimizer at every reassignment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.backbones import build_backbone
from nolabel.methods import register
from nolabel.methods import _clustering as C
from nolabel.methods.base import Method, RunShape, StepInfo, fill
from nolabel.monitor import embedding_std
from nolabel.ops.cluster_sampling import inverse_size_weights
from nolabel.view_presets import plain_views
from nolabel.views import ViewSpec


def sobel_backbone(backbone: nn.Module, sobel: bool) -> nn.Module:
    """``backbone`` itself, or the same architecture rebuilt with the fixed Sobel input."""
    if not sobel or backbone.spec.get("sobel"):
        return backbone
    return build_backbone(**{**backbone.spec, "sobel": True})


@torch.no_grad()
def reset_linear_(layer: nn.Linear, seed: int, std: float = 0.01) -> None:
    """N(0, std) weights and zero bias from a private generator (the global RNG, and so
    exact resume, are untouched). std 0.01 as DeepCluster's released top layer."""
    g = torch.Generator().manual_seed(seed)
    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
    if layer.bias is not None:
        layer.bias.zero_()


@dataclass
class DeepClusterConfig:
    n_clusters: int | None = None    # None: min(10000, n_images // 10), >= 2 (3.2.1: k = 10000 on ImageNet)
    clustering: str = "kmeans"       # kmeans (3.2.1) | pic (3.2.2: 5-NN, sigma 0.2, alpha 1e-3)
    pca_dim: int = 256               # 3.2.1: PCA to 256, whitening, l2
    kmeans_iters: int = 20
    reassign_every: int = 1          # 3.2.1: every epoch
    sobel: bool = True               # 3.2.1 default on
    scale_min: float = 0.08          # random resized crop (Krizhevsky et al. 2012)


@register
class DeepCluster(Method):
    name = "deepcluster"
    Config = DeepClusterConfig
    # DeepCluster (Caron et al. 2018, implementation details): SGD, momentum 0.9, constant
    # lr 0.05 at batch 256, weight decay 1e-5.
    default_optim = {"optimizer": "sgd", "lr": 0.05, "min_lr": 0.05, "weight_decay": 1e-5,
                     "weight_decay_end": 1e-5, "clip_grad": 0.0, "warmup_epochs": 0.0}
    encoder_prefix = "backbone"

    @classmethod
    def check_config(cls, cfg: DeepClusterConfig) -> None:
        if cfg.reassign_every < 1 or cfg.clustering not in ("kmeans", "pic"):
            raise ValueError(f"deepcluster needs reassign_every >= 1 and clustering kmeans|pic, got "
                             f"{cfg.reassign_every} and {cfg.clustering!r}")

    @classmethod
    def resolve_config(cls, cfg: DeepClusterConfig, shape: RunShape) -> None:
        fill(cfg, "n_clusters", C.default_k(shape.n_images, 10000))

    def __init__(self, cfg: DeepClusterConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.n_clusters = k = cfg.n_clusters
        self.backbone = sobel_backbone(backbone, cfg.sobel)
        self.classifier = nn.Linear(self.backbone.num_features, k)
        self._reinitialised: list[nn.Parameter] = []       # set by on_epoch_start, taken by the loop
        self.register_buffer("labels", torch.full((shape.n_images,), -1, dtype=torch.int32))
        self.register_buffer("class_weights", torch.ones(k))
        self.register_buffer("label_epoch", torch.tensor(-1))
        self.register_buffer("cluster_stats", torch.zeros(len(C.STAT_NAMES)))

    def view_specs(self) -> list[ViewSpec]:
        return plain_views(self.shape.image_size, self.cfg.scale_min)

    def on_epoch_start(self, epoch, data_pass):
        if epoch % self.cfg.reassign_every:
            return
        feats, index = data_pass(self.backbone)                            # (M, D), (M,)
        x = C.whiten(feats, self.cfg.pca_dim)                             # (M, <=256)
        result = C.cluster(x, self.n_clusters, self.cfg.clustering, seed=epoch, n_iters=self.cfg.kmeans_iters)
        previous = self.labels[index].long() if int(self.label_epoch) >= 0 else None
        self.cluster_stats.copy_(C.stats(result.assignments, self.n_clusters, previous, result.n_empty_fixed,
                                          C.true_labels(data_pass, index)))
        self.labels.fill_(-1)
        self.labels[index] = result.assignments.to(self.labels)
        self.class_weights.copy_(inverse_size_weights(result.assignments, self.n_clusters))
        reset_linear_(self.classifier, seed=epoch)                         # no correspondence between epochs
        self._reinitialised = list(self.classifier.parameters())
        self.label_epoch.fill_(epoch)

    def reinitialised_parameters(self):
        fresh, self._reinitialised = self._reinitialised, []
        return fresh

    def training_step(self, views, info: StepInfo):
        if info.index is None:
            raise ValueError("deepcluster looks up each image's pseudo-label: info.index is missing")
        feats = self.backbone(views[0])                                    # (B, D)
        logits = self.classifier(feats).float()                            # (B, k)
        target = self.labels[info.index.to(self.labels.device)].long()    # (B,)
        known = target >= 0
        ce = F.cross_entropy(logits[known], target[known], reduction="none")
        loss = (self.class_weights[target[known]] * ce).mean()            # inverse-size weighted Eq. 3.1
        logs = {"label_accuracy": (logits.argmax(1) == target).float().mean(),
                "label_epoch": self.label_epoch.float(), **C.stat_logs(self.cluster_stats),
                "emb_std": embedding_std(feats.detach().float())}
        return loss, logs
