"""SwAV: swapping assignments between views (thesis chapter 4, section 4.2).

A backbone, a projection MLP with l2-normalised output and K prototypes (a bias-free
linear layer whose rows are l2-normalised before every step). The codes of the global
views are computed online by Sinkhorn-Knopp equipartition (4.2.2), with a queue of
earlier features when the batch is small (4.2.3), and each is predicted from every
other view (Eq. 4.6, multi-crop 4.2.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nolabel.heads import mlp
from nolabel.losses.swav import normalize_prototypes_, swav_loss
from nolabel.methods import register
from nolabel.methods.base import Method, RunShape, StepInfo, fill, project_multicrop
from nolabel.monitor import code_usage, embedding_collapse_warning, embedding_std, swav_collapse_warnings
from nolabel.ops import dist
from nolabel.ops.precision import autocast_off, float32_region
from nolabel.ops.queue import FeatureQueue
from nolabel.ops.sinkhorn import sinkhorn_knopp
from nolabel.view_presets import swav_views
from nolabel.views import ViewSpec, auto_blur

QUEUE_USES = ("full", "filled_rows")    # SwavConfig.queue_use
# Thesis 4.2.5: LARS, lr 4.8 for batches of 4096, i.e. 0.3 per 256 under the loop's linear
# rule (lr x batch / 256 = 4.8 x batch / 4096), linear warm-up then cosine (the loop's default
# warm-up: 10 epochs from 100 epochs on, as 4.2.5); weight decay 1e-6, no clipping. The final
# lr 0.0048 of the released code is for batch 4096; the loop does not scale min_lr, so it is
# stated here for 256 (0.0048 x 256 / 4096), the batch the lr is given for.
SWAV_OPTIM = {"optimizer": "lars", "lr": 0.3, "min_lr": 3e-4, "weight_decay": 1e-6,
              "weight_decay_end": 1e-6, "clip_grad": 0.0}


@dataclass
class SwavConfig:
    # Projection head (4.2.5, "2-layer MLP" as SimCLR; 2048 hidden, 128 out with BN in the released
    # code); its output is l2-normalised.
    hidden_dim: int = 2048
    out_dim: int = 128
    n_prototypes: int = 3000            # K (4.4, Table 4.5: 3k-100k within 0.3; "we train SwAV with K = 3000")
    temperature: float = 0.1            # tau of Eq. 4.1 (4.2.5)
    sinkhorn_eps: float = 0.05          # epsilon of Prob. 4.4 (4.2.5)
    sinkhorn_iters: int = 3             # "using only 3 iterations is fast and sufficient" (4.2.2)
    freeze_prototypes_epochs: float = 1.0   # prototypes frozen during the first epoch (4.2.5)
    # Queue (4.2.3): "around 3K features", the last 15 batches of 256 = 3840, one queue per global
    # view. Used only when the global batch is smaller than the queue ("when working with small
    # batches"), from epoch queue_start_epoch on: pushed after each step from that epoch, and its
    # rows join the batch in Sinkhorn (their codes are discarded). 0 disables it.
    queue_size: int = 3840
    # When the queue's rows join Sinkhorn (the thesis does not say): "full" (the reference code:
    # `use_the_queue` turns true once the queue's last row is non-zero, i.e. once it has been
    # filled, and all its rows join from then on) | "filled_rows" (whatever rows it holds, from
    # the second step after queue_start_epoch on).
    queue_use: str = "full"
    queue_start_epoch: int | None = None  # None: 15 of 200 epochs as in the released code's batch-256
                                          # setting, i.e. round(0.075 * epochs), at least 1 (the first,
                                          # fastest-changing epoch never fills it)
    # Multi-crop (4.2.4, 4.2.5): 2 globals at (0.14, 1) and 6 locals at (0.05, 0.14).
    n_local_views: int = 6
    global_scale_min: float = 0.14
    local_scale_min: float = 0.05
    blur: bool | None = None            # None: off below 64 px (see view_presets.swav_views)


class SwavNetwork(nn.Module):
    """backbone -> projection MLP -> l2 normalisation -> prototypes (bias-free linear)."""

    def __init__(self, backbone: nn.Module, hidden_dim: int, out_dim: int, n_prototypes: int):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, hidden_dim, out_dim, n_layers=2, norm="bn", act="relu")
        self.prototypes = nn.Linear(out_dim, n_prototypes, bias=False)
        normalize_prototypes_(self.prototypes.weight.data)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """views: V tensors (B,3,h,w). Returns backbone features (V*B, D), l2-normalised
        projections (V*B, out_dim) and prototype scores (V, B, K)."""
        feats, z = project_multicrop(self.backbone, self.projector, views, l2=True)     # (V*B, D), (V, B, d)
        z = z.flatten(0, 1)
        with autocast_off(z):     # cosine scores for Sinkhorn (eps 0.05) and the softmax (tau 0.1): float32
            scores = self.prototypes(z)
        return feats, z, scores.reshape(len(views), views[0].shape[0], -1)


@register
class Swav(Method):
    name = "swav"
    Config = SwavConfig
    # Thesis 4.2.5 (see SWAV_OPTIM); SeLa-v2 and DeepCluster-v2 share it.
    default_optim = dict(SWAV_OPTIM)
    # The small recipe (presets.apply_recipe, 32-95 px): lightly's CIFAR-10 SwAV head (512 hidden,
    # 128 out, K = 512 prototypes, two 32-px crops, no queue: with K = 512 a batch of 256 already
    # spreads over the prototypes) trained with the optimiser that made SimCLR and MoCo v2 learn in
    # the CPU hour (AdamW 2e-3 per 256, weight decay 1e-4): 58.3% k-NN (k=200) on CIFAR-10 in 60
    # minutes on 2 CPU cores, +17.8 over raw pixels (BENCHMARKS.md, "Convergence in 60 minutes").
    # The thesis values (K 3000, 2+6 crops, queue 3840, LARS 0.3) are
    # `--recipe thesis`; with them short CPU runs sat at loss log K (BENCHMARKS.md, 312 steps).
    recipes = {"small": {"swav.hidden_dim": 512, "swav.n_prototypes": 512, "swav.n_local_views": 0,
                         "swav.queue_size": 0, "optim.optimizer": "adamw", "optim.lr": 2e-3,
                         "optim.weight_decay": 1e-4, "optim.weight_decay_end": 1e-4, "optim.min_lr": 0.0}}
    encoder_prefix = "network.backbone"

    @classmethod
    def check_config(cls, cfg: SwavConfig) -> None:
        if cfg.queue_use not in QUEUE_USES:
            raise ValueError(f"--swav.queue_use={cfg.queue_use!r}: choose from {', '.join(QUEUE_USES)}")

    @classmethod
    def resolve_config(cls, cfg: SwavConfig, shape: RunShape) -> None:
        fill(cfg, "queue_start_epoch", max(1, round(0.075 * shape.epochs)))
        fill(cfg, "blur", auto_blur(shape.image_size, None))

    def __init__(self, cfg: SwavConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.network = SwavNetwork(backbone, cfg.hidden_dim, cfg.out_dim, cfg.n_prototypes)
        self.queues = None                                   # one queue per global view (4.2.3)
        if cfg.queue_size > 0:
            self.queues = nn.ModuleList(FeatureQueue(cfg.queue_size, cfg.out_dim) for _ in range(self.n_global_views))
        self.queue_start_epoch = cfg.queue_start_epoch

    def view_specs(self) -> list[ViewSpec]:
        c = self.cfg
        return swav_views(self.shape.image_size, c.n_local_views, (c.global_scale_min, 1.0),
                          (c.local_scale_min, c.global_scale_min), c.blur)

    def frozen_parameters(self, info: StepInfo):
        if info.step < self.cfg.freeze_prototypes_epochs * info.steps_per_epoch:
            return [self.network.prototypes.weight]
        return []

    def _use_queue(self, batch: int, epoch: int) -> bool:
        return (self.queues is not None and batch * dist.world_size() < self.cfg.queue_size
                and epoch >= self.queue_start_epoch)

    def _queue_ready(self, v: int) -> bool:
        """Whether queue ``v`` joins Sinkhorn: with ``queue_use="full"`` (the reference code's
        ``use_the_queue``) only once it has been filled, all its rows then; with
        ``"filled_rows"`` as soon as it holds any."""
        queue = self.queues[v]
        return queue.is_full if self.cfg.queue_use == "full" else len(queue) > 0

    @torch.no_grad()
    @float32_region                                  # the queue's scores in float32, as the batch's
    def _codes(self, z: torch.Tensor, scores: torch.Tensor, n_code_views: int, use_queue: bool) -> tuple[torch.Tensor, int]:
        """Codes (V_c, B, K) of the first ``n_code_views`` views by Sinkhorn (4.2.2), each with
        the rows of its queue appended (4.2.3) once ``_queue_ready``. z: (V*B, out_dim); scores:
        (V, B, K). Returns the codes and the number of queue rows used per view (over all processes)."""
        batch = scores.shape[1]
        codes, used = [], 0
        for v in range(n_code_views):
            s = scores[v].detach().float()                                       # (B, K)
            if use_queue and self._queue_ready(v):
                queue = self.queues[v].features()                                # (Q, d), every process alike
                used = queue.shape[0]
                queued = queue @ self.network.prototypes.weight.detach().float().T  # (Q, K)
                # the queue is identical on every process: each passes its share only
                s = torch.cat([s, queued.tensor_split(dist.world_size())[dist.rank()]])
            # cosine scores (unit z, unit prototypes): |s| <= 1 lets Sinkhorn pick its domain unread
            codes.append(sinkhorn_knopp(s, self.cfg.sinkhorn_eps, self.cfg.sinkhorn_iters, max_abs=1.0)[:batch])
        if use_queue:
            for v in range(n_code_views):
                self.queues[v].push(z[v * batch:(v + 1) * batch])
        return torch.stack(codes), used

    def training_step(self, views, info):
        normalize_prototypes_(self.network.prototypes.weight.data)   # before every step (4.2.5)
        n_global = self.n_global_views                                      # 2 (swav_views)
        feats, z, scores = self.network(views)                     # (V*B, D), (V*B, d), (V, B, K)
        use_queue = self._use_queue(views[0].shape[0], info.epoch)
        codes, queue_rows = self._codes(z, scores, n_global, use_queue)    # (V_c, B, K), no gradient
        loss = swav_loss(scores, codes, self.cfg.temperature)
        used, usage_entropy = code_usage(codes)
        logs = {"prototypes_used": used, "code_usage_entropy": usage_entropy, "queue_rows": queue_rows,
                "emb_std": embedding_std(feats[:views[0].shape[0]].detach().float())}
        return loss, logs

    def health(self, epoch_means):
        warnings = swav_collapse_warnings(epoch_means.get("loss"), math.log(self.cfg.n_prototypes),
                                          epoch_means.get("code_usage_entropy"))
        w = embedding_collapse_warning(epoch_means.get("emb_std"), self.network.backbone.num_features)
        return warnings + ([w] if w else [])
