"""Residual blocks of He et al. 2016, "Deep Residual Learning for Image Recognition".

``BasicBlock`` (two 3x3 convs, ResNet-18/34) and ``Bottleneck`` (1x1 -> 3x3 -> 1x1 with
4x channel expansion, ResNet-50/101/152). Both compute ``relu(F(x) + shortcut(x))`` where the
shortcut is the identity, or a strided 1x1 conv + BN projection when the shape changes
(the paper's option B). Each exposes ``last_bn``, the BN closing the residual branch, so the
network can zero-initialise it (``zero_init_residual``).
"""
from __future__ import annotations

from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity if the shape is kept, else projection: strided 1x1 conv + BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs; (B, C_in, H, W) -> (B, channels, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm closing the residual branch."""
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, C, H', W')
        out = self.bn2(self.conv2(out))  # (B, C, H', W')
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4); (B, C_in, H, W) -> (B, 4*channels, H/stride, W/stride).

    The stride sits on the 3x3 conv (the "v1.5" placement used by the self-supervised
    ResNet-50 literature), not on the first 1x1 conv as in the original Caffe model;
    the parameter count is the same.
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BatchNorm closing the residual branch."""
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (B, C, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, C, H', W')
        out = self.bn3(self.conv3(out))  # (B, 4C, H', W')
        return self.relu(out + self.shortcut(x))
