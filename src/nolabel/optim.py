"""Optimizers: parameter groups that decay only weight matrices and kernels.

Biases and normalisation parameters (every tensor of fewer than 2 dimensions) get no
weight decay, as in DINO (thesis 5.3.2) and SwAV/LARS (4.2.5). With ``lars`` they also
take plain SGD steps, without the trust ratio (see :mod:`nolabel.ops.lars`).

A method may give parts of its network their own rule (``Method.param_group_rules``: a
parameter-name prefix -> group options); ``fixed_lr`` keeps a group at the base learning
rate throughout, without warm-up or decay (SimSiam's predictor, its paper's Section 4).

Gradient clipping (:func:`clip_gradients_`): the thesis gives DINO's threshold (3.0,
5.3.2) but not the norm it bounds; the reference code clips every parameter tensor's
gradient on its own (``per_param``, the default), not one norm over all of them (``global``,
``torch.nn.utils.clip_grad_norm_``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nolabel.ops.lars import LARS, lars_groups

OPTIMIZERS = ("adamw", "sgd", "lars")
CLIP_MODES = ("per_param", "global")


GROUP_OPTIONS = ("fixed_lr",)


def param_groups(params: Iterable[tuple[str, nn.Parameter]], rules: dict[str, dict] | None = None) -> list[dict]:
    """Split trainable parameters into a decayed group (ndim >= 2) and a group with
    ``weight_decay`` pinned to 0 (``"no_decay": True``); first the parameters no rule
    names, then, for each prefix of ``rules`` (``{"predictor": {"fixed_lr": True}}``), the
    parameters whose name starts with it, the same two ways, with the rule's options.
    Empty groups are left out, except the first (a model of biases only keeps its shape)."""
    rules = rules or {}
    unknown = {k for options in rules.values() for k in options} - set(GROUP_OPTIONS)
    if unknown:
        raise ValueError(f"unknown parameter-group option(s) {sorted(unknown)}; known: {', '.join(GROUP_OPTIONS)}")
    buckets: dict[str | None, tuple[list, list]] = {prefix: ([], []) for prefix in [None, *rules]}
    for name, p in params:
        if not p.requires_grad:
            continue
        prefix = next((r for r in rules if name == r or name.startswith(r + ".")), None)
        buckets[prefix][0 if p.ndim >= 2 else 1].append(p)
    groups = []
    for prefix, (decay, no_decay) in buckets.items():
        options = rules.get(prefix, {})
        if decay or prefix is None:
            groups.append({"params": decay, **options})
        if no_decay:
            groups.append({"params": no_decay, "no_decay": True, "weight_decay": 0.0, **options})
    return groups


DEFAULT_BETAS = (0.9, 0.999)   # torch's AdamW


def _with_fast_kernels(cls, groups, kernels: tuple[str, ...], **options) -> torch.optim.Optimizer:
    """``cls(groups, **options)`` with the first of ``kernels`` this torch and device have:
    ``fused`` (one kernel updates every parameter; torch >= 2.4 on CPU and CUDA), ``foreach``
    (one kernel per operation over all parameters), else the per-parameter loop (issue 14).
    The same update rule either way: only the rounding order may differ."""
    for kernel in kernels:
        try:
            return cls(groups, **options, **{kernel: True})
        except (RuntimeError, ValueError, TypeError):    # this torch or device has no such kernel
            pass
    return cls(groups, **options)


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                    momentum: float = 0.9, betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    """``name`` (adamw | sgd | lars) over ``model``'s trainable parameters (:func:`param_groups`).

    ``momentum``: SGD and LARS. ``betas``: AdamW's; None takes the ones the model declares in
    ``adam_betas`` (every ``Method`` does: torch's (0.9, 0.999) unless its paper says otherwise,
    e.g. MAE's (0.9, 0.95)), else torch's.
    """
    rules = model.param_group_rules() if hasattr(model, "param_group_rules") else {}
    groups = [{**g, "base_lr": lr} if g.get("fixed_lr") else g for g in param_groups(model.named_parameters(), rules)]
    if name == "adamw":
        betas = tuple(getattr(model, "adam_betas", DEFAULT_BETAS)) if betas is None else tuple(betas)
        return _with_fast_kernels(torch.optim.AdamW, groups, ("fused", "foreach"), lr=lr,
                                  weight_decay=weight_decay, betas=betas)
    if name == "sgd":
        # foreach only: torch's fused SGD fails on a step where some parameters have a momentum
        # buffer and others not yet (a layer frozen at first: DINO's last layer, SwAV's prototypes)
        return _with_fast_kernels(torch.optim.SGD, groups, ("foreach",), lr=lr, weight_decay=weight_decay,
                                  momentum=momentum)
    if name == "lars":
        # SwAV's optimizer (thesis 4.2.5): weights adapted and decayed; ndim < 2 groups carry
        # lars=False and no_decay=True, which set_schedule_values respects.
        return LARS(lars_groups(groups, weight_decay), lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def set_schedule_values(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Write this step's learning rate and weight decay into every group; a ``fixed_lr``
    group keeps its ``base_lr``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] if group.get("fixed_lr") else lr
        group["weight_decay"] = 0.0 if group.get("no_decay") else weight_decay


def check_clip_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`CLIP_MODES`, else a ValueError naming ``--optim.clip_mode``."""
    if mode not in CLIP_MODES:
        raise ValueError(f"--optim.clip_mode={mode!r}: choose from {', '.join(CLIP_MODES)}")
    return mode


@torch.no_grad()
def clip_gradients_(params: Iterable[torch.Tensor], max_norm: float, mode: str = "per_param") -> None:
    """Clip the gradients of ``params`` in place (parameters without a gradient are skipped).

    ``per_param`` (DINO's reference code, ``utils.clip_gradients``): each tensor's gradient g
    is scaled by ``max_norm / (||g||_2 + 1e-6)`` when that factor is below 1, independently
    of the others. ``global``: ``torch.nn.utils.clip_grad_norm_`` over all of them (one norm,
    one common factor). Callers drop the gradients of frozen parameters first, so they count
    in neither rule.
    """
    check_clip_mode(mode)
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    grads = [p.grad for p in params]
    norms = torch.stack(torch._foreach_norm(grads, 2)).float()         # (n,): one kernel over all tensors
    factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)               # 1 when under the bound
    torch._foreach_mul_(grads, [f.to(g.dtype) for f, g in zip(factors.unbind(), grads)])
