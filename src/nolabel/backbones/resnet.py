"""ResNet trunks (He et al. 2016) without the classification layer: resnet18, resnet50.

Layout: stem -> 4 stages (strides 1, 2, 2, 2; channels c, 2c, 4c, 8c times the block's
expansion, c = round(64 * width)) -> global average pool. Two stems:

* ImageNet stem (``small_stem=False``): 7x7 conv stride 2 + 3x3 max-pool stride 2, total
  stride 32 (224 px -> 7x7 last-stage maps).
* Small stem (``small_stem=True``): one 3x3 conv stride 1, no max-pool, total stride 8
  (32 px -> 4x4 maps), the usual CIFAR / STL adaptation.

``small_stem=None`` picks the small stem when ``image_size <= 64``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from nolabel.backbones.registry import register
from nolabel.backbones.sobel import Sobel
from nolabel.backbones.resnet_blocks import BasicBlock, Bottleneck

Block = type[BasicBlock] | type[Bottleneck]

SMALL_STEM_MAX_SIZE = 64
"""``small_stem=None`` means small stem for ``image_size <= SMALL_STEM_MAX_SIZE``."""


def resolve_small_stem(small_stem: bool | None, image_size: int) -> bool:
    """The stem choice: ``small_stem`` if given, else ``image_size <= 64``."""
    if small_stem is None:
        return image_size <= SMALL_STEM_MAX_SIZE
    return bool(small_stem)


class ResNet(nn.Module):
    """ResNet trunk: (B, 3, H, W) normalised images -> (B, num_features) pooled features.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in each of the 4 stages.
        name: registry name, recorded in ``spec``.
        image_size: the training image size; only used to resolve ``small_stem=None``
            (any input size at least the total stride works).
        width: channel multiplier; the stem has ``round(64 * width)`` channels.
        small_stem: see the module docstring; None = auto from ``image_size``.
        zero_init_residual: set the last BN gamma of every residual branch to 0, so each
            block starts as the identity (Goyal et al. 2017).

    Attributes:
        num_features: D = 8 * round(64 * width) * expansion (512 for resnet18, 2048 for resnet50).
        spec: ``{"name", "image_size", "width", "small_stem", "zero_init_residual"}``, resolved
            values, such that ``build_backbone(**spec)`` rebuilds this architecture.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        name: str = "resnet",
        image_size: int = 224,
        width: float = 1.0,
        small_stem: bool | None = None,
        zero_init_residual: bool = False,
        sobel: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {list(layers)}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        base = int(round(64 * width))
        if width <= 0 or base < 1:
            raise ValueError(f"width must give at least one stem channel (64 * width >= 0.5), got {width}")
        self.small_stem = resolve_small_stem(small_stem, image_size)

        # Optional fixed Sobel input (DeepCluster, thesis 3.2.1): RGB in, 2 gradient channels to the stem.
        self.sobel: nn.Module = Sobel() if sobel else nn.Identity()
        in_chans = Sobel.out_channels if sobel else 3
        # Stem: (B, 3, H, W) -> (B, base, H/s, W/s), s = 1 (small) or 4 (ImageNet).
        if self.small_stem:
            self.conv1 = nn.Conv2d(in_chans, base, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, base, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)

        in_channels = base
        stages = []
        for i, num_blocks in enumerate(layers):
            channels = base * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(in_channels, channels, stride if j == 0 else 1))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.num_features: int = in_channels
        self.spec: dict = {
            "name": name,
            "image_size": int(image_size),
            "width": float(width),
            "small_stem": self.small_stem,
            "zero_init_residual": bool(zero_init_residual),
        }
        if sobel:
            self.spec["sobel"] = True
        self._init_weights(zero_init_residual)

    @torch.no_grad()
    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming-normal (fan-out, ReLU) convs; BN gamma 1, beta 0; optional zero last gamma."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn.weight)

    def forward_maps(self, x: Tensor) -> Tensor:
        """Last-stage feature maps: (B, 3, H, W) -> (B, num_features, H/s, W/s), s = 8 or 32."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.sobel(x)))))  # (B, c, H/s0, W/s0)
        x = self.layer1(x)  # (B, c*e, ., .)
        x = self.layer2(x)  # (B, 2c*e, /2)
        x = self.layer3(x)  # (B, 4c*e, /4)
        return self.layer4(x)  # (B, 8c*e, /8)

    def forward(self, x: Tensor) -> Tensor:
        """Global-average-pooled last stage: (B, 3, H, W) -> (B, num_features)."""
        return self.forward_maps(x).mean(dim=(2, 3))


# name -> (block, blocks per stage, features at width 1, params at width 1) (He et al. 2016).
RESNET_DEPTHS = {"resnet18": (BasicBlock, (2, 2, 2, 2), 512, "11.18M"),
                 "resnet50": (Bottleneck, (3, 4, 6, 3), 2048, "23.51M")}


def _resnet_factory(name: str, block, layers, features: int, params: str):
    def factory(image_size: int = 224, *, width: float = 1.0, small_stem: bool | None = None,
                zero_init_residual: bool = False, sobel: bool = False) -> ResNet:
        return ResNet(block, layers, name=name, image_size=image_size, width=width, small_stem=small_stem,
                      zero_init_residual=zero_init_residual, sobel=sobel)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"{name}: {block.__name__} x {list(layers)}, {features} * width features "
                       f"({params} params at width 1).")
    return register(name)(factory)


resnet18, resnet50 = (_resnet_factory(n, *RESNET_DEPTHS[n]) for n in RESNET_DEPTHS)
