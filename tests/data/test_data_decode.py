"""decode_image / to_square_uint8: every Pillow mode to RGB, EXIF, broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from nolabel.data import BadImageError, decode_image
from nolabel.data.decode import to_square_uint8


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gradient_rgb(width: int = 40, height: int = 30) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float64)
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :, 0] = x[None, :].astype(np.uint8)
    array[:, :, 1] = 100
    array[:, :, 2] = np.linspace(0, 255, height)[:, None].astype(np.uint8)
    return Image.fromarray(array, "RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_rgb_roundtrip(fmt: str) -> None:
    source = _gradient_rgb()
    image = decode_image(_encode(source, fmt), "x")
    assert image.mode == "RGB" and image.size == (40, 30)
    error = np.abs(np.asarray(image, dtype=int) - np.asarray(source, dtype=int)).mean()
    assert error < (3 if fmt == "JPEG" else 0.01)


def test_greyscale_and_bilevel() -> None:
    grey = Image.fromarray(np.full((10, 12), 77, dtype=np.uint8), "L")
    image = decode_image(_encode(grey, "PNG"), "g.png")
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (77, 77, 77)
    bilevel = Image.new("1", (8, 8), 1)
    assert decode_image(_encode(bilevel, "PNG"), "b.png").getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_is_composited_over_black() -> None:
    palette_image = Image.new("P", (8, 8), 0)
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    palette_image.putpixel((0, 0), 1)
    data = _encode(palette_image, "PNG", transparency=0)  # index 0 (red) is transparent
    image = decode_image(data, "p.png")
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (0, 255, 0)
    assert image.getpixel((5, 5)) == (0, 0, 0)


def test_rgba_alpha_composited_over_black() -> None:
    rgba = Image.new("RGBA", (4, 4), (200, 100, 50, 255))
    rgba.putpixel((1, 1), (200, 100, 50, 0))
    rgba.putpixel((2, 2), (200, 100, 50, 128))
    image = decode_image(_encode(rgba, "PNG"), "a.png")
    assert image.getpixel((0, 0)) == (200, 100, 50)
    assert image.getpixel((1, 1)) == (0, 0, 0)
    assert image.getpixel((2, 2)) == pytest.approx((100, 50, 25), abs=1)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    image = decode_image(_encode(cmyk, "JPEG", quality=95), "c.jpg")
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_16bit_png_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = decode_image(data, "deep.png")
    assert [image.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 1]


def test_float_image_scaled() -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    image = decode_image(_encode(Image.fromarray(values), "TIFF"), "f.tif")
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_applied() -> None:
    source = _gradient_rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _encode(source, "JPEG", exif=exif.tobytes())
    image = decode_image(data, "rotated.jpg")
    assert image.size == (20, 40)
    # after a clockwise turn the left column (dark red) becomes the top row
    top_red = np.asarray(image)[0, :, 0].mean()
    bottom_red = np.asarray(image)[-1, :, 0].mean()
    assert top_red < bottom_red


def _truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    whole = _encode(noisy, "JPEG", quality=90)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"hello, I am a text file\n" * 10, "not an image"),
    ("truncated", "truncated"),
])
def test_bad_files_raise_with_key(data, words: str) -> None:
    payload = _truncated_jpeg() if data == "truncated" else data
    with pytest.raises(BadImageError) as info:
        decode_image(payload, "some/dir/file.jpg")
    assert info.value.key == "some/dir/file.jpg"
    assert "some/dir/file.jpg" in str(info.value)
    assert words in info.value.reason


def test_truncated_rejected_even_if_global_flag_was_set() -> None:
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(BadImageError):
            decode_image(_truncated_jpeg(), "t.jpg")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_draft_hint_keeps_at_least_min_size() -> None:
    data = _encode(_gradient_rgb(400, 300), "JPEG")
    image = decode_image(data, "big.jpg", min_size=64)
    assert min(image.size) >= 64 and image.size[0] * 3 == image.size[1] * 4


def test_to_square_uint8_resizes_shorter_side_and_centre_crops() -> None:
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, 20:40] = 255  # white centre third
    tensor = to_square_uint8(Image.fromarray(array, "RGB"), 10)
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.uint8
    assert tensor.float().mean() > 240  # the crop is the white centre
    same = to_square_uint8(Image.fromarray(array[:, :20]), 20)
    assert torch.equal(same, torch.from_numpy(array[:, :20]).permute(2, 0, 1))
