"""Device, precision, memory format, CPU threads and DistributedDataParallel set-up for
the training loop."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch
from torch import nn

from nolabel.config import switch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")   # x86 instructions computing bf16 products natively


def _cpuinfo_field(name: str) -> str:
    """The first ``name : value`` line's value in /proc/cpuinfo (Linux); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return ""


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux x86); empty where unknown."""
    return set(_cpuinfo_field("flags").split())


def cpu_description() -> str:
    """The CPU's model name and its bf16 instructions, e.g. ``AMD EPYC (avx512_bf16)``, for
    benchmark reports: step times differ between machines sold under the same core count."""
    flags = sorted(_cpu_flags() & set(BF16_CPU_FLAGS))
    model = _cpuinfo_field("model name") or "unknown CPU"
    return f"{model} ({', '.join(flags) or 'no native bf16'})"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively, so bf16 autocast is faster than fp32:
    torch's kernels dispatch to AVX-512 (``torch.backends.cpu.get_cpu_capability()``) and
    the CPU has AVX512-BF16 or AMX-BF16. False where either is unknown (then bf16 is
    emulated and slower than fp32)."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return capability.startswith("AVX512") and bool(_cpu_flags() & set(BF16_CPU_FLAGS))


def pick_device(device: str, precision: str) -> tuple[torch.device, str]:
    """Resolve ``auto`` device (CUDA when present) and precision (bf16 on GPUs that
    support it, else fp16 with loss scaling; on CPU bf16 where :func:`cpu_has_native_bf16`,
    else fp32). bf16 and fp16 are autocast only: parameters and optimiser state stay
    float32, and the losses run in float32 (``nolabel.ops.precision``)."""
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
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError("--run.precision=fp16 needs a CUDA GPU: use fp32 or bf16 on CPU")
    return dev, precision


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(setting: str | bool, backbone: str, device: torch.device) -> torch.memory_format:
    """``--run.channels_last``: ``torch.channels_last`` for the model's weights and the
    input views, or ``torch.contiguous_format``. ``auto``: channels-last for ResNets on CPU
    and CUDA (their convolutions run faster in NHWC), never for ViTs (one patch convolution)."""
    value = switch(setting, "--run.channels_last")
    if value == "auto":
        value = backbone.startswith("resnet") and device.type in ("cpu", "cuda")
    return torch.channels_last if value else torch.contiguous_format


def _available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_cores(samples: int = 10, interval: float = 0.01) -> float:
    """How many cores other work keeps busy now: on Linux the mean number of runnable
    threads in /proc/loadavg over ``samples`` readings ``interval`` s apart, less this one
    (reading it); elsewhere the 1-minute load average; 0 where neither is known."""
    try:
        counts = []
        for i in range(samples):
            if i:
                time.sleep(interval)
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        return max(0.0, sum(counts) / len(counts) - 1)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def check_threads(setting: int | str) -> None:
    """``--run.threads`` is a positive int or ``auto`` (ValueError naming it otherwise)."""
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting < 1:
            raise ValueError(f"--run.threads={setting}: give a positive number of threads, or auto")
    elif str(setting).lower() != "auto":
        raise ValueError(f"--run.threads={setting!r}: give a positive number of threads, or auto")


def cpu_threads(setting: int | str) -> int:
    """``--run.threads``: a positive int, or ``auto``: ``OMP_NUM_THREADS`` when set (torchrun
    sets 1 for several processes a node); else the cores this process may run on
    (``os.sched_getaffinity``) less the cores other work keeps busy now (:func:`_busy_cores`,
    rounded), at least 1, shared among the node's processes (``LOCAL_WORLD_SIZE``).

    Why: a thread that waits for a busy core stalls the others at every synchronisation
    (measured: BENCHMARKS.md, "CPU speed", Threads). The runnable count is read now rather than the load average, which lags a
    minute behind jobs that start or end. The count depends on the machine at the start;
    a resumed run reuses its checkpoint's (the last bits of the results depend on the
    thread count, and resume is exact on CPU)."""
    check_threads(setting)
    if isinstance(setting, int) and not isinstance(setting, bool):
        return setting
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    cores = _available_cores()
    busy = int(_busy_cores() + 0.5)
    return max(1, max(1, cores - busy) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def set_cpu_threads(setting: int | str, resumed: int | None = None) -> int:
    """``torch.set_num_threads`` (intra-op threads of this process, kept after the run) to
    ``cpu_threads(setting)``, or to ``resumed`` (the count a resumed run's checkpoint
    recorded) when ``setting`` is ``auto``; returns the number."""
    n = resumed if resumed and str(setting).lower() == "auto" else cpu_threads(setting)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def wrap_ddp(method: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the method's trainable parameters, with
    synchronised BatchNorm on GPUs."""
    if device.type == "cuda":
        method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(method, device_ids=ids)
