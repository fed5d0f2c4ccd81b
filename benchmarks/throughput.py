"""Training throughput of each method against the bare backbone passes it needs.

For every method (``--methods``, default all registered), one short ``nolabel.train.train``
run (the real loop: views from MultiCrop, the method's forward, backward, clipping,
optimizer step, EMA, logging) on the demo images, with ``on_step`` as the stopwatch:

* A, the training step: the time between two consecutive ``on_step`` calls within one
  epoch (data, views, step, logging; the hook's own work falls outside that interval);
* B, the bare backbone: the backbone calls the method made in one training step, recorded
  with global forward hooks (input shapes, dtype, memory format, with or without
  gradient: the student's and, where there is one, the teacher's), replayed on the very
  inputs recorded, on a copy of the backbone, under the same autocast: the calls made
  with gradient are forward then one backward of ``mean(out^2)``, the others forward
  only. No heads, loss, optimizer or augmentation.

A and B alternate in blocks of ``--block`` steps, ``--rounds`` times, inside the same run
(B runs in the hook); the medians of the per-step times give images/s (the batch over the
median) and ``ratio = train / bare`` (1.0: the method costs no more than its backbone
passes). Prints one JSON object; ``threads`` is per method (``--threads auto`` follows the
load when each run starts, see ``dist_setup.cpu_threads``).

The timed steps are the first few of a run: state that builds up later is not in them
(SwAV's queue joins Sinkhorn once filled, e.g. 30 steps after ``queue_start_epoch`` at
batch 128; ``--set swav.queue_start_epoch=0`` and more steps for that case).

    python benchmarks/throughput.py                        # every method, ResNet-18 x0.25, 32 px, batch 128
    python benchmarks/throughput.py --methods dino,simclr --precision fp32 --channels-last false
    python benchmarks/throughput.py --tiny --methods simclr  # a few steps, seconds
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from nolabel import dist_setup
from nolabel.backbones import is_backbone
from nolabel.config import GENERAL_SECTIONS, apply_overrides, new_config
from nolabel.methods import method_names
from nolabel.train import train


class BackboneCalls:
    """Records the outermost backbone calls of one training step (global module hooks)."""

    def __init__(self):
        self.calls: list[tuple[torch.nn.Module, torch.Tensor, bool]] = []
        self._depth = 0
        self._handles = []

    def start(self) -> None:
        self.calls, self._depth = [], 0
        mod = torch.nn.modules.module
        self._handles = [mod.register_module_forward_pre_hook(self._pre), mod.register_module_forward_hook(self._post)]

    def stop(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, module, args):
        if is_backbone(module):
            if self._depth == 0 and args and isinstance(args[0], torch.Tensor):
                self.calls.append((module, args[0].detach().clone(memory_format=torch.preserve_format),
                                   torch.is_grad_enabled()))
            self._depth += 1

    def _post(self, module, args, output):
        if is_backbone(module):
            self._depth -= 1


class BarePasses:
    """Replays recorded backbone calls on a copy of the backbone(s), under ``autocast``."""

    def __init__(self, calls, autocast):
        copies: dict[int, torch.nn.Module] = {}
        for module, _, _ in calls:
            if id(module) not in copies:     # a copy keeps the memory format; every weight trainable
                copies[id(module)] = copy.deepcopy(module).train().requires_grad_(True)
        self.calls = [(copies[id(m)], x, grad) for m, x, grad in calls]
        self.autocast = autocast

    def step(self) -> None:
        losses = []
        with self.autocast:
            for net, x, grad in self.calls:
                with torch.set_grad_enabled(grad):
                    out = net(x)
                if grad:
                    losses.append(out.float().pow(2).mean())
        if losses:
            torch.stack(losses).sum().backward()
        for net, _, _ in self.calls:
            net.zero_grad(set_to_none=True)

    def describe(self) -> list[dict]:
        return [{"shape": "x".join(map(str, x.shape)), "dtype": str(x.dtype).replace("torch.", ""), "grad": grad,
                 "channels_last": x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                 and not x.is_contiguous()} for _, x, grad in self.calls]


class _Done(Exception):
    """Raised from ``on_step`` once every block is timed: ends the run early."""


def measure(method: str, args, out: Path) -> dict:
    """One training run of ``method``; returns its images/s, the bare passes' and their ratio."""
    spe = args.steps_per_epoch
    needed = 2 + args.warmup + args.rounds * args.block          # + the recorded step and step 0
    cfg = new_config(method)
    apply_overrides(cfg, [
        f"data.train=demo?n={args.batch_size * spe}", f"data.image_size={args.image_size}",
        f"model.backbone={args.backbone}", f"run.batch_size={args.batch_size}",
        f"run.epochs={2 * (needed // (spe - 1) + 1)}", f"run.out={out}", "run.progress=false",
        f"run.log_every={10 ** 6}", f"run.save_every={10 ** 6}", f"run.precision={args.precision}",
        f"run.channels_last={args.channels_last}", f"run.threads={args.threads}",
        *(["eval.every=0"] if "eval" in GENERAL_SECTIONS else []),     # no k-NN curves between epochs
        *([f"model.width={args.width}", f"model.small_stem={args.small_stem}"] if args.backbone.startswith("resnet")
          else []), *[o for o in args.set if o.split(".")[0] in (method, *GENERAL_SECTIONS)
                       or o.split(".")[0] not in method_names()]])   # another method's options: skipped
    device, precision = dist_setup.pick_device(cfg.run.device, cfg.run.precision)
    recorder = BackboneCalls()
    s = {"bare": None, "recording": False, "last": None, "train": [], "bare_times": [],
         "warmup": args.warmup, "left": args.block, "rounds": 0}

    def on_step(step: int, logs: dict) -> None:
        now = time.perf_counter()
        if s["recording"]:                             # this step ran under the recording hooks: not timed
            recorder.stop()
            s["recording"] = False
            s["bare"] = BarePasses(recorder.calls, dist_setup.autocast(device, precision))
        elif s["bare"] is not None and step % spe != 0:     # an interval inside one epoch
            if s["warmup"] > 0:
                s["warmup"] -= 1
            else:
                s["train"].append(now - s["last"])
                s["left"] -= 1
                if s["left"] == 0:                     # an A block is done: a B block, here in the hook
                    for _ in range(args.block):
                        t = time.perf_counter()
                        s["bare"].step()
                        s["bare_times"].append(time.perf_counter() - t)
                    s["rounds"] += 1
                    s["left"] = args.block
                    if s["rounds"] == args.rounds:
                        raise _Done
        if s["bare"] is None and (step + 1) % spe != 0:     # record the next step, which is in this epoch
            recorder.start()
            s["recording"] = True
        s["last"] = time.perf_counter()

    t0 = time.time()
    try:
        train(cfg, on_step=on_step)
    except _Done:
        pass
    finally:
        recorder.stop()
    if s["rounds"] < args.rounds:
        raise RuntimeError(f"{method}: the run ended after {s['rounds']} of {args.rounds} rounds")
    train_s, bare_s = statistics.median(s["train"]), statistics.median(s["bare_times"])
    return {"method": method, "train_images_per_s": round(args.batch_size / train_s, 1),
            "bare_backbone_images_per_s": round(args.batch_size / bare_s, 1),
            "ratio": round(bare_s / train_s, 3), "train_step_ms": round(1e3 * train_s, 2),
            "bare_step_ms": round(1e3 * bare_s, 2), "timed_steps": len(s["train"]), "rounds": s["rounds"],
            "threads": torch.get_num_threads(), "backbone_calls": s["bare"].describe(),
            "run_seconds": round(time.time() - t0, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="all", help="comma-separated method names, or all")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=float, default=0.25, help="ResNet width multiplier")
    p.add_argument("--small-stem", default="true", choices=("true", "false"), help="ResNet 3x3 stem, no max-pool")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="auto", help="run.precision: auto | fp32 | bf16 | fp16")
    p.add_argument("--channels-last", default="auto", help="run.channels_last: auto | true | false")
    p.add_argument("--threads", default="auto", help="run.threads: auto or a number")
    p.add_argument("--rounds", type=int, default=4, help="A/B alternations")
    p.add_argument("--block", type=int, default=3, help="steps per A or B block")
    p.add_argument("--warmup", type=int, default=2, help="training steps before timing")
    p.add_argument("--steps-per-epoch", type=int, default=8, help="demo images = batch x this")
    p.add_argument("--set", nargs="*", default=[],
                   help="more config overrides section.key=value (a method's own apply to that method only)")
    p.add_argument("--tiny", action="store_true", help="batch 8, ResNet-18 x0.125, 2 rounds of 1 step (tests)")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_size, args.width, args.rounds, args.block, args.warmup, args.steps_per_epoch = 8, 0.125, 2, 1, 1, 4
    names = method_names() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(method_names()))
    if unknown:
        sys.exit(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(method_names())}")

    device, precision = dist_setup.pick_device("auto", args.precision)
    report = {"benchmark": "throughput", "backbone": args.backbone, "width": args.width,
              "small_stem": args.small_stem, "image_size": args.image_size, "batch_size": args.batch_size,
              "device": str(device), "precision": precision,
              "channels_last": dist_setup.memory_format(args.channels_last, args.backbone, device)
              == torch.channels_last,
              "cpu": platform.processor() or platform.machine(),
              "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")(),
              "torch": torch.__version__, "load_average_before": [round(x, 2) for x in os.getloadavg()],
              "command": " ".join(sys.argv), "methods": []}
    with tempfile.TemporaryDirectory(prefix="nolabel-throughput-") as tmp:
        for name in names:
            report["methods"].append(measure(name, args, Path(tmp) / name))
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
