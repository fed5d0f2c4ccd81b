"""Which patches to hide, for masked image modelling.

Two samplers, both drawing every random number from torch's default CPU generator in a
fixed order (as the views do: ``torch.manual_seed`` reproduces them, a resumed run
continues them, CPU and CUDA runs get the same masks), then moving the result to ``device``:

- :func:`random_masking`: MAE's uniform random subset, exactly ``round(ratio * N)`` patches
  hidden in every image, a different subset per image (He et al. 2022, sec. 3 "Masking").
- :func:`block_masking`: BEiT's blockwise masking (Bao et al. 2022, Algorithm 1),
  which iBOT uses with a ratio drawn per image (:func:`sample_mask_ratios`).

Patches are numbered row-major over the (h, w) patch grid, as the ViT numbers its tokens.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def random_masking(batch: int, n_patches: int, ratio: float,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """MAE's masking: per image, a uniformly random set of ``round(ratio * n_patches)`` patches
    is hidden (sampling without replacement: the ranks of i.i.d. uniform noise).

    Returns ``keep``: int64 (B, n_keep) indices of the visible patches, ascending, and
    ``mask``: bool (B, N), True where hidden. Raises ValueError unless at least one patch is
    hidden and one stays visible.
    """
    n_masked = round(ratio * n_patches)
    if not 0 < n_masked < n_patches:
        raise ValueError(f"mask ratio {ratio} hides {n_masked} of {n_patches} patches: "
                         "at least one must be hidden and one visible")
    noise = torch.rand(batch, n_patches)                                   # CPU generator
    keep = noise.argsort(dim=1)[:, : n_patches - n_masked].sort(dim=1).values  # (B, n_keep)
    mask = torch.ones(batch, n_patches, dtype=torch.bool)
    mask.scatter_(1, keep, False)
    return keep.to(device), mask.to(device)


def sample_mask_ratios(batch: int, prob: float, low: float, high: float) -> Tensor:
    """iBOT's prediction ratio per image (Zhou et al. 2022, sec. 3, "Implementation"): with
    probability ``prob`` uniform in ``[low, high]``, else 0 (the image is not masked). float64 (B,)
    on the CPU."""
    if not 0.0 <= prob <= 1.0 or not 0.0 <= low <= high < 1.0:
        raise ValueError(f"need 0 <= prob <= 1 and 0 <= low <= high < 1, got {prob}, {low}, {high}")
    masked = torch.rand(batch, dtype=torch.float64) < prob
    ratios = low + (high - low) * torch.rand(batch, dtype=torch.float64)
    return torch.where(masked, ratios, torch.zeros_like(ratios))


def block_masking(ratios: Tensor, grid: tuple[int, int], min_block: int = 4,
                  aspect: tuple[float, float] = (0.3, 1 / 0.3), max_rounds: int = 100,
                  device: torch.device | str | None = None) -> Tensor:
    """BEiT's blockwise masking (Algorithm 1), for a batch at once: image b gets rectangular
    blocks until at least ``T_b = round(ratios[b] * N)`` patches are hidden. Each round a
    block of area ``s ~ U(min(min_block, T_b - |M_b|), T_b - |M_b|)`` patches and aspect
    ratio ``r`` is placed uniformly in the grid, ``a = round(sqrt(s r))`` rows by
    ``b = round(sqrt(s / r))`` columns (clipped to the grid), and OR-ed into the mask.

    Differences from the paper, for small grids: BEiT's smallest block is 16 patches of a
    14 x 14 grid (8%); ``min_block`` (4 by default, 6% of an 8 x 8 grid) replaces it, and a
    block is never asked for more patches than are still missing, so a small target is met
    with small blocks rather than overshot by a 16-patch one. ``r`` is drawn log-uniformly in
    ``aspect`` (the paper writes Rand(0.3, 1/0.3); log-uniform makes tall and wide blocks
    equally likely, as RandomResizedCrop's ratio). Overlaps and rounding can overshoot T_b by
    part of one block; after ``max_rounds`` rounds the masks are returned as they are.

    ratios: (B,) in [0, 1); grid: (h, w). Returns bool (B, h * w), True where hidden.
    """
    h, w = grid
    n = h * w
    batch = ratios.shape[0]
    target = torch.round(ratios.double().cpu() * n)                       # (B,) T_b
    mask = torch.zeros(batch, h, w, dtype=torch.bool)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(max_rounds):
        missing = target - mask.flatten(1).sum(dim=1)                      # (B,)
        todo = missing > 0
        if not bool(todo.any()):
            break
        missing = missing.clamp(min=1.0)
        smallest = missing.clamp(max=float(min_block))
        area = smallest + (missing - smallest) * torch.rand(batch, dtype=torch.float64)
        r = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(batch, dtype=torch.float64))
        bh = torch.round(torch.sqrt(area * r)).clamp(1, h)                  # block rows
        bw = torch.round(torch.sqrt(area / r)).clamp(1, w)                  # block columns
        top = torch.floor(torch.rand(batch, dtype=torch.float64) * (h - bh + 1))
        left = torch.floor(torch.rand(batch, dtype=torch.float64) * (w - bw + 1))
        block = ((rows >= top.view(-1, 1, 1)) & (rows < (top + bh).view(-1, 1, 1))
                 & (cols >= left.view(-1, 1, 1)) & (cols < (left + bw).view(-1, 1, 1)))   # (B, h, w)
        mask |= block & todo.view(-1, 1, 1)
    return mask.flatten(1).to(device)


def scatter_visible(visible: Tensor, keep: Tensor, n_patches: int, fill: Tensor) -> Tensor:
    """The full token sequence from the visible ones: (B, n, D) tokens of patches ``keep``
    (int64 (B, n)) placed at their positions of a (B, N, D) sequence whose other rows are
    ``fill`` ((D,) or (1, 1, D), MAE's mask token; sec. 3 "MAE decoder"). Gradients reach
    both ``visible`` and ``fill``."""
    b, n, d = visible.shape
    full = fill.reshape(1, 1, d).to(visible.dtype).expand(b, n_patches, d)
    return full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), visible)
