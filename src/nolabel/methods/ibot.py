"""iBOT: image BERT pre-training with an online tokenizer (Zhou et al. 2022).

DINO's self-distillation of the [CLS] token across views (thesis 5.3), plus masked image
modelling with the momentum teacher as the tokenizer (sec. 3.1): the student sees the global
views with blocks of patches replaced by a learned mask token, the teacher sees them whole,
and at every hidden patch the student's patch distribution matches the teacher's centred and
sharpened one of the same patch, L = L_[CLS] + L_MIM.

Built from DINO's pieces, imported rather than copied: the config (:class:`DinoConfig`, iBOT's
values where they differ), the head (:class:`DINOHead`), the multi-crop preset
(``Dino.view_specs``), the loss, centering and entropy (:mod:`nolabel.losses.dino`, with the
masked-patch loss next to DINO's), the schedules, the EMA teacher (``ema_pairs``) and the
collapse checks (``health``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from nolabel.heads import DINOHead
from nolabel.losses.dino import dino_loss, masked_patch_loss, teacher_entropy, updated_center
from nolabel.losses.koleo import koleo_loss
from nolabel.methods import register
from nolabel.methods.base import Method, RunShape, StepInfo, fill, forward_multicrop
from nolabel.methods.dino import Dino, DinoConfig, small_recipe
from nolabel.monitor import embedding_std
from nolabel.ops.masking import block_masking, sample_mask_ratios
from nolabel.ops.schedules import warmup_constant
from nolabel.views import SMALL_IMAGE, auto_blur


@dataclass
class IbotConfig(DinoConfig):
    """DINO's fields (commented in :class:`DinoConfig`), iBOT's values where they differ (sec. 3,
    "Implementation"), and the masked-image-modelling ones. The patch distillation uses DINO's student temperature,
    center momentum and teacher-temperature warm-up length."""
    out_dim: int | None = None          # K. None: 8192 (sec. 3) from 96 px up; 4096 below (as DINO)
    n_local_views: int = 10             # sec. 3, "Implementation": 2 global and 10 local crops
    # Patch head (sec. 3, "Implementation"): one head for [CLS] and patch tokens, found better than two.
    shared_head: bool = True
    patch_out_dim: int | None = None    # K of the patch head; None: out_dim (must be out_dim when shared)
    # Patch distillation (sec. 3.1): its own center and teacher temperature, warmed up 0.04 -> 0.07
    # over warmup_teacher_temp_epochs like the [CLS] one.
    teacher_patch_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    patch_loss_weight: float = 1.0      # L_[CLS] + patch_loss_weight * L_MIM (the paper: 1)
    # Masks (sec. 3, "Implementation"): BEiT's blockwise masking of the student's global views; an
    # image is masked with probability mask_prob, its ratio drawn in [mask_ratio_min, mask_ratio_max].
    mask_prob: float = 0.5
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5
    mask_min_block: int = 4             # smallest block, in patches (BEiT: 16 of a 14x14 grid; ops.masking)


class IbotNetwork(nn.Module):
    """Backbone + [CLS] head + patch head (None: the [CLS] head, shared) + the learned mask
    token that replaces the hidden patches' embeddings (sec. 3.1). The token lives here, not in
    the ViT, so the encoder that is evaluated and exported is a plain ViT."""

    def __init__(self, backbone: nn.Module, head: nn.Module, patch_head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head
        self.mask_token = nn.Parameter(torch.zeros(1, 1, backbone.embed_dim))

    def forward(self, views: list[torch.Tensor], n_global: int, masks: torch.Tensor | None = None):
        """views: V tensors (B,3,h,w), the ``n_global`` global ones first, of one size; masks: bool
        (n_global, B, N), True where a global view's patch is hidden, or None.
        Returns ([CLS] features of the global views (n_global*B, D), [CLS] logits (V, B, K),
        patch tokens of the global views (n_global, B, N, D))."""
        b = views[0].shape[0]
        tokens = self.backbone.forward_tokens(torch.cat(views[:n_global]), None if masks is None else
                                              masks.flatten(0, 1), self.mask_token)   # (gB, 1 + N, D)
        cls = tokens[:, 0]
        feats = cls if len(views) == n_global else torch.cat([cls, forward_multicrop(self.backbone, views[n_global:])])
        logits = self.head(feats).reshape(len(views), b, -1)
        return cls, logits, tokens[:, 1:].reshape(n_global, b, -1, tokens.shape[-1])

    def patch_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The patch head on tokens (..., D) -> (..., K_patch)."""
        head = self.head if self.patch_head is None else self.patch_head
        out = head(tokens.reshape(-1, tokens.shape[-1]))
        return out.reshape(*tokens.shape[:-1], out.shape[-1])


@register
class Ibot(Method):
    name = "ibot"
    requires_vit = True
    Config = IbotConfig
    # sec. 3, "Implementation": DINO's optimisation (AdamW, lr, weight-decay cosine, clipping)
    default_optim = dict(Dino.default_optim)
    # The small recipe (presets.apply_recipe): DINO's (SGD, a BN head with K = 2048, two global
    # crops over (0.14, 1) and no locals, teacher momentum from 0.99, teacher at 0.04 throughout,
    # a head 512 wide) and the patch teacher at 0.04 throughout too. The 512-wide head matters
    # more here: the shared head runs on every token of the teacher's views (64 per 32-px view at
    # patch 4), and at 2048 it cost as much as the ViT's forward. With the paper's values a
    # 312-step CPU run sat on the uniform plateau ([CLS] loss at log K; BENCHMARKS.md, "iBOT run
    # to the end").
    recipes = {"small": {**small_recipe("ibot"),
                         "ibot.teacher_patch_temp": 0.04, "ibot.warmup_teacher_patch_temp": 0.04}}
    encoder_prefix = "teacher.backbone"

    @classmethod
    def check_config(cls, cfg: IbotConfig) -> None:
        if not 0.0 <= cfg.mask_ratio_min <= cfg.mask_ratio_max < 1.0:
            raise ValueError(f"--ibot.mask_ratio_min/max: need 0 <= {cfg.mask_ratio_min} <= {cfg.mask_ratio_max} < 1")
        k, k_patch = cfg.out_dim, cfg.patch_out_dim
        if cfg.shared_head and k is not None and k_patch is not None and k_patch != k:
            raise ValueError(f"--ibot.patch_out_dim={k_patch} differs from --ibot.out_dim={k}: a shared head has "
                             "one output size (set --ibot.shared_head=false for two heads)")

    @classmethod
    def resolve_config(cls, cfg: IbotConfig, shape: RunShape) -> None:
        fill(cfg, "patch_out_dim", fill(cfg, "out_dim", 8192 if shape.image_size >= SMALL_IMAGE else 4096))
        fill(cfg, "warmup_teacher_temp_epochs", 0.1 * shape.epochs)
        fill(cfg, "blur", auto_blur(shape.image_size, None))
        cls.check_config(cfg)    # a given patch_out_dim against the chosen out_dim

    def __init__(self, cfg: IbotConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.out_dim = k = cfg.out_dim
        k_patch = cfg.patch_out_dim

        def head(out_dim: int) -> DINOHead:
            return DINOHead(backbone.num_features, out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers,
                            cfg.head_bn, cfg.norm_last_layer)

        self.student = IbotNetwork(backbone, head(k), None if cfg.shared_head else head(k_patch))
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("center", torch.zeros(k))
        self.register_buffer("patch_center", torch.zeros(k_patch))
        self.warmup_temp_epochs = cfg.warmup_teacher_temp_epochs

    # DINO's own methods, called on this object: its multi-crop views, its EMA pair (student,
    # teacher) and its collapse checks. They read ``cfg`` (a DinoConfig), ``shape``, ``out_dim``
    # and ``student.backbone``, which iBOT has as DINO does.
    view_specs = Dino.view_specs
    ema_pairs = Dino.ema_pairs
    health = Dino.health

    def schedules(self, total_steps: int, steps_per_epoch: int):
        """DINO's (teacher momentum, [CLS] teacher temperature) and the patch teacher temperature,
        warmed up over the same epochs."""
        c = self.cfg
        warmup = int(round(self.warmup_temp_epochs * steps_per_epoch))
        return {**Dino.schedules(self, total_steps, steps_per_epoch),
                "teacher_patch_temp": lambda s: warmup_constant(s, warmup, c.warmup_teacher_patch_temp,
                                                                c.teacher_patch_temp)}

    def frozen_parameters(self, info: StepInfo):
        if info.step >= self.cfg.freeze_last_layer_epochs * info.steps_per_epoch:
            return []
        heads = [self.student.head] + ([self.student.patch_head] if self.student.patch_head is not None else [])
        return [p for h in heads for p in h.last_layer.parameters()]

    def sample_masks(self, n_global: int, batch: int, view: torch.Tensor) -> torch.Tensor:
        """Blockwise masks of the global views: bool (n_global, B, N), an independent draw per image."""
        c = self.cfg
        p = self.student.backbone.patch_size
        grid = (view.shape[-2] // p, view.shape[-1] // p)
        ratios = sample_mask_ratios(n_global * batch, c.mask_prob, c.mask_ratio_min, c.mask_ratio_max)
        masks = block_masking(ratios, grid, c.mask_min_block, device=view.device)
        return masks.reshape(n_global, batch, -1)

    def training_step(self, views, info):
        c = self.cfg
        n_global, batch = self.n_global_views, views[0].shape[0]
        temp, patch_temp = info.values["teacher_temp"], info.values["teacher_patch_temp"]
        masks = self.sample_masks(n_global, batch, views[0])                        # (G, B, N)
        with torch.no_grad():
            teacher_feats, teacher_cls, teacher_tokens = self.teacher(views[:n_global], n_global)
            teacher_patch = self.teacher.patch_logits(teacher_tokens)              # (G, B, N, K_p)
        student_feats, student_cls, student_tokens = self.student(views, n_global, masks)
        student_patch = self.student.patch_logits(student_tokens[masks])          # (M, K_p)
        center = self.center if c.centering else torch.zeros_like(self.center)
        patch_center = self.patch_center if c.centering else torch.zeros_like(self.patch_center)
        cls_loss = dino_loss(student_cls, teacher_cls, center, temp, c.student_temp)
        patch_loss = masked_patch_loss(student_patch, teacher_patch, masks, patch_center, patch_temp, c.student_temp)
        loss = cls_loss + c.patch_loss_weight * patch_loss
        h = teacher_entropy(teacher_cls, center, temp)
        logs = {"cls_loss": cls_loss.detach(), "patch_loss": patch_loss.detach(),
                "teacher_entropy": h, "kl": cls_loss.detach() - h,
                "patch_entropy": teacher_entropy(teacher_patch, patch_center, patch_temp),
                "masked": masks.float().mean(),
                "emb_std": embedding_std(teacher_feats.float()), "teacher_temp": temp}
        if c.koleo_weight > 0:
            koleo = koleo_loss(student_feats.reshape(n_global, batch, -1))
            loss = loss + c.koleo_weight * koleo
            logs["koleo"] = koleo.detach()
        if c.centering:
            self.center.copy_(updated_center(self.center, teacher_cls, c.center_momentum))
            self.patch_center.copy_(updated_center(self.patch_center, teacher_patch, c.center_momentum))
        return loss, logs
