"""Multi-crop view generation on whole batches (thesis 4.2.4, 5.3.2, 5.6.7).

Every view is a ``RandomResizedCrop`` (bicubic) followed by BYOL's photometric
augmentations [Grill et al., 2020], which DINO follows (thesis 5.3.2): horizontal
flip, colour jitter, grayscale, Gaussian blur and solarisation, then ImageNet
normalisation. The semantics are torchvision's (crop sampling, jitter formulas
and per-image random order of the four jitter steps, 0.2989/0.587/0.114
grayscale, reflect-padded blur kernel, solarisation threshold 0.5).

Everything runs batched on the input's device in plain torch. kornia 0.9 was
measured first (see ``MultiCrop``): it is correct for most steps, but its
``RandomResizedCrop`` crops and resizes image by image, its ``ColorJitter`` draws
one step order per batch (torchvision draws one per image) and needs an HSV
round trip, and ``RandomSolarize`` adds a random brightness shift and a random
threshold by default. Here the crop and resize of a whole batch is a single
``grid_sample`` call and the hue shift is done directly in RGB.

Randomness: every random number is drawn from torch's default CPU generator, in
a fixed order that depends only on the batch size and the specs, then moved to
the images' device. ``torch.manual_seed`` therefore makes views reproducible,
saving/restoring ``torch.get_rng_state()`` resumes them exactly, and CPU and
CUDA inputs receive the same crop boxes and factors.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
_GRAY = (0.2989, 0.587, 0.114)
# Solarisation inverts pixels >= 0.5 (BYOL); on uint8 inputs this is PIL's threshold 128.
SOLARIZE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view. Defaults are BYOL's augmentations (thesis 5.3.2).

    ``size`` is the output side; ``scale`` and ``ratio`` are RandomResizedCrop's area
    fraction and aspect-ratio ranges; ``flip``, ``jitter``, ``grayscale``, ``blur`` and
    ``solarize`` are per-image probabilities. ``jitter_strength`` is (brightness,
    contrast, saturation, hue) as in torchvision's ColorJitter. ``count`` views of this
    kind are drawn independently. ``is_global`` marks the views the teacher sees;
    in a :class:`MultiCrop` global specs must come before local ones.
    """

    size: int
    scale: tuple[float, float]
    count: int = 1
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: float = 0.8
    jitter_strength: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    grayscale: float = 0.2
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize: float = 0.0
    is_global: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        b, c, s, h = self.jitter_strength
        if min(b, c, s, h) < 0 or h > 0.5:
            raise ValueError(f"jitter_strength must be >= 0 with hue <= 0.5, got {self.jitter_strength}")
        for name in ("flip", "jitter", "grayscale", "blur", "solarize"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {p}")


def n_global(specs: Sequence[ViewSpec]) -> int:
    """The number of global views of a spec list (``count`` of each ``is_global`` spec): the
    views a teacher sees, whose codes or targets are computed; they come first."""
    return sum(s.count for s in specs if s.is_global)


# ----------------------------------------------------------------------------- sizes


# The side below which images count as small (CIFAR's 32, Tiny-ImageNet's 64) and methods take
# their small-image defaults and recipes. 96 px is the smallest side the thesis' recipes run
# at: its local crops (4.2.5, 5.3.2) and STL-10's images. Nothing in between has been measured.
SMALL_IMAGE = 96


def local_size(image_size: int) -> int:
    """Local crop side for a global side: 96/224 of it (thesis 5.6.7: 224 -> 96),
    rounded to the nearest multiple of 8, at least 8.

    32 -> 16, 64 -> 24, 96 -> 40, 128 -> 56, 224 -> 96.
    """
    return max(8, 8 * round(image_size * 96 / 224 / 8))


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side, about 10% of the image side (23 at 224, as in BYOL/SimCLR),
    at least 3 and never more than ``2 * size - 1`` (the limit of reflect padding)."""
    k = int(0.1 * size)
    k = max(3, k + 1 - k % 2)
    return min(k, 2 * size - 1)


def auto_blur(image_size: int, blur: bool | None) -> bool:
    """``blur`` if set, else on from 64 px up (a blur on 32-px crops erases their content)."""
    return image_size >= 64 if blur is None else bool(blur)


# ----------------------------------------------------------------------------- pixel ops


def _to_unit_float(images: Tensor) -> Tensor:
    """uint8 (B,3,H,W) -> float32 in [0, 1]; float inputs are assumed to be in [0, 1] already."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    return images.float()


def _normalize_(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def normalize(
    images_uint8: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """Evaluation path, no augmentation: uint8 (B,3,H,W) -> float32 (B,3,H,W), ``(x/255 - mean) / std``.

    Float inputs are taken to be in [0, 1] already."""
    x = _to_unit_float(images_uint8)
    return _normalize_(x.clone() if x is images_uint8 else x, mean, std)


def _gray(x: Tensor) -> Tensor:
    """(n,3,H,W) -> (n,1,H,W) luma."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    """clamp(f * a + (1 - f) * b, 0, 1) with ``f`` of shape (n,)."""
    f = f.view(-1, 1, 1, 1)
    return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    """Shift the HSV hue by ``f`` turns (torchvision's ``adjust_hue``), computed in RGB.

    With ``h6 = 6 * hue``, ``c = max - min`` and ``k_n = (n + h6) mod 6`` for n = 5, 3, 1
    (R, G, B), the HSV -> RGB map is ``max - c * clamp(min(k_n, 4 - k_n), 0, 1)``;
    value and saturation (``max`` and ``c``) do not change with the hue.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    c = maxc - minc
    inv = 1.0 / torch.where(c > 0, c, torch.ones_like(c))
    h6 = torch.where(maxc == r, (g - b) * inv, torch.where(maxc == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h6 = h6 + (6.0 * f + 6.0).view(-1, 1, 1)  # h6 in [-1, 5], shift in [-3, 3]: stays positive
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)
    t = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) - c.unsqueeze(1) * t


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def _gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur, one sigma per image, reflect padding (torchvision's kernel).

    x: (n,3,H,W); sigma: (n,) on x's device -> (n,3,H,W).
    """
    n, c, h, w = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, K)
    p = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (p, p, p, p), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.view(n, c, h, w)


# ----------------------------------------------------------------------------- random crop


def _sample_crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], attempts: int = 10
) -> Tensor:
    """torchvision's RandomResizedCrop.get_params for ``n`` images at once.

    Ten candidates per image (area fraction ~ U(scale), log aspect ~ U(log ratio));
    the first that fits is placed uniformly; if none fits, the centre crop clamped
    to ``ratio`` is used. Returns float64 (n, 4) boxes ``(top, left, h, w)`` in pixels (CPU).
    """
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, dtype=torch.float64))
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * torch.rand(n, attempts, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], ok.any(dim=1)
    pos = torch.rand(n, 2, dtype=torch.float64)
    top = torch.floor(pos[:, 0] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(pos[:, 1] * (width - w + 1)).clamp_(max=width - w)
    if not bool(found.all()):
        in_ratio = width / height
        if in_ratio < ratio[0]:
            fw, fh = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            fw, fh = round(height * ratio[1]), height
        else:
            fw, fh = width, height
        miss = ~found
        h[miss], w[miss] = float(fh), float(fw)
        top[miss], left[miss] = float((height - fh) // 2), float((width - fw) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _crop_grid(boxes: Tensor, flip: Tensor, height: int, width: int, size: int, like: Tensor) -> Tensor:
    """Sampling grid (n, size, size, 2) for ``grid_sample(align_corners=False)``, with ``like``'s
    dtype and device.

    Output pixel ``u`` of a crop ``[left, left + w)`` samples input pixel coordinate
    ``left + (u + 0.5) * w / size - 0.5``, the half-pixel convention of
    ``F.interpolate(crop, size, align_corners=False)``; flipped images read ``u`` mirrored.
    The per-axis coordinates (n, size) are computed in float64 on the CPU; only they
    are moved to the device.
    """
    top, left, h, w = boxes.unbind(1)
    u = torch.arange(size, dtype=torch.float64)
    ux = torch.where(flip.view(-1, 1), size - 1 - u, u)
    gx = (2 * left.view(-1, 1) + (2 * ux + 1) * (w / size).view(-1, 1)) / width - 1
    gy = (2 * top.view(-1, 1) + (2 * u + 1) * (h / size).view(-1, 1)) / height - 1
    gx = gx.to(device=like.device, dtype=like.dtype)
    gy = gy.to(device=like.device, dtype=like.dtype)
    n = boxes.shape[0]
    return torch.stack([gx.view(n, 1, size).expand(n, size, size), gy.view(n, size, 1).expand(n, size, size)], dim=-1)


# ----------------------------------------------------------------------------- module


def _subset(x: Tensor, mask: Tensor) -> Tensor | None:
    """Indices (on x's device) of the rows selected by a CPU bool mask, or None if empty."""
    idx = mask.nonzero().view(-1)
    return idx.to(x.device) if idx.numel() else None


class MultiCrop(nn.Module):
    """Random views of a batch of images, one output tensor per view.

    ``forward`` takes uint8 (B,3,S,S) images (any H, W; float in [0,1] also accepted) on
    any device and returns ``sum(spec.count)`` float32 tensors (B,3,size,size), in spec
    order (each spec expanded ``count`` times), clamped to [0,1] before normalisation
    with ``mean``/``std``. Every image of every view draws its own parameters.

    Per view: crop box + flip -> one bicubic ``grid_sample`` of the whole batch -> clamp
    -> colour jitter (p ``jitter``, the four steps in a random order per image) ->
    grayscale -> blur -> solarise -> normalise.

    Resampling is PyTorch's bicubic (a = -0.75, as ``F.interpolate``), without
    antialiasing; taps past a crop edge read the neighbouring image pixels (replicated
    at the image border). DINO's PIL pipeline uses a = -0.5 with antialiasing; the presets
    shrink crops by at most ~1.5x, where aliasing is mild. An exact PIL-style separable
    resize (two batched matmuls) was slower on CPU and is not used. Its speed against the
    same pipeline built from kornia ops: BENCHMARKS.md, "Speed of the pieces".
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        specs = list(specs)
        if not specs:
            raise ValueError("MultiCrop needs at least one ViewSpec")
        flags = [s.is_global for s in specs]
        if flags != sorted(flags, reverse=True):
            raise ValueError("global view specs must come before local ones")
        self.specs: tuple[ViewSpec, ...] = tuple(specs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def n_views(self) -> int:
        return sum(s.count for s in self.specs)

    @property
    def n_global_views(self) -> int:
        return n_global(self.specs)

    def extra_repr(self) -> str:
        return "\n".join(repr(s) for s in self.specs)

    @torch.no_grad()
    def forward(self, images: Tensor) -> list[Tensor]:
        """images: uint8 (B,3,H,W) -> list of ``n_views`` float32 (B,3,size,size)."""
        x = _to_unit_float(images)
        views = []
        for spec in self.specs:
            for _ in range(spec.count):
                v = self._view(x, spec)
                views.append(_normalize_(v, self.mean, self.std))
        return views

    def _view(self, x: Tensor, spec: ViewSpec) -> Tensor:
        """One view of the batch, float (B,3,size,size) in [0,1]. Draws all its random
        numbers first, on the CPU generator, in a fixed order."""
        n, _, height, width = x.shape
        boxes = _sample_crop_boxes(n, height, width, spec.scale, spec.ratio)
        flip = torch.rand(n) < spec.flip
        do_jitter = torch.rand(n) < spec.jitter
        b, c, s, h = spec.jitter_strength
        u = torch.rand(n, 4)
        factors = torch.stack(
            [max(0.0, 1 - b) + (1 + b - max(0.0, 1 - b)) * u[:, 0], 1 - c + 2 * c * u[:, 1],
             1 - s + 2 * s * u[:, 2], -h + 2 * h * u[:, 3]], dim=1,
        )
        order = torch.rand(n, 4).argsort(dim=1)
        do_gray = torch.rand(n) < spec.grayscale
        do_blur = torch.rand(n) < spec.blur
        lo, hi = spec.blur_sigma
        sigma = lo + (hi - lo) * torch.rand(n)
        do_sol = torch.rand(n) < spec.solarize

        grid = _crop_grid(boxes, flip, height, width, spec.size, like=x)
        v = F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)

        strengths = (b, c, s, h)
        for pos in range(4):
            for op, fn in enumerate(_JITTER_OPS):
                if strengths[op] == 0:
                    continue
                sel = do_jitter & (order[:, pos] == op)
                idx = _subset(v, sel)
                if idx is not None:
                    f = factors[sel, op].to(v.device, v.dtype)
                    v.index_copy_(0, idx, fn(v.index_select(0, idx), f))
        idx = _subset(v, do_gray)
        if idx is not None:
            v.index_copy_(0, idx, _gray(v.index_select(0, idx)).expand(-1, 3, -1, -1))
        idx = _subset(v, do_blur)
        if idx is not None:
            sig = sigma[do_blur].to(v.device, v.dtype)
            v.index_copy_(0, idx, _gaussian_blur(v.index_select(0, idx), sig, blur_kernel_size(spec.size)))
        idx = _subset(v, do_sol)
        if idx is not None:
            sub = v.index_select(0, idx)
            v.index_copy_(0, idx, torch.where(sub >= SOLARIZE_THRESHOLD, 1.0 - sub, sub))
        return v
