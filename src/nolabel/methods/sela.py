"""SeLa-v2: self-labelling with optimal transport, improved as in thesis section 4.4.

SeLa [Asano et al., 2020] alternates a labelling step, an equipartitioned assignment of
the *whole dataset* to K clusters found by Sinkhorn-Knopp (the transport problem of
Eq. 4.4 solved over all N images instead of a batch), with a training step that
classifies every view of an image into its label. SeLa-v2 (4.4) adds SwAV's training
improvements: multi-crop, an MLP projection head, l2-normalised features and
prototypes with a temperature softmax, cosine learning rate, and several clusterings at
once (multi-clustering: one set of prototypes, "head", per clustering).

Labels are computed at the start of every ``label_every_epochs``-th epoch from centre
crops without augmentation (``Method.on_epoch_start``) and kept in a buffer, so a
checkpoint carries them and a run resumed mid-epoch uses the same labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.swav import normalize_prototypes_
from nolabel.methods import _clustering as C
from nolabel.methods import register
from nolabel.methods.base import Method, RunShape, StepInfo, fill, project_multicrop
from nolabel.methods.swav import SWAV_OPTIM
from nolabel.monitor import code_usage, embedding_collapse_warning, embedding_std, swav_collapse_warnings
from nolabel.ops.precision import autocast_off
from nolabel.ops.sinkhorn import sinkhorn_labels
from nolabel.view_presets import swav_views
from nolabel.views import ViewSpec, auto_blur

# What label_stats holds after a labelling pass: mean non-empty clusters per head, mean largest
# cluster over N/K, NMI of head 0's labels with the true labels (-1 without them).
LABEL_STAT_NAMES = ("label_clusters_used", "label_largest_cluster", "nmi_labels")


@dataclass
class SelaConfig:
    # Projection head and prototypes as SwAV (4.4 adds SwAV's "MLP projection head" and
    # "temperature-based softmax"; 4.2.5): 2048 -> 128 with BN, l2-normalised, tau 0.1.
    hidden_dim: int = 2048
    out_dim: int = 128
    n_heads: int = 3                     # multi-clustering (4.4; Asano et al. 2020): 3 x 3000, the
                                         # released DeepCluster-v2 setting of the SwAV code (SeLa used 10)
    n_prototypes: int | None = None      # K per head. None: 3000 (4.4, Table 4.5), but at most
                                         # n_images // 10 (at least 2) so clusters can hold ~10 images
    temperature: float = 0.1
    # Labelling (Asano et al. 2020): Q = P^lambda with P = softmax(Z / tau) and lambda = 25, i.e.
    # Sinkhorn on the cosines Z with eps = tau / lambda = 0.004, iterated to convergence. SwAV's
    # soft codes use 0.05 (4.2.5), but argmax labels of so smooth a Q are unbalanced when the
    # features are close (measured: cluster sizes 0.4-1.5x N/K against 0.8-1.15x at 0.004).
    sinkhorn_eps: float | None = None    # None: temperature / 25
    sinkhorn_iters: int = 100            # at most; stops once columns change by < 0.1%
    label_every_epochs: int = 1          # relabel before epochs 0, n, 2n, ... (DeepCluster-v2/SeLa-v2
                                         # relabel every epoch: 4.4 "obtained at the previous epoch")
    # Multi-crop (4.2.4, 4.2.5; 4.4 Fig. 4.2 trains SeLa-v2 with it): 2 globals + 6 locals.
    n_local_views: int = 6
    global_scale_min: float = 0.14
    local_scale_min: float = 0.05
    blur: bool | None = None             # None: off below 64 px (see view_presets.swav_views)


@register
class Sela(Method):
    name = "sela"
    Config = SelaConfig
    # The SwAV optimisation SeLa-v2 shares (4.4 "applying various training improvements"):
    # see swav.SWAV_OPTIM (LARS, lr 4.8 at batch 4096 = 0.3 per 256, cosine, wd 1e-6).
    default_optim = dict(SWAV_OPTIM)
    # The small recipe (presets.apply_recipe): the projection head's hidden layer 512 wide, as
    # SwAV's and DeepCluster-v2's small recipes (lightly's CIFAR-10 head). At ResNet-18 x0.25
    # the 2048-wide one held training at 0.90 of the bare backbone passes (0.96 at 512), and
    # after 312 steps the two gave the same k-NN (31.0 against 31.0; BENCHMARKS.md, "CPU speed").
    recipes = {"small": {"sela.hidden_dim": 512}}
    encoder_prefix = "backbone"

    @classmethod
    def check_config(cls, cfg: SelaConfig) -> None:
        C.check_labelling(cfg, cls.name)

    @classmethod
    def resolve_config(cls, cfg: SelaConfig, shape: RunShape) -> None:
        fill(cfg, "n_prototypes", C.default_k(shape.n_images, 3000))
        fill(cfg, "blur", auto_blur(shape.image_size, None))
        fill(cfg, "sinkhorn_eps", cfg.temperature / 25)

    def __init__(self, cfg: SelaConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.n_prototypes = k = cfg.n_prototypes
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, cfg.hidden_dim, cfg.out_dim, n_layers=2, norm="bn", act="relu")
        self.heads = nn.ModuleList(nn.Linear(cfg.out_dim, k, bias=False) for _ in range(cfg.n_heads))
        for head in self.heads:
            normalize_prototypes_(head.weight.data)
        # labels[h, i]: cluster of image i in clustering h (-1: not labelled). int32 halves what
        # DistributedDataParallel broadcasts with the buffers.
        self.register_buffer("labels", torch.full((cfg.n_heads, shape.n_images), -1, dtype=torch.int32))
        self.register_buffer("label_epoch", torch.tensor(-1))              # epoch of the last labelling
        # clusters used, largest / mean size, NMI of head 0's labels with the class labels (-1: none)
        self.register_buffer("label_stats", torch.zeros(len(LABEL_STAT_NAMES)))

    def view_specs(self) -> list[ViewSpec]:
        c = self.cfg
        return swav_views(self.shape.image_size, c.n_local_views, (c.global_scale_min, 1.0),
                          (c.local_scale_min, c.global_scale_min), c.blur)

    def _normalize_heads(self) -> None:
        for head in self.heads:
            normalize_prototypes_(head.weight.data)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (N,3,h,w) -> l2-normalised projections (N, out_dim)."""
        return F.normalize(self.projector(self.backbone(images)), dim=1)

    def on_epoch_start(self, epoch, data_pass):
        if epoch % self.cfg.label_every_epochs:
            return
        self._normalize_heads()
        eps = self.cfg.sinkhorn_eps
        z, index = data_pass(self.embed)                                   # (M, d), (M,)
        self.labels.fill_(-1)
        used, largest, label_nmi = 0.0, 0.0, -1.0
        for h, head in enumerate(self.heads):
            labels, _ = sinkhorn_labels(z, head.weight, eps, self.cfg.sinkhorn_iters)
            self.labels[h, index] = labels.to(self.labels.dtype)
            sizes = torch.bincount(labels, minlength=self.n_prototypes)
            used += float((sizes > 0).sum()) / len(self.heads)
            largest += float(sizes.max()) * self.n_prototypes / len(labels) / len(self.heads)
            if h == 0:
                label_nmi = C.label_nmi(C.true_labels(data_pass, index), labels)
        self.label_epoch.fill_(epoch)
        self.label_stats.copy_(torch.tensor([used, largest, label_nmi]))

    def training_step(self, views, info: StepInfo):
        if info.index is None:
            raise ValueError("sela looks up each image's label: the batch's dataset indices (info.index) are missing")
        self._normalize_heads()                                            # before every step, as SwAV (4.2.5)
        n_views, batch = len(views), views[0].shape[0]
        feats, z = project_multicrop(self.backbone, self.projector, views, l2=True)   # (V*B, D), (V, B, d)
        z = z.flatten(0, 1)                                                # (V*B, d)
        targets = self.labels[:, info.index.to(self.labels.device)].long()  # (H, B)
        losses, correct = [], torch.zeros((), device=z.device)
        for h, head in enumerate(self.heads):
            with autocast_off(z):                                          # cosine / tau logits: float32
                logits = head(z) / self.cfg.temperature                    # (V*B, K): every view predicts
            target = targets[h].repeat(n_views)                            # (V*B,)   its image's label
            losses.append(F.cross_entropy(logits.float(), target, ignore_index=-1))
            correct += (logits.argmax(1) == target).float().mean() / len(self.heads)
            if h == 0:
                used, usage_entropy = code_usage(logits[:batch].detach())
        loss = torch.stack(losses).mean()
        logs = {"label_accuracy": correct, "prototypes_used": used, "code_usage_entropy": usage_entropy,
                "label_epoch": self.label_epoch.float(), **C.stat_logs(self.label_stats, LABEL_STAT_NAMES),
                "emb_std": embedding_std(feats[:batch].detach().float())}
        return loss, logs

    def health(self, epoch_means):
        warnings = swav_collapse_warnings(epoch_means.get("loss"), math.log(self.n_prototypes),
                                          epoch_means.get("code_usage_entropy"))
        w = embedding_collapse_warning(epoch_means.get("emb_std"), self.backbone.num_features)
        return warnings + ([w] if w else [])
