"""The fixed Sobel input layer of DeepCluster (thesis section 3.2.1, "Implementation
details"; ablation in 3.2.2): colour is removed and local contrast increased by
converting the image to grayscale and applying the two Sobel filters.

(B, 3, H, W) RGB -> (B, 2, H, W) = (horizontal, vertical) gradients of the grey image
``(R + G + B) / 3``, zero padding 1. No parameter is learned: the weights are buffers.
A backbone built with ``sobel=True`` applies it first and has a 2-channel stem, so it
still takes RGB images (evaluation, export and ``nolabel cluster`` need no special case).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# d/dx (columns) and d/dy (rows): [1 0 -1; 2 0 -2; 1 0 -1] and its transpose (Sobel & Feldman).
SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


class Sobel(nn.Module):
    """Grayscale then Sobel gradients: (B, 3, H, W) -> (B, 2, H, W). Fixed, no parameters."""

    out_channels = 2

    def __init__(self) -> None:
        super().__init__()
        kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None]                  # (2, 1, 3, 3)
        self.register_buffer("kernels", kernels, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Sobel expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        gray = x.mean(dim=1, keepdim=True)                                    # (B, 1, H, W)
        return F.conv2d(gray, self.kernels.to(gray.dtype), padding=1)        # (B, 2, H, W)
