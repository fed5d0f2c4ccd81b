"""RotNet (thesis section 2.2.3; Gidaris et al., 2018): predict which of the four
rotations (0, 90, 180, 270 degrees) was applied to an image. Every image of the batch is
shown in all four rotations (as in the paper), and a linear classifier on the backbone's
pooled features predicts the rotation with a 4-way cross-entropy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.methods import register
from nolabel.methods.base import Method, RunShape, StepInfo
from nolabel.monitor import embedding_std
from nolabel.view_presets import plain_views
from nolabel.views import ViewSpec


def rotate4(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RotNet's 4 rotations (2.2.3) of square images: (B, C, S, S) -> ((4B, C, S, S) images
    rotated by 0, 90, 180, 270 degrees in that block order, (4B,) int64 rotation labels)."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotations need square images, got {tuple(images.shape[-2:])}")
    rotated = torch.cat([torch.rot90(images, r, dims=(2, 3)) for r in range(4)])
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


@dataclass
class RotNetConfig:
    scale_min: float = 0.08              # random resized crop + flip, no colour augmentation


@register
class RotNet(Method):
    name = "rotnet"
    Config = RotNetConfig
    # Gidaris et al. 2018: SGD, momentum 0.9, lr 0.1 (batch 192, here per 256), weight decay 5e-4.
    default_optim = {"optimizer": "sgd", "lr": 0.1, "min_lr": 0.0, "weight_decay": 5e-4,
                     "weight_decay_end": 5e-4, "clip_grad": 0.0}
    encoder_prefix = "backbone"

    def __init__(self, cfg: RotNetConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.num_features, 4)

    def view_specs(self) -> list[ViewSpec]:
        return plain_views(self.shape.image_size, self.cfg.scale_min)

    def training_step(self, views, info: StepInfo):
        images, rotation = rotate4(views[0])                               # (4B,3,S,S), (4B,)
        feats = self.backbone(images)                                      # (4B, D)
        logits = self.classifier(feats).float()                            # (4B, 4)
        loss = F.cross_entropy(logits, rotation)
        logs = {"rotation_accuracy": (logits.argmax(1) == rotation).float().mean(),
                "emb_std": embedding_std(feats.detach().float())}
        return loss, logs
