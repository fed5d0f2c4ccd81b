"""What every protocol shares: the model, the two data specs, cached features, the output folder.

:class:`EvalContext` loads the model once, opens each data spec at most once (lazily:
a protocol that only needs cached features never decodes an image), and hands out
features through the on-disk cache of :mod:`nolabel.evaluate.cache`. Protocols call
:meth:`EvalContext.require_labels` / :meth:`EvalContext.require_vit` first, which raise
:class:`EvalError` naming the option at fault and what to do instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nolabel.data import ImageSet, open_images
from nolabel.evaluate import cache
from nolabel.evaluate.features import extract_features
from nolabel.evaluate.models import FeatureModel, load_model_for_data


class EvalError(ValueError):
    """A protocol cannot run on these inputs; the message says which option and what to do."""


@dataclass
class Features:
    """Frozen features of one data spec. x: float32 (N, D); y: int64 (N,), -1 = unlabelled."""
    x: Tensor
    y: Tensor
    classes: list[str] | None
    has_labels: bool
    has_masks: bool
    spec: str
    from_cache: bool
    path: Path | None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def architecture(model: FeatureModel) -> str:
    """"vit", "resnet", "pixels" or the network's class name."""
    if model.network is None:
        return "pixels"
    from nolabel.backbones import is_vit

    if is_vit(model.network):
        return "vit"
    return "resnet" if hasattr(model.network, "forward_maps") else type(model.network).__name__


class EvalContext:
    """Model + data specs + output folder of one evaluation.

    Args:
        model_spec: run folder, export folder, ``random:<backbone>``, ``random:<run>`` or ``pixels``.
        train, test: data specs (either may be None when a protocol does not need it).
        out: output folder (reports, PNGs, few-label subsets); created on demand. None: no
            output folder (nothing is written; a protocol that writes a file refuses).
        cache_dir: feature cache folder (default ``out/cache``); ``use_cache=False`` (or no
            folder at all) never reads or writes it.
        image_size: read the data at this side (default: the model's own, else the data's).
        subset_dir: folder of the few-label subset files (default ``out/subsets``).
        patch_tokens: feature kind, see :mod:`nolabel.evaluate.cache`.
        batch_size: images per forward pass when extracting features.
    """

    def __init__(self, model_spec: str, train: str | None = None, test: str | None = None, *,
                 out: str | Path | None = "runs/eval", cache_dir: str | Path | None = None,
                 patch_tokens: str = "none", batch_size: int = 256, device: str = "auto", progress: bool = True,
                 use_cache: bool = True, seed: int = 0, image_size: int | None = None,
                 subset_dir: str | Path | None = None) -> None:
        if patch_tokens not in cache.PATCH_POOLS:
            raise EvalError(f"--patch-tokens {patch_tokens}: use one of {', '.join(cache.PATCH_POOLS)}")
        if batch_size < 1:
            raise EvalError(f"--batch-size {batch_size}: must be at least 1")
        if train is None and test is None:
            raise EvalError("give --train SPEC and/or --test SPEC")
        self.model_spec, self.specs = model_spec, {"train": train, "test": test}
        self.out = Path(out) if out is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else (self.out / "cache" if self.out else None)
        self.patch_tokens, self.batch_size, self.progress = patch_tokens, batch_size, progress
        self.device, self.seed = resolve_device(device), seed
        self.use_cache = use_cache and self.cache_dir is not None
        self.subset_dir = Path(subset_dir) if subset_dir is not None else (self.out / "subsets" if self.out else None)
        self.model, self.image_size = load_model_for_data(model_spec, train or test, image_size)
        self.arch = architecture(self.model)
        if patch_tokens != "none" and self.arch != "vit":
            raise EvalError(f"--patch-tokens {patch_tokens}: pools the patch tokens of a ViT, but {model_spec} is "
                            f"{self.describe_model()}; drop the option (its features are used as they are)")
        self._data: dict[str, ImageSet] = {}
        self._features: dict[tuple[str, str], Features] = {}
        self._weights: str | None = None

    def describe_model(self) -> str:
        if self.arch == "pixels":
            return "raw pixels (no network)"
        name = getattr(self.model.network, "spec", {}).get("name", type(self.model.network).__name__)
        return f"a {name} ({self.arch})"

    # ------------------------------------------------------------------ data and features

    def spec(self, role: str, protocol: str) -> str:
        spec = self.specs[role]
        if spec is None:
            raise EvalError(f"eval {protocol} needs --{role} SPEC (a folder, .tar/.tar.gz, .txt/.csv list, cifar10:DIR or demo)")
        return spec

    def dataset(self, role: str, protocol: str = "all") -> ImageSet:
        """The ImageSet of a role, opened at the model's image size (once)."""
        if role not in self._data:
            self._data[role] = open_images(self.spec(role, protocol), image_size=self.image_size,
                                           progress=self.progress)
        return self._data[role]

    def weights(self) -> str:
        if self._weights is None:
            self._weights = cache.weights_digest(self.model.network)
        return self._weights

    def features(self, role: str, protocol: str = "all", patch_tokens: str | None = None) -> Features:
        """Features of a role's data, from the cache when the key matches, else extracted and cached."""
        kind = patch_tokens or self.patch_tokens
        spec = self.spec(role, protocol)
        if (spec, kind) in self._features:
            return self._features[(spec, kind)]
        key = cache.cache_key(self.model_spec, self.weights(), spec, self.image_size, kind) if self.use_cache else None
        path = cache.cache_path(self.cache_dir, key) if self.use_cache else None
        record = cache.load_cached(path, key) if path is not None else None
        hit = record is not None
        if record is None:
            data = self.dataset(role, protocol)
            t0 = time.time()
            x, y = extract_features(self.model, data, self.batch_size, self.device, self.progress,
                                    f"{role} features", patch_tokens=kind)
            record = {"features": x, "labels": y, "classes": list(data.classes) if data.classes else None,
                      "has_labels": bool(data.has_labels), "has_masks": bool(data.has_masks),
                      "n_bad": len(data.bad), "seconds": round(time.time() - t0, 2)}
            if path is not None:
                cache.save_cached(path, key, record)
        feats = Features(record["features"], record["labels"], record["classes"], record["has_labels"],
                         record["has_masks"], spec, hit, path)
        self._features[(spec, kind)] = feats
        return feats

    def num_classes(self, *roles: str) -> int:
        """Classes of the labelled ``roles``: the class list's length or the largest label + 1."""
        counts = []
        for role in roles:
            spec = self.spec(role, "all")
            feats = next((f for (s, _), f in self._features.items() if s == spec), None)
            if feats is not None:            # labels at hand: no need to open the images
                classes, labels = feats.classes, feats.y
            else:
                data = self.dataset(role)
                classes, labels = data.classes, data.labels_tensor()
            counts += [len(classes or []), int(labels.max()) + 1]
        return max(counts)

    def has_labels(self, role: str) -> bool:
        spec = self.specs[role]
        if spec is None:
            return False
        cached = self._features.get((spec, self.patch_tokens))
        return cached.has_labels if cached is not None else self.dataset(role).has_labels

    def require_labels(self, protocol: str, *roles: str) -> None:
        for role in roles:
            spec = self.spec(role, protocol)
            if not self.has_labels(role):
                raise EvalError(f"eval {protocol} needs labelled data, but --{role} {spec} has no labels: give a "
                                "labelled source (root/<class>/<image> folders, demo, cifar10:DIR), or leave "
                                f"{protocol} out (eval all --skip {protocol})")

    def require_vit(self, protocol: str) -> None:
        if self.arch != "vit":
            raise EvalError(f"eval {protocol} reads the [CLS] self-attention of a Vision Transformer, but "
                            f"{self.model_spec} is {self.describe_model()}; give a ViT model (a run trained with "
                            f"--backbone vit_tiny/vit_small/vit_base, or random:vit_tiny), or leave {protocol} out")

    def require_weights(self, protocol: str) -> None:
        if self.model.network is None:
            raise EvalError(f"eval {protocol} trains the network's weights, but {self.model_spec} has none: "
                            f"give a run, an export or random:<backbone>, or leave {protocol} out")

    # ------------------------------------------------------------------ images

    @torch.no_grad()
    def embed(self, images: Tensor, patch_tokens: str | None = None) -> Tensor:
        """Features of uint8 (B, 3, S, S) images, batched, on the CPU: (B, D)."""
        kind = patch_tokens or self.patch_tokens
        model = self.model.to(self.device)
        parts = [model.features(images[i : i + self.batch_size].to(self.device), kind).cpu()
                 for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(parts)

    def gather(self, role: str, indices, protocol: str = "all") -> tuple[Tensor, Tensor | None]:
        """uint8 images (n, 3, S, S) and bool masks (n, S, S) or None of the given items, in that order."""
        data = self.dataset(role, protocol)
        wanted = torch.as_tensor(indices, dtype=torch.long)
        position = {int(i): j for j, i in enumerate(wanted.tolist())}
        size = data.image_size
        images = torch.zeros(len(wanted), 3, size, size, dtype=torch.uint8)
        masks = torch.zeros(len(wanted), size, size, dtype=torch.bool) if data.has_masks else None
        found = 0
        for batch in data.batches(512, shuffle=False, drop_last=False):
            for row, idx in enumerate(batch.index.tolist()):
                j = position.get(int(idx))
                if j is not None:
                    images[j] = batch.images[row]
                    if masks is not None and batch.masks is not None:
                        masks[j] = batch.masks[row]
                    found += 1
            if found == len(wanted):
                break
        return images, masks

    def path(self, name: str) -> Path:
        """A file in the output folder (created)."""
        if self.out is None:
            raise EvalError(f"{name}: this evaluation has no output folder; give --out DIR")
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name
