"""The unit of data handed to training loops and evaluators."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """A batch of square uint8 images.

    Attributes:
        images: uint8 (B, 3, S, S).
        labels: int64 (B,), -1 where unlabelled.
        index: int64 (B,) positions of the items in their :class:`ImageSet`.
        masks: bool (B, S, S) object masks when the source has them (demo), else None.
        bad: (location, reason) of items skipped while building this batch (or a
            skipped all-bad batch just before it); B is smaller than the requested
            batch size by the number of bad items it lost.
        upscaled: (location, "upscaled from WxH ...") of items in this batch enlarged
            more than ``loading.MAX_UPSCALE`` times (kept, unlike the bad ones).
    """

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    masks: torch.Tensor | None = None
    bad: list[tuple[str, str]] = field(default_factory=list)
    upscaled: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pin_memory(self) -> Batch:
        """The batch with its pixels in page-locked memory (DataLoader's ``pin_memory``): a
        ``.to(cuda, non_blocking=True)`` then overlaps the copy with the step before."""
        self.images = self.images.pin_memory()
        self.masks = None if self.masks is None else self.masks.pin_memory()
        return self
