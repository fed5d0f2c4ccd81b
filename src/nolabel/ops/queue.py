"""A first-in first-out queue of feature vectors kept in module buffers.

MoCo's dictionary of negative keys (He et al. 2020, Section 3.2: the current batch's
keys are enqueued, the oldest dequeued) and SwAV's queue of earlier features used to
stabilise small-batch assignments (thesis chapter 4) share it. Buffers, so the queue
travels with ``.to(device)`` and is saved in checkpoints (``state_dict``).
"""
from __future__ import annotations

import torch
from torch import nn

from nolabel.ops.dist import all_gather


class FeatureQueue(nn.Module):
    """Ring buffer of the ``size`` most recent (dim,) feature vectors, float32.

    Buffers: ``queue`` (size, dim), ``ptr`` (next row written) and ``filled`` (rows
    holding data), both int64 scalars. ``len(q)`` is the number of filled rows; a
    ``FeatureQueue`` is always truthy (even when empty) so ``if queue:`` means "exists".
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        # Host copies of ptr and filled (every process pushes the same rows, so they agree):
        # reading the buffers would wait for the device at every step (issue 14).
        self._ptr = self._filled = 0

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    @property
    def dim(self) -> int:
        return self.queue.shape[1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ptr, self._filled = int(self.ptr), int(self.filled)      # a resumed queue

    def __len__(self) -> int:
        return self._filled

    def __bool__(self) -> bool:
        return True

    @property
    def is_full(self) -> bool:
        """True once ``size`` vectors have been pushed (a property, not a method)."""
        return self._filled == self.size

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        """Enqueue x: (B, dim), detached and cast to float32, after gathering it from
        every process (:func:`nolabel.ops.dist.all_gather`, rank order; every process
        must push the same B), so all processes hold the same queue. The oldest rows are
        overwritten once full; if more than ``size`` rows arrive, only the last ``size``
        are kept."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.push expects (B, {self.dim}), got {tuple(x.shape)}")
        rows = all_gather(x.detach().to(self.queue.dtype))              # (W * B, dim)
        n = rows.shape[0]
        if n == 0:
            return
        ptr = self._ptr
        if n > self.size:                                                # older rows would be overwritten
            ptr = (ptr + n - self.size) % self.size
            rows, n = rows[-self.size:], self.size
        index = (ptr + torch.arange(n, device=self.queue.device)) % self.size
        self.queue.index_copy_(0, index, rows.to(self.queue.device))
        self._ptr, self._filled = (ptr + n) % self.size, min(self._filled + n, self.size)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)

    def features(self) -> torch.Tensor:
        """The filled rows, oldest first: (len(self), dim). Empty (0, dim) before the first
        push. A view of the buffer when no reordering is needed, otherwise a copy; treat
        it as read-only and do not keep it across :meth:`push`."""
        filled, ptr = self._filled, self._ptr
        if filled < self.size:
            return self.queue[:filled]                                   # written from row 0 in order
        if ptr == 0:
            return self.queue
        return torch.cat([self.queue[ptr:], self.queue[:ptr]])

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
