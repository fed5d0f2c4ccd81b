"""Frozen features cached on disk, one file per (model weights, data, image size, feature kind).

Feature kinds (``patch_tokens``):

* ``"none"`` (default): a ViT's [CLS] token, a ResNet's globally average-pooled last
  stage, or the normalised raw pixels for ``pixels``;
* ``"avg"``: a ViT's [CLS] token concatenated with the average of its output patch
  tokens (2D values; thesis 5.5.1 concatenates [CLS] and pooled patch tokens);
* ``"gem"``: the same with GeM pooling (p = 3) of the patch tokens, the copy-detection
  descriptor of thesis 5.5.1.

Images are used as the data layer gives them: shorter side resized to the image size,
centre crop, no augmentation, ImageNet normalisation.

Cache key. A cache file is valid for exactly one combination of

* the model's **weights**: a BLAKE2b digest of its ``state_dict`` (names, dtypes, shapes
  and bytes, buffers such as BatchNorm statistics included) and architecture ``spec``.
  Hashing the weights rather than a file's mtime means a retrained run, a re-export or
  a change of ``random:`` initialisation can never reuse stale features, while copying
  a checkpoint keeps its cache;
* the **data**: its spec string, the image size, and for specs naming files or folders
  the ``(name, size, mtime)`` of the path and of its direct entries (so adding, removing
  or rewriting a class folder or an archive invalidates the cache; editing a file deep
  inside a class folder in place is not detected: delete the cache folder then);
* the feature kind and :data:`FORMAT`.

The file name starts with readable slugs of the model and the data and ends with the
digest of the key; the key itself is stored inside and checked on load.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from nolabel.atomic import atomic_write
from nolabel.names import PATCH_POOLS   # defined without torch for the CLI's help
from nolabel.ops.pooling import gem_pool

FORMAT = "nolabel.features/1"
GEM_P = 3.0


def embed_normalized(network: nn.Module | None, x: Tensor, patch_tokens: str = "none") -> Tensor:
    """Features of a normalised float batch (B, 3, S, S) -> float32 (B, D).

    ``network=None`` means raw pixels (flattened). ``patch_tokens`` as in the module
    docstring; ``"avg"``/``"gem"`` need a ViT (``forward_tokens``).
    """
    if patch_tokens not in PATCH_POOLS:
        raise ValueError(f"patch_tokens must be one of {', '.join(PATCH_POOLS)}, got {patch_tokens!r}")
    if network is None:
        return x.flatten(1).float()
    if patch_tokens == "none":
        return network(x).float()
    if not hasattr(network, "forward_tokens"):
        raise ValueError(f"patch_tokens={patch_tokens!r} pools a ViT's patch tokens; this model has none")
    tokens = network.forward_tokens(x)  # (B, 1 + N, D)
    cls, patches = tokens[:, 0], tokens[:, 1:]  # (B, D), (B, N, D)
    if patch_tokens == "avg":
        pooled = patches.mean(1)
    else:  # GeM: (mean of x^p)^(1/p) over tokens, on positive values
        pooled = gem_pool(patches, GEM_P)
    return torch.cat([cls, pooled], dim=1).float()  # (B, 2D)


def weights_digest(network: nn.Module | None) -> str:
    """BLAKE2b (hex) of a network's architecture spec and full ``state_dict``; "pixels" for None."""
    if network is None:
        return "pixels"
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(getattr(network, "spec", type(network).__name__), sort_keys=True, default=str).encode())
    for name, value in sorted(network.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _spec_paths(spec: str) -> list[Path]:
    """Filesystem paths a data spec names (none for ``demo``)."""
    body = spec.partition("?")[0].removeprefix("flat:")
    if body.startswith("cifar10:"):
        body = body[len("cifar10:"):]
        for suffix in (":test", ":train"):
            body = body.removesuffix(suffix)
    candidates = [Path(body).expanduser()]
    return [p for p in candidates if body and p.exists()]


def data_stamp(spec: str) -> list:
    """``[name, size, mtime_ns]`` of the path a spec names and of its direct entries."""
    stamp = []
    for path in _spec_paths(spec):
        entries = [path] + (sorted(path.iterdir()) if path.is_dir() else [])
        for p in entries:
            st = p.stat()
            stamp.append([str(p.resolve()) if p is path else p.name, st.st_size, st.st_mtime_ns])
    return stamp


def cache_key(model_spec: str, weights: str, data_spec: str, image_size: int, patch_tokens: str) -> dict:
    return {"format": FORMAT, "model": model_spec, "weights": weights, "data": data_spec,
            "data_stamp": data_stamp(data_spec), "image_size": int(image_size), "patch_tokens": patch_tokens}


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[-limit:] or "x"


def cache_path(cache_dir: str | Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{_slug(key['model'])}__{_slug(key['data'])}__{key['image_size']}px-{key['patch_tokens']}__{digest}.pt"
    return Path(cache_dir) / name


def load_cached(path: Path, key: dict) -> dict | None:
    """The stored record when ``path`` holds features for exactly ``key``, else None."""
    if not path.is_file():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file: recompute and overwrite it
        return None
    if not isinstance(record, dict) or record.get("key") != json.loads(json.dumps(key)):
        return None
    return record


def save_cached(path: Path, key: dict, record: dict) -> None:
    """Write ``record`` (features, labels, classes, has_masks, ...) with its key, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({**record, "key": key}, tmp))
