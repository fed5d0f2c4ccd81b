"""Exponential moving average of weights: the momentum teacher (thesis 5.3.1)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """``theta_t <- m * theta_t + (1 - m) * theta_s`` for every parameter.

    Buffers (BatchNorm running statistics) are not averaged: each network keeps its
    own, as in DINO where the teacher computes its batch statistics itself.
    ``target`` and ``source`` must have the same architecture.
    """
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    if len(t_params) != len(s_params):
        raise ValueError(f"EMA needs identical architectures: {len(t_params)} vs {len(s_params)} parameters")
    if not t_params:
        return
    t_data = [p.data for p in t_params]
    s_data = [p.data.to(p_t.dtype) for p, p_t in zip(s_params, t_params)]
    # one foreach kernel, one pass over both (issue 14): lerp(t, s, 1 - m) = m * t + (1 - m) * s
    torch._foreach_lerp_(t_data, s_data, 1.0 - momentum)
