"""The built-in ``demo`` dataset: ten shape classes, one object per image.

Design ``shapes`` (the default since 2026-12-02): one object (circle, square,
triangle, ...) of a random colour at a random position and size (50%-85% of the
image side), turned by at most 30 degrees, on a flat background of another random
colour with mild pixel noise. Colour, position and size carry no class information,
so raw pixels and a random network score near chance under k-NN, while a feature
that has learned *shape* does well; two random crops of one image share its
shape, so a self-supervised method learns it within minutes on a CPU
(BENCHMARKS.md, "The demo"). Turning the objects by at most 30 degrees keeps a
class one shape: fully rotated (design ``textured``'s 180 degrees), the same
600 SimCLR steps reach 31.7% instead of 45.8% (objects of 35-70%).

Design ``textured`` (the shipped set until 2026-12-01, kept to reproduce the
benchmarks measured on it): any rotation, objects of 45%-85%, colours from a pool
of 8 and backgrounds from a pool of 16 textures (smooth noise, stripes, checkers,
gradients). No method beat its random initialisation on it within 5 CPU minutes.

Select a design with the spec option ``demo?design=NAME``; :data:`DESIGNS` holds
them, and a benchmark may register a variant of its own under a new name.

Objects are drawn at 4x resolution with Pillow and box-downsampled, which
antialiases their edges. Generation is deterministic: the same arguments give
byte-identical tensors (a ``numpy.random.Generator`` seeded from
``(seed, split)``; the global RNGs are never touched).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["DEMO_CLASSES", "DESIGNS", "DemoDesign", "generate_demo"]

DEMO_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "crescent", "arrow", "heart", "bar",
)
DEFAULT_SIZES = {"train": 4000, "test": 1000}
_SPLIT_CODES = {"train": 0, "test": 1}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class DemoDesign:
    """The generator's constants. ``background``: ``flat`` (one random colour) or
    ``texture`` (a pool of ``n_textures`` textures shared by every class and both
    splits, scaled about their mean by ``background_contrast``); ``noise``: the
    largest std of the per-pixel Gaussian noise (drawn per image in [0, noise]);
    ``palette``: 0 draws object colours uniformly in RGB (at least ``min_contrast``
    away from the background under the object when possible), N > 0 picks them from
    a shared pool of N colours; object diameter in [object_min, object_max] of the
    side; rotation uniform in the ``rotation`` range, in degrees."""

    background: str = "flat"
    background_contrast: float = 1.0
    n_textures: int = 16
    noise: float = 8.0
    palette: int = 0
    min_contrast: float = 80.0
    object_min: float = 0.5
    object_max: float = 0.85
    rotation: tuple[float, float] = (-30.0, 30.0)

    def __post_init__(self) -> None:
        if self.background not in ("flat", "texture"):
            raise ValueError(f"demo background must be 'flat' or 'texture', got {self.background!r}")
        if not 0 < self.object_min <= self.object_max <= 1:
            raise ValueError(f"demo object size needs 0 < min <= max <= 1, got {self.object_min}, {self.object_max}")


# Textured design: pools shared by every class and both splits, so a texture or colour
# says nothing about the class *and* nothing about which image it is. (With a unique
# texture per image, DINO learnt textures: k-NN at chance.)
DESIGNS: dict[str, DemoDesign] = {
    "shapes": DemoDesign(),
    "textured": DemoDesign(background="texture", palette=8, object_min=0.45, object_max=0.85,
                           rotation=(0.0, 360.0)),
}
DEFAULT_DESIGN = "shapes"


def _regular_polygon(corners: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    """(corners, 2) vertices of a regular polygon centred at the origin."""
    angles = phase + 2 * np.pi * np.arange(corners) / corners
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    angles = np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y], axis=1)
    points -= (points.max(0) + points.min(0)) / 2
    return points / np.abs(points).max()


def _shape_table() -> dict[str, list[tuple[np.ndarray, int]]]:
    """Each class as a list of (polygon (K, 2) in unit coordinates, fill 255/0), drawn in order."""
    circle = _regular_polygon(48)
    arm = 0.3
    cross = np.array([
        (-arm, -1), (arm, -1), (arm, -arm), (1, -arm), (1, arm), (arm, arm),
        (arm, 1), (-arm, 1), (-arm, arm), (-1, arm), (-1, -arm), (-arm, -arm),
    ])
    arrow = np.array([(-1, -0.22), (0.2, -0.22), (0.2, -0.65), (1, 0),
                      (0.2, 0.65), (0.2, 0.22), (-1, 0.22)])
    bar = np.array([(-1, -0.28), (1, -0.28), (1, 0.28), (-1, 0.28)])
    return {
        "circle": [(circle, 255)],
        "square": [(_regular_polygon(4, phase=np.pi / 4), 255)],
        "triangle": [(_regular_polygon(3), 255)],
        "star": [(_star(), 255)],
        "cross": [(cross, 255)],
        "ring": [(circle, 255), (0.55 * circle, 0)],
        "crescent": [(circle, 255), (0.85 * circle + np.array([0.45, 0.0]), 0)],
        "arrow": [(arrow, 255)],
        "heart": [(_heart(), 255)],
        "bar": [(bar, 255)],
    }


_SHAPES = _shape_table()


class _Canvas:
    """Pixel grids shared by all images of one size."""

    def __init__(self, size: int) -> None:
        coords = (np.arange(size) + 0.5) / size - 0.5  # in [-0.5, 0.5]
        self.size = size
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")  # (S, S) each


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _smooth_noise(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """Bicubic upsampling of a small grid of random colours -> (S, S, 3) float."""
    cells = int(rng.integers(2, 7))
    grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    big = Image.fromarray(grid, "RGB").resize((canvas.size, canvas.size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float64)


def _two_colour(rng: np.random.Generator, weight: np.ndarray) -> np.ndarray:
    """Blend two random colours by ``weight`` (S, S) in [0, 1] -> (S, S, 3)."""
    first, second = _random_colour(rng), _random_colour(rng)
    return first + weight[:, :, None] * (second - first)


def _projection(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along a random direction and across it, both (S, S)."""
    angle = rng.uniform(0, np.pi)
    along = canvas.x * np.cos(angle) + canvas.y * np.sin(angle)
    across = -canvas.x * np.sin(angle) + canvas.y * np.cos(angle)
    return along, across


def _stripes(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    along, _ = _projection(rng, canvas)
    cycles = rng.uniform(1.5, 6.0)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * along + rng.uniform(0, 2 * np.pi))
    sharpness = rng.uniform(1.0, 6.0)
    return _two_colour(rng, np.clip((wave - 0.5) * sharpness + 0.5, 0.0, 1.0))


def _checkers(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    along, across = _projection(rng, canvas)
    cell = rng.uniform(1 / 8, 1 / 3)
    offset = rng.uniform(0, cell, size=2)
    parity = (np.floor((along + offset[0]) / cell) + np.floor((across + offset[1]) / cell)) % 2
    return _two_colour(rng, parity)


def _gradient(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    along, _ = _projection(rng, canvas)
    return _two_colour(rng, np.clip(along / 1.42 + 0.5, 0.0, 1.0))


_TEXTURES = (_smooth_noise, _stripes, _checkers, _gradient)


def _texture(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """A random texture, (S, S, 3) float in [0, 255]."""
    first = _TEXTURES[int(rng.integers(len(_TEXTURES)))](rng, canvas)
    if rng.random() < 0.5:
        second = _TEXTURES[int(rng.integers(len(_TEXTURES)))](rng, canvas)
        first = first + rng.uniform(0.2, 0.6) * (second - first)
    return first


def _background(rng: np.random.Generator, canvas: _Canvas, pool: list[np.ndarray],
                design: DemoDesign) -> np.ndarray:
    """A flat random colour, or a texture of the pool circularly shifted and mirrored
    at random, plus pixel noise: (S, S, 3) float in [0, 255]."""
    if design.background == "flat":
        texture = np.broadcast_to(_random_colour(rng), (canvas.size, canvas.size, 3))
    else:
        texture = pool[int(rng.integers(len(pool)))]
        texture = np.roll(texture, tuple(rng.integers(0, canvas.size, size=2)), axis=(0, 1))
        if rng.random() < 0.5:
            texture = texture[:, ::-1]
        if design.background_contrast != 1.0:
            mean = texture.mean(axis=(0, 1), keepdims=True)
            texture = mean + design.background_contrast * (texture - mean)
    return texture + rng.normal(0.0, rng.uniform(0.0, design.noise), size=texture.shape)


def _object_alpha(rng: np.random.Generator, label: int, size: int, design: DemoDesign) -> np.ndarray:
    """Antialiased coverage (S, S) in [0, 1] of one randomly placed object of class ``label``."""
    big = size * _SUPERSAMPLE
    radius = rng.uniform(design.object_min, design.object_max) * big / 2
    centre = rng.uniform(radius, big - radius, size=2)
    angle = np.deg2rad(rng.uniform(*design.rotation))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    for polygon, fill in _SHAPES[DEMO_CLASSES[label]]:
        points = polygon @ rotation.T * radius + centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
    small = layer.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _object_colour(rng: np.random.Generator, canvas: _Canvas, under: np.ndarray,
                   palette: np.ndarray | None, design: DemoDesign) -> np.ndarray:
    """The object's colour with a mild random shading, (S, S, 3). From a palette: of 3
    random palette colours, the one furthest from ``under`` (3,), the background under
    the object. Otherwise a uniform RGB colour, redrawn (at most 5 times) while it lies
    closer than ``design.min_contrast`` to ``under``."""
    if palette is not None:
        candidates = palette[rng.choice(len(palette), size=3, replace=False)]
        colour = candidates[np.argmax(np.linalg.norm(candidates - under, axis=1))]
    else:
        colour = _random_colour(rng)
        for _ in range(5):
            if np.linalg.norm(colour - under) >= design.min_contrast:
                break
            colour = _random_colour(rng)
    along, _ = _projection(rng, canvas)
    shade = 1.0 + rng.uniform(0.0, 0.5) * along  # +-25% brightness across the image
    return colour[None, None, :] * shade[:, :, None]


def _render(rng: np.random.Generator, label: int, canvas: _Canvas, pool: list[np.ndarray],
            palette: np.ndarray | None, design: DemoDesign) -> tuple[np.ndarray, np.ndarray]:
    """One image: uint8 (S, S, 3) and its bool object mask (S, S)."""
    background = _background(rng, canvas, pool, design)
    alpha = _object_alpha(rng, label, canvas.size, design)
    mask = alpha >= 0.5
    under = background[mask].mean(axis=0) if mask.any() else background.mean(axis=(0, 1))
    colour = _object_colour(rng, canvas, under, palette, design)
    image = background + alpha[:, :, None] * (colour - background)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def generate_demo(split: str = "train", n: int | None = None, size: int = 32,
                  seed: int = 0, design: str = DEFAULT_DESIGN) -> dict:
    """Generate the demo dataset deterministically.

    Args:
        split: ``"train"`` or ``"test"``; the two use different random streams.
        n: number of images; default 4000 for train, 1000 for test. Classes are
            balanced (``n // 10`` each, the first ``n % 10`` classes get one more)
            and appear in shuffled order.
        size: image side in pixels (at least 8).
        seed: base seed; the stream is derived from ``(seed, split)``.
        design: a name of :data:`DESIGNS`.

    Returns:
        dict with ``images`` uint8 (N, 3, S, S), ``labels`` int64 (N,),
        ``masks`` bool (N, S, S) (True on the object) and ``classes`` list[str].
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"demo split must be 'train' or 'test', got {split!r}")
    if design not in DESIGNS:
        raise ValueError(f"unknown demo design {design!r}: choose from {', '.join(DESIGNS)}")
    look = DESIGNS[design]
    count = DEFAULT_SIZES[split] if n is None else int(n)
    if count < 1:
        raise ValueError(f"demo needs n >= 1, got {count}")
    if size < 8:
        raise ValueError(f"demo image size must be >= 8, got {size}")
    if seed < 0:
        raise ValueError(f"demo seed must be >= 0, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split]]))
    num_classes = len(DEMO_CLASSES)
    labels = rng.permutation(np.arange(count) % num_classes)
    canvas = _Canvas(size)
    shared = np.random.default_rng(np.random.SeedSequence([seed, 99]))   # the same pools for both splits
    pool = [_texture(shared, canvas) for _ in range(look.n_textures)] if look.background == "texture" else []
    palette = shared.uniform(0, 255, size=(look.palette, 3)) if look.palette > 0 else None
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    masks = np.empty((count, size, size), dtype=bool)
    for i, label in enumerate(labels.tolist()):
        images[i], masks[i] = _render(rng, label, canvas, pool, palette, look)
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "masks": torch.from_numpy(masks),
        "classes": list(DEMO_CLASSES),
    }
