"""Schedules are plain functions of the global step (docs/architecture.md, "Schedules").

Every value that changes during training (learning rate, weight decay, teacher
momentum, teacher temperature) is computed from the step index by one of these
functions, so a resumed run recomputes exactly the values an uninterrupted run
would have used.
"""
from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    if total <= 0 or step >= total:
        return float(end)
    step = max(step, 0)
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * step / total)))


def linear(step: int, total: int, start: float, end: float) -> float:
    """Straight line from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    if total <= 0 or step >= total:
        return float(end)
    step = max(step, 0)
    return float(start + (end - start) * step / total)


def warmup_cosine(step: int, total: int, warmup: int, base: float, final: float,
                  warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup`` steps, then a
    cosine from ``base`` to ``final`` over the remaining ``total - warmup`` steps.

    This is the learning-rate schedule of DINO (thesis section 5.3.2: "linearly ramped
    up during the first 10 epochs [...] after this warm-up, we decay the learning rate
    with a cosine schedule") and of SwAV (section 4.2.5).
    """
    warmup = min(max(warmup, 0), total)
    if step < warmup:
        return linear(step, warmup, warmup_start, base)
    return cosine(step - warmup, total - warmup, base, final)


def warmup_constant(step: int, warmup: int, start: float, end: float) -> float:
    """Linear from ``start`` to ``end`` over ``warmup`` steps, then constant ``end``.

    DINO's teacher temperature: 0.04 to 0.07 during the first 30 epochs (thesis 5.6.3).
    """
    return linear(step, warmup, start, end)
