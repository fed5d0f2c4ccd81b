"""Device, precision and DistributedDataParallel set-up for the training loop."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_device(device: str, precision: str) -> tuple[torch.device, str]:
    """Resolve ``auto`` device (CUDA when present) and precision (bf16 on GPUs that
    support it, else fp16 with loss scaling; fp32 on CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--run.precision={precision!r}: choose from {', '.join(PRECISIONS)}")
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"--run.device={device!r} is not a device: use auto, cpu, cuda or cuda:N") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--run.device={device!r} but no CUDA GPU is visible: use --run.device=cpu")
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError("--run.precision=fp16 needs a CUDA GPU: use fp32 or bf16 on CPU")
    return dev, precision


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def wrap_ddp(method: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the method's trainable parameters, with
    synchronised BatchNorm on GPUs."""
    if device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids)
