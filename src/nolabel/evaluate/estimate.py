"""Time estimates of ``nolabel eval all``, printed before it starts and kept in ``eval.json``.

Each protocol estimates its own work (:meth:`nolabel.evaluate.protocols.Protocol.estimate`)
from the two costs measured here on the evaluation's own model, data and device: one
fine-tuning step (forward, backward and AdamW step of a batch of training images
through a trainable copy of the network and a linear head) and one image's forward pass
without gradients. Each is timed on its second run (the first pays for allocation and
kernel selection). Work on cached features (k-NN, probes, clustering, retrieval) is
not estimated: it takes seconds; nor are the figures (a few seconds each with matplotlib).
Under CPU contention both costs vary from one moment to the next: the estimate is a
scale, not a promise.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from nolabel.evaluate.context import EvalContext

PROBE_IMAGES = 32     # images in the batch timed for a forward pass


class Timer:
    """Measured costs of one EvalContext, each measured once, when first asked for."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self._step: dict[int, float] = {}
        self._forward: float | None = None

    def n_images(self, role: str) -> int:
        return int(self.ctx.features(role).y.numel())

    def _images(self, n: int) -> torch.Tensor:
        """The first ``n`` training images (repeated when there are fewer), uint8 on the device."""
        batch = next(iter(self.ctx.dataset("train").batches(n, shuffle=False, drop_last=False)))
        images = batch.images.repeat((n + len(batch.images) - 1) // len(batch.images), 1, 1, 1)[:n]
        return images.to(self.ctx.device)

    def _timed(self, work) -> float:
        work()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        t0 = time.perf_counter()
        work()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        return time.perf_counter() - t0

    def forward_per_image(self) -> float:
        """Seconds of one image's forward pass (features, no gradients)."""
        if self._forward is None:
            if self.ctx.model.network is None:
                self._forward = 0.0
            else:
                images = self._images(min(PROBE_IMAGES, self.ctx.batch_size))
                model = self.ctx.model.to(self.ctx.device)
                self._forward = self._timed(lambda: model.features(images, self.ctx.patch_tokens)) / len(images)
        return self._forward

    def finetune_step(self, batch_size: int) -> float:
        """Seconds of one fine-tuning step of ``batch_size`` images (views, forward, backward, AdamW)."""
        if batch_size not in self._step:
            from nolabel.evaluate.finetune import train_views, trainable_copy

            network, head = trainable_copy(self.ctx)
            optimizer = torch.optim.AdamW([*network.parameters(), *head.parameters()], lr=0.0)
            views = train_views(self.ctx)
            images = self._images(batch_size)
            labels = torch.zeros(batch_size, dtype=torch.long, device=self.ctx.device)

            def step():
                loss = F.cross_entropy(head(network(views(images)[0])), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            self._step[batch_size] = self._timed(step)
        return self._step[batch_size]


def estimate_seconds(ctx: EvalContext, plan: dict[str, dict]) -> dict[str, float | None]:
    """``{protocol: estimated seconds or None}`` of the protocols planned with their options."""
    from nolabel.evaluate.protocols import get_protocol

    timer = Timer(ctx)
    return {name: get_protocol(name).estimate(ctx, options, timer) for name, options in plan.items()}


def describe(estimates: dict[str, float | None]) -> str:
    """One line: the protocols worth estimating and the sum, e.g. ``fine-tuning ~120 s, ...``."""
    from nolabel.evaluate.protocols import get_protocol

    known = {n: s for n, s in estimates.items() if s is not None}
    if not known:
        return "every planned protocol works on cached features (seconds)"
    parts = ", ".join(f"{get_protocol(n).title} ~{s:.0f} s" for n, s in known.items())
    return f"{parts}; ~{sum(known.values()):.0f} s in all, plus seconds on cached features"
