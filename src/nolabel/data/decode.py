"""Decode encoded image bytes into RGB images and square uint8 tensors.

Every dataset in ``nolabel`` goes through the same two steps:

1. :func:`decode_image` turns the bytes of one file into an RGB ``PIL.Image``
   (EXIF orientation applied, any Pillow mode converted to 8-bit RGB, fully
   decoded so that broken files fail here and nowhere else);
2. :func:`to_square_uint8` applies the one resizing policy of the library:
   *resize the shorter side to ``size`` (bicubic, antialiased), then centre-crop
   to ``size x size``*, and returns a ``uint8`` tensor of shape ``(3, size, size)``.

Broken input (empty, truncated, corrupt, not an image) raises
:class:`BadImageError`; callers skip such files and report them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["BadImageError", "decode_image", "to_square_uint8", "to_rgb"]

_EXIF_ORIENTATION = 0x0112


class BadImageError(Exception):
    """An item that cannot be decoded into an image.

    Attributes:
        key: path or archive member name of the item.
        reason: short human-readable reason ("empty file", "truncated or corrupt ...").
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self):  # keep (key, reason) when crossing process boundaries
        return (type(self), (self.key, self.reason))


def decode_image(data: bytes, key: str, min_size: int | None = None) -> Image.Image:
    """Decode the bytes of one image file into a fully loaded RGB image.

    Args:
        data: the encoded file content.
        key: path or member name, used in error messages.
        min_size: optional hint that the image will be resized so its shorter side
            is ``min_size``; JPEGs may then be decoded at a reduced DCT scale
            (never below ``min_size`` on either side), which is much faster for
            large photos.

    Returns:
        An RGB ``PIL.Image`` of the file's (EXIF-corrected) size. Alpha is
        composited over black; 16-bit and float modes are scaled to 8 bits.

    Raises:
        BadImageError: empty, truncated, corrupt or non-image data.
    """
    # Truncated files must fail, never be silently padded with grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if len(data) == 0:
        raise BadImageError(key, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            if min_size is not None and img.format == "JPEG" and min(img.size) >= 2 * min_size:
                img.draft(img.mode, (min_size, min_size))  # DCT scaling, never below min_size
            img.load()
    except UnidentifiedImageError:
        raise BadImageError(key, "not an image (format not recognised)") from None
    except Image.DecompressionBombError as err:
        raise BadImageError(key, f"image too large ({err})") from None
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise BadImageError(key, f"truncated or corrupt image ({err})") from None
    try:
        if img.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
            img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not discard valid pixels
        pass
    try:
        return to_rgb(img)
    except Exception as err:
        raise BadImageError(key, f"unsupported image mode {img.mode!r} ({err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    * ``RGB``: unchanged.
    * ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, palette without
      transparency: Pillow's own conversion.
    * alpha (``RGBA``, ``LA``, ``PA``, palette with transparency, ...):
      composited over black (fully transparent pixels become black).
    * 16-bit integer (``I;16*``) and ``I`` with values in ``[0, 65535]``:
      ``round(v / 257)`` so 65535 -> 255 and 32768 -> 128; ``I`` outside that
      range is min-max scaled.
    * ``F`` (float): values in ``[0, 1]`` are multiplied by 255, values in
      ``[0, 255]`` kept, anything else min-max scaled; NaN -> 0.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    bands = img.getbands()
    if "A" in bands or "a" in bands:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    return img.convert("RGB")


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map a (H, W) integer or float array to uint8 (H, W) following :func:`to_rgb`."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.ndim != 2:
        raise ValueError(f"expected a single band, got shape {values.shape}")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif mode != "F" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_square_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop to a square tensor.

    Resizing uses Pillow's bicubic filter, which is antialiased when shrinking.

    Args:
        img: an image (converted to RGB if it is not already).
        size: output side length in pixels.

    Returns:
        ``uint8`` tensor of shape ``(3, size, size)``.
    """
    if img.mode != "RGB":
        img = to_rgb(img)
    width, height = img.size
    if (width, height) != (size, size):
        scale = size / min(width, height)
        new_w = max(size, round(width * scale))
        new_h = max(size, round(height * scale))
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left = (new_w - size) // 2
        top = (new_h - size) // 2
        if (new_w, new_h) != (size, size):
            img = img.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)  # (S*S*3,)
    return pixels.view(size, size, 3).permute(2, 0, 1).contiguous()
