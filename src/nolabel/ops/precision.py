"""float32 regions inside the loop's mixed-precision autocast (``--run.precision=bf16|fp16``).

Autocast runs matrix products in bf16/fp16 even when their inputs are float32, so a loss
that merely upcasts its logits would still compute ``q @ k.T`` or an einsum at 8 bits of
mantissa. The losses and the temperature-scaled cosine logits of the heads (DINO's last
layer, SwAV/SeLa prototypes, DeepCluster-v2 centroids; cosines divided by 0.04-0.1, where
bf16's 2^-8 spacing would be an error of 0.1-0.2 in a logit) therefore run with autocast
off, on float32 tensors: softmax, log-softmax, exp, Sinkhorn and their matrix products.
Parameters and optimiser state are float32 anyway (autocast never changes them).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)

_AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_off(where: torch.Tensor | torch.device | str):
    """Context manager: autocast disabled for the device type of ``where`` (a tensor, a
    device or a device type), so float32 tensors are computed in float32. A no-op where
    autocast does not exist (e.g. ``mps`` on older torch)."""
    kind = where.device.type if isinstance(where, torch.Tensor) else torch.device(where).type
    if kind not in _AUTOCAST_DEVICES:
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, enabled=False)


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _float32(arg):
    """A bf16/fp16 tensor (or a list/tuple of them) as float32; anything else unchanged."""
    if isinstance(arg, torch.Tensor):
        return arg.float() if arg.dtype in _LOW_PRECISION else arg
    if type(arg) in (list, tuple) and any(isinstance(a, torch.Tensor) for a in arg):
        return type(arg)(_float32(a) for a in arg)
    return arg


def float32_region(fn: F) -> F:
    """Decorator: run ``fn`` in float32 whatever the loop's autocast: its bf16/fp16 tensor
    arguments (alone or in a list/tuple) are upcast, and autocast is off on the device of
    the first tensor argument. Gradients flow back to the low-precision inputs through
    the cast."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(_float32(a) for a in args)
        kwargs = {k: _float32(v) for k, v in kwargs.items()}
        first = next((t for a in (*args, *kwargs.values())
                      for t in (a if type(a) in (list, tuple) else (a,)) if isinstance(t, torch.Tensor)), None)
        if first is None:
            return fn(*args, **kwargs)
        with autocast_off(first):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
