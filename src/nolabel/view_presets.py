"""Every method's view preset: functions returning the list of :class:`views.ViewSpec` a
method trains on, globals first (``ViewSpec.is_global``; :func:`views.n_global` counts them).

- :func:`dino_views`: DINO's multi-crop (thesis 5.3.2, 5.6.7), also iBOT's;
- :func:`two_view_preset`: BYOL's pair of global views [Grill et al., 2020];
- :func:`siamese_views`: the two-branch methods' views (SimCLR, MoCo v2, BYOL, SimSiam,
  Barlow Twins, VICReg): :func:`two_view_preset` plus optional local crops (thesis 4.2.4);
- :func:`swav_views`: SwAV's multi-crop (thesis 4.2.4, 4.2.5), also SeLa-v2's and
  DeepCluster-v2's (4.4);
- :func:`plain_views`: crop and flip only (DeepCluster 3.2.1, DeeperCluster, RotNet, MAE);
- :func:`tile_views`: the one view jigsaw and relative location cut their grid from.

The crop sizes and blur rule they share (``local_size``, ``auto_blur``, ``SMALL_IMAGE``)
live in :mod:`nolabel.views` with the view generation itself.
"""
from __future__ import annotations

from dataclasses import replace

from nolabel.views import ViewSpec, auto_blur, local_size

# SimCLR's colour distortion of strength 1 (thesis 4.2.5: augmentations "exactly following
# the SimCLR implementation"): brightness, contrast, saturation 0.8, hue 0.2.
SIMCLR_JITTER = (0.8, 0.8, 0.8, 0.2)
LOCAL_SCALE = (0.05, 0.14)        # siamese local crops' area fraction: SwAV's multi-crop (thesis 4.2.5)
LOCAL_BLUR = 0.5                  # blur probability of siamese local crops (thesis 5.3.2, DINO's locals)

# MoCo v2's augmentation (Chen et al. 2020, Section 2, and its reference code), which
# SimSiam reuses (Chen and He 2021, Section 4): crops of (0.2, 1), jitter (0.4, 0.4, 0.4,
# 0.1) p 0.8, grayscale p 0.2, blur p 0.5 on both views, no solarisation.
MOCOV2_AUGMENTATION = {"scale": (0.2, 1.0), "solarize": False, "blur": 0.5, "jitter_strength": (0.4, 0.4, 0.4, 0.1)}


def dino_views(image_size: int, n_local: int = 6, s: float = 0.32, blur: bool | None = None,
               local_scale_min: float = 0.05, hue: float = 0.1) -> list[ViewSpec]:
    """DINO's multi-crop preset (thesis 5.3.2, 5.6.7): 2 globals then ``n_local`` locals.

    Global views are ``image_size`` pixels with area fraction in ``(s, 1)``; the first
    is always blurred, the second blurred with p 0.1 and solarised with p 0.2. Local
    views are ``local_size(image_size)`` pixels with area in ``(local_scale_min, s)``
    (0.05 in the thesis), blurred with
    p 0.5. Colour jitter is BYOL's (0.4, 0.4, 0.2, ``hue``), hue strength 0.1 by default. ``s`` defaults to 0.32, near the optimum ~0.3 of the thesis' ablation (5.6.7).

    ``blur=None`` turns the blur off for images smaller than 64 px: a Gaussian with
    sigma up to 2 px on a 32-px image (16-px locals) erases most of its content, and
    CIFAR-scale benchmarks (e.g. lightly's) drop the blur too.
    """
    if not 0.0 < local_scale_min < s < 1.0:
        raise ValueError(f"need 0 < local_scale_min ({local_scale_min}) < s ({s}) < 1")
    if n_local < 0:
        raise ValueError(f"n_local must be >= 0, got {n_local}")
    on = auto_blur(image_size, blur)
    jitter = (0.4, 0.4, 0.2, hue)
    specs = [
        ViewSpec(image_size, (s, 1.0), blur=1.0 if on else 0.0, jitter_strength=jitter),
        ViewSpec(image_size, (s, 1.0), blur=0.1 if on else 0.0, solarize=0.2, jitter_strength=jitter),
    ]
    if n_local > 0:
        specs.append(
            ViewSpec(local_size(image_size), (local_scale_min, s), count=n_local, blur=0.5 if on else 0.0,
                     is_global=False, jitter_strength=jitter)
        )
    return specs


def two_view_preset(
    image_size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    blur: bool | None = None,
    solarize: bool = True,
) -> list[ViewSpec]:
    """BYOL's pair of global views [Grill et al., 2020]: same crop/flip/jitter/grayscale,
    blur p 1.0 and 0.1, solarisation p 0.0 and 0.2 (``solarize=False`` -> none).
    ``blur=None`` is automatic as in :func:`dino_views` (off below 64 px)."""
    on = auto_blur(image_size, blur)
    return [
        ViewSpec(image_size, scale, blur=1.0 if on else 0.0),
        ViewSpec(image_size, scale, blur=0.1 if on else 0.0, solarize=0.2 if solarize else 0.0),
    ]


def siamese_views(image_size: int, n_local: int = 0, scale: tuple[float, float] = (0.08, 1.0),
                  solarize: bool = True, blur: float | None = None,
                  jitter_strength: tuple[float, float, float, float] | None = None) -> list[ViewSpec]:
    """Two global views of ``image_size`` px, then ``n_local`` local views (multi-crop,
    thesis 4.2.4; Fig. 4.2 and Table 5.16 apply it to SimCLR, MoCo v2 and BYOL).

    The globals are :func:`two_view_preset` (BYOL's augmentations: blur p 1.0 and
    0.1, solarisation p 0 and 0.2) with area fraction ``scale``. ``solarize=False``
    drops solarisation; ``blur`` (a probability) replaces the asymmetric blur by the
    same probability on both views (SimCLR, MoCo v2: 0.5); ``jitter_strength``
    replaces the colour-jitter strengths. Blur stays off wherever the preset turns it
    off (below 64 px). Locals are ``views.local_size(image_size)`` px, area in
    ``LOCAL_SCALE``, the first global's colour augmentations, blur p 0.5, no solarisation.
    """
    if n_local < 0:
        raise ValueError(f"n_local_views must be >= 0, got {n_local}")
    specs = two_view_preset(image_size, scale, solarize=solarize)
    blur_on = specs[0].blur > 0                     # the preset decides whether blur suits this size
    changes: dict = {}
    if jitter_strength is not None:
        changes["jitter_strength"] = tuple(jitter_strength)
    if blur is not None and blur_on:
        changes["blur"] = blur
    specs = [replace(s, **changes) for s in specs]
    if n_local > 0:
        specs.append(replace(specs[0], size=local_size(image_size), scale=LOCAL_SCALE, count=n_local,
                             blur=LOCAL_BLUR if blur_on else 0.0, solarize=0.0, is_global=False))
    return specs


def swav_views(image_size: int, n_local: int = 6, global_scale: tuple[float, float] = (0.14, 1.0),
               local_scale: tuple[float, float] = (0.05, 0.14), blur: bool | None = None) -> list[ViewSpec]:
    """SwAV's multi-crop (4.2.4, 4.2.5): 2 global views of ``image_size`` pixels at area
    ``global_scale`` and ``n_local`` local views of ``local_size(image_size)`` pixels (224 ->
    96, as 4.2.5) at ``local_scale``; flip, SimCLR colour jitter (p 0.8), grayscale (p 0.2)
    and Gaussian blur (p 0.5) on every crop. ``blur=None``: off below 64 px, the rule of
    :func:`dino_views` (a sigma of up to 2 px erases a 16-px local crop). SeLa-v2 and
    DeepCluster-v2 train on it too (4.4)."""
    on = auto_blur(image_size, blur)
    common = {"jitter_strength": SIMCLR_JITTER, "blur": 0.5 if on else 0.0}
    specs = [ViewSpec(image_size, global_scale, count=2, **common)]
    if n_local > 0:
        specs.append(ViewSpec(local_size(image_size), local_scale, count=n_local, is_global=False, **common))
    return specs


def plain_views(image_size: int, scale_min: float = 0.08) -> list[ViewSpec]:
    """DeepCluster's augmentation (3.2.1): random resized crop and horizontal flip only.
    DeeperCluster (3.3.1) and RotNet train on it too, and MAE (A.1, Table 1f: colour
    jitter lowers accuracy) with its own ``scale_min``."""
    return [ViewSpec(image_size, (scale_min, 1.0), count=1, jitter=0.0, grayscale=0.0)]


def tile_views(image_size: int, scale_min: float, grayscale: float) -> list[ViewSpec]:
    """The one view a 3x3 grid of tiles is cut from: area ``(scale_min, 1)``, flips, BYOL's
    colour jitter (p 0.8) and grayscale p ``grayscale``, which breaks the colour cues
    (chromatic aberration) the jigsaw (Noroozi and Favaro 2016, Section 3.3) and relative
    location (Doersch et al. 2015, Section 3.1) would otherwise solve their task from."""
    return [ViewSpec(image_size, (scale_min, 1.0), grayscale=grayscale)]
