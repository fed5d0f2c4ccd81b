"""Models and images given as objects or single files rather than data specs.

- :func:`as_model`: a model spec, a :class:`FeatureModel`, or a backbone module (from
  :func:`nolabel.load_backbone`) as something :func:`.collection.load_collection` takes;
- :func:`square_images`: a uint8 tensor checked and resized to the model's side (the data
  layer's policy for in-memory images);
- :func:`read_image_file`: one image file decoded like every file of a collection
  (:func:`is_image_file`: a path to one, not to an archive or a list file);
- :func:`embed_images`: features of a tensor of images, batched.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from nolabel.data import BadImageError, decode_image, to_square_uint8
from nolabel.data.listfile import LIST_SUFFIXES
from nolabel.data.loading import resize_square
from nolabel.evaluate.models import FeatureModel
from nolabel.use.errors import UseError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_image_file(path) -> bool:
    """A path to one file that is not an archive nor a .txt/.csv list (those are collections)."""
    return isinstance(path, (str, Path)) and Path(path).expanduser().is_file() \
        and not Path(path).name.lower().endswith(ARCHIVE_SUFFIXES + LIST_SUFFIXES)


def as_model(model) -> str | FeatureModel:
    """A spec string (run folder, export folder, ``random:<backbone>``, ``pixels``) is kept
    for :func:`nolabel.evaluate.models.load_model_for_data`; a module becomes a
    :class:`FeatureModel` at the size its export config or architecture spec names."""
    if isinstance(model, FeatureModel):
        return model
    if isinstance(model, (str, Path)):
        return str(model)
    if isinstance(model, nn.Module):
        spec = getattr(model, "spec", {}) or {}
        size = (getattr(model, "export_config", {}) or {}).get("image_size") or spec.get("image_size")
        return FeatureModel(spec.get("name", type(model).__name__), model.eval(), size)
    raise UseError(f"model: got a {type(model).__name__}; give a run or export folder, random:<backbone>, "
                   "pixels, or a backbone module (nolabel.load_backbone)")


def square_images(images: Tensor, size: int, option: str) -> Tensor:
    """uint8 (B, 3, S', S') or (3, S', S') -> uint8 (B, 3, size, size)."""
    if not isinstance(images, Tensor):
        raise UseError(f"{option}: got a {type(images).__name__}; give a data spec, an image path, a list of "
                       "image paths or a uint8 tensor (B, 3, S, S)")
    if images.dim() == 3:
        images = images[None]
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise UseError(f"{option}: got a {images.dtype} tensor of shape {tuple(images.shape)}; give uint8 RGB "
                       "images (B, 3, S, S) with values 0..255, as the data layer produces them")
    if images.shape[-1] != images.shape[-2]:
        raise UseError(f"{option}: images of {images.shape[-2]}x{images.shape[-1]} are not square; crop them, or "
                       "pass the files' paths (they are resized and centre-cropped like a collection)")
    if images.shape[0] == 0:
        raise UseError(f"{option}: the tensor holds no images")
    return resize_square(images.cpu(), size)


def read_image_file(path: str | Path, size: int, option: str) -> Tensor:
    """uint8 (3, size, size) of one image file (shorter side resized, centre crop)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UseError(f"{option} {path}: cannot read it ({err.strerror or err}); give an image file or a "
                       "folder of images") from None
    try:
        return to_square_uint8(decode_image(data, str(path), min_size=size), size)
    except BadImageError as err:
        raise UseError(f"{option} {path}: {err.reason}; give an image file (JPEG, PNG, ...) or a folder of "
                       "images") from None


@torch.no_grad()
def embed_images(model: FeatureModel, images: Tensor, batch_size: int = 256,
                 device: str | torch.device = "cpu") -> Tensor:
    """float32 (B, D) features of uint8 (B, 3, S, S) images at the model's side, on CPU."""
    model.to(device)
    parts = [model.features(images[i:i + batch_size].to(device)).float().cpu()
             for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts)
