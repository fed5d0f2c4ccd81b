"""Pixel reconstruction of masked patches: MAE's loss (He et al. 2022, sec. 3,
"Reconstruction target").

Pure functions of tensors: the mask and the choice of target are arguments.
"""
from __future__ import annotations

import torch
from torch import Tensor

from nolabel.ops.precision import float32_region

NORM_PIX_EPS = 1e-6   # added to a patch's pixel variance before the square root


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Images (B, C, H, W) -> patches (B, N, p * p * C), N = (H/p)(W/p) in the ViT's row-major
    token order; the pixels of a patch in (row, column, channel) order."""
    b, c, height, width = images.shape
    p = patch_size
    if height % p or width % p:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {p}")
    h, w = height // p, width // p
    x = images.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)   # (B, h, w, p, p, C)
    return x.reshape(b, h * w, p * p * c)


def normalize_patches(patches: Tensor, eps: float = NORM_PIX_EPS) -> Tensor:
    """Each patch's pixels minus their mean, over their standard deviation (the population one,
    of all the patch's pixel values): MAE's normalised-pixel target (sec. 3, Table 1c).
    (..., P) -> (..., P)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, unbiased=False, keepdim=True)
    return (patches - mean) / torch.sqrt(var + eps)


@float32_region
def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """MAE's loss: mean squared error between predicted and true pixels, on the masked
    patches only (sec. 3: "we compute the loss only on masked patches, similar to BERT").

    pred, target: (B, N, P) pixels per patch (``target`` from :func:`patchify`); mask: bool
    (B, N), True where the patch was hidden from the encoder. With ``norm_pix`` the target of
    each patch is normalised by its own mean and std (:func:`normalize_patches`). Each masked
    patch's MSE is the mean over its P values; the loss is the mean over all masked patches of
    the batch. Returns a scalar (float32).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask "
                         f"{tuple(mask.shape)} must be (B, N, P), (B, N, P), (B, N)")
    target = target.detach()
    if norm_pix:
        target = normalize_patches(target)
    per_patch = (pred - target).pow(2).mean(dim=-1)           # (B, N)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)
