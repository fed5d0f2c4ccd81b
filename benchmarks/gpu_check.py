"""Everything one lent GPU should answer, in one command, in at most ~8 minutes (issue 14).

    python benchmarks/gpu_check.py --data .data/cifar10 --out $OUT/gpu_check   # on the GPU
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check                # CPU, a minute: the suite's

Parts, each written to OUT/gpu_check.json and OUT/gpu_check.md as soon as it ends:

1. ``ceiling``: the bare backbone forward+backward, images/s: ResNet-18 with the CIFAR stem
   at 32 px and ViT-S/16 at 224 px, batch 256, bf16 autocast, channels-last for the ResNet.
2. ``nolabel``: SimCLR, DINO and SwAV (each method's small recipe) on CIFAR-10 with
   ResNet-18 (full width, CIFAR stem), each for ``--budget-s`` seconds of training (the
   epochs planned from a probe through the real loop, so the schedules end with the budget),
   with the in-training k-NN curve; images/s, the ratio of the loop to its bare backbone
   passes (benchmarks/throughput.py's measure), epochs done and k-NN top-1 (k=200, T=0.1)
   of the 10,000 test images from the 50,000-image bank.
3. ``lightly``: lightly's own SimCLR, DINO and SwAV (benchmarks/lightly_runs.py) for the
   same wall time on the same GPU, and the same figures.

Exits 1 when any part failed (its error is in the JSON), 0 otherwise. ``--tiny``: ResNet-18
x0.125 and a one-block ViT, batch 16, 512 training images, a few steps, on whatever device
there is; lightly's part is skipped, with the reason, where lightly or torchvision does not
import (as on the CPU machines, where torchvision fails against torch 2.13).

How the inputs travel to a lent GPU (its working tree is limited to 64 MiB; it has torch,
torchvision, timm, numpy, Pillow, scikit-learn, PyYAML, tqdm and matplotlib, and no registry):
``bash benchmarks/gpu_pack.sh`` puts the CIFAR-10 archives (19 MB) in ``.data/cifar10`` and
the wheels of what is missing there (faiss-cpu, lightly, hydra-core, omegaconf, antlr4;
19 MB, for Python 3.12) in ``.whl``; both folders are git-ignored and named in the device
call's ``carry``. The command it prints installs the wheels into /tmp/site and runs this.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lightly_runs  # noqa: E402
import throughput  # noqa: E402
from convergence import plan_epochs, probe_step_seconds  # noqa: E402

from nolabel import dist_setup  # noqa: E402
from nolabel.backbones import build_backbone  # noqa: E402
from nolabel.config import apply_overrides, new_config  # noqa: E402
from nolabel.data import open_images, open_source  # noqa: E402
from nolabel.evaluate.knn import knn_protocol  # noqa: E402
from nolabel.runlog import MetricsLog  # noqa: E402
from nolabel.train import train  # noqa: E402

METHODS = ("simclr", "dino", "swav")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ceiling(a, device) -> list[dict]:
    """Bare forward+backward images/s of the two reference backbones (module docstring)."""
    nets = [(f"resnet18 x{a.width} cifar stem", "resnet18", 32, {"width": a.width, "small_stem": True}),
            ("vit_small/16", "vit_small", 224, {"patch_size": 16}) if not a.tiny else
            ("vit_tiny/8, 1 block", "vit_tiny", 32, {"patch_size": 8, "depth": 1})]
    out = []
    for label, name, size, kwargs in nets:
        net = build_backbone(name, image_size=size, **kwargs)
        fmt = torch.channels_last if name.startswith("resnet") else torch.contiguous_format
        net = net.to(device, memory_format=fmt).train()
        x = torch.randn(a.batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
        times = []
        for i in range(a.ceiling_steps + 3):
            _sync(device)
            t = time.perf_counter()
            with dist_setup.autocast(device, a.precision):
                loss = net(x).float().pow(2).mean()
            loss.backward()
            net.zero_grad(set_to_none=True)
            _sync(device)
            if i >= 3:                              # 3 warm-up steps
                times.append(time.perf_counter() - t)
        times.sort()
        out.append({"backbone": label, "image_size": size, "batch_size": a.batch_size,
                    "images_per_s": round(a.batch_size / times[len(times) // 2], 1)})
    return out


def nolabel_method(name: str, a, device, train_spec: str, test_spec: str, out: Path) -> dict:
    """One nolabel method for ``a.budget_s`` seconds of training (module docstring, part 2)."""
    base = [f"data.train={train_spec}", "model.backbone=resnet18", f"model.width={a.width}", "model.small_stem=true",
            f"run.batch_size={a.batch_size}", f"run.precision={a.precision}", f"run.compile={a.compile}",
            "run.log_every=20", *a.set]
    step_s = probe_step_seconds(base, name, out.with_name(out.name + "-probe"), a.batch_size)
    n_train = len(open_source(train_spec))             # counts the images without decoding them
    steps_per_epoch = n_train // a.batch_size
    epochs = plan_epochs(a.budget_s, step_s, steps_per_epoch)
    cfg = new_config(name)
    apply_overrides(cfg, [*base, f"run.out={out}", f"run.epochs={epochs}", "run.progress=false",
                          f"eval.knn_train={train_spec}", f"eval.knn_test={test_spec}",
                          f"eval.every={max(1, round(epochs / 5))}"])
    t0 = time.perf_counter()
    train(cfg)
    train_s = time.perf_counter() - t0
    records = MetricsLog(out).read()
    rates = [r["images_per_s"] for r in records if r["type"] == "step" and "images_per_s" in r][1:]
    knn = knn_protocol(str(out), train_spec, test_spec, k=200, temperature=0.1, device=str(device), progress=False)
    ratio = throughput.measure(name, SimpleNamespace(
        steps_per_epoch=8, warmup=2, rounds=3, block=3, batch_size=a.batch_size, image_size=32, backbone="resnet18",
        width=a.width, small_stem="true", precision=a.precision, channels_last="auto", threads="auto",
        set=[f"run.compile={a.compile}", *a.set]), out.with_name(out.name + "-throughput"))
    return {"method": name, "epochs": epochs, "steps": epochs * steps_per_epoch, "probe_step_seconds": round(step_s, 4),
            "train_seconds": round(train_s, 1), "images_per_s": round(sum(rates) / len(rates), 1) if rates else None,
            "ratio_to_bare_backbone": ratio["ratio"], "knn_top1_k200": round(knn["top1"], 2),
            "curve": [{k: r[k] for k in ("epoch", "knn_top1_k200", "seconds") if k in r}
                      for r in records if r["type"] == "knn"]}


def _markdown(report: dict) -> str:
    lines = [f"# gpu_check, {report['date']}, {report['device']}", "",
             f"torch {report['torch']}, precision {report['precision']}, budget {report['budget_s']} s a method, "
             f"batch {report['batch_size']}, ResNet-18 width {report['width']}" + (" (--tiny)" if report["tiny"] else ""),
             "", "| backbone | images/s (fwd+bwd) |", "|---|---|"]
    lines += [f"| {c['backbone']} {c['image_size']} px | {c['images_per_s']} |" for c in report.get("ceiling") or []]
    lines += ["", "| method | nolabel img/s | ratio to bare | epochs | k-NN k=200 | lightly img/s | lightly epochs "
              "| lightly k-NN k=200 | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    light = {r["method"]: r for r in report.get("lightly", {}).get("runs", [])}
    for r in report.get("nolabel", []):
        lr = light.get(r["method"], {})
        ratio = (f"{r['images_per_s'] / lr['images_per_s']:.2f}x"
                 if r.get("images_per_s") and lr.get("images_per_s") else "-")
        lines.append(f"| {r['method']} | {r.get('images_per_s', '-')} | {r.get('ratio_to_bare_backbone', '-')} | "
                     f"{r.get('epochs', '-')} | {r.get('knn_top1_k200', '-')} | {lr.get('images_per_s', '-')} | "
                     f"{lr.get('epochs', '-')} | {lr.get('knn_top1_k200', '-')} | {ratio} |")
    if report.get("lightly", {}).get("skipped"):
        lines += ["", f"lightly skipped: {report['lightly']['skipped']}"]
    lines += [f"\nerror in {e['part']}: {e['error']}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(".data/cifar10"), help="folder with train.tar.gz and test.tar.gz")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=50.0, help="training seconds per method and library")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0, help="ResNet-18 width multiplier")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--compile", default="false", help="run.compile for nolabel: false, true or a backend")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--workers", type=int, default=8, help="lightly's DataLoader workers")
    p.add_argument("--skip-lightly", action="store_true")
    p.add_argument("--ceiling-steps", type=int, default=10)
    p.add_argument("--set", nargs="*", default=[], help="more nolabel overrides section.key=value")
    p.add_argument("--tiny", action="store_true", help="a CPU smoke run of every part (the test suite's)")
    a = p.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    train_spec, test_spec = str(a.data / "train.tar.gz"), str(a.data / "test.tar.gz")
    max_steps = None
    if a.tiny:
        a.batch_size, a.width, a.budget_s, a.ceiling_steps, a.workers, max_steps = 16, 0.125, 3.0, 2, 0, 6
        a.precision = "auto"
        train_spec, test_spec = "demo?n=512", "demo:test?n=128"
    elif not (a.data / "train.tar.gz").is_file():
        sys.exit(f"{a.data}: no CIFAR-10 archives (train.tar.gz, test.tar.gz); run benchmarks/gpu_pack.sh "
                 "or give --data")
    device, a.precision = dist_setup.pick_device("auto", a.precision)
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "gpu_check", "date": date.today().isoformat(), "tiny": a.tiny,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "precision": a.precision, "budget_s": a.budget_s,
              "batch_size": a.batch_size, "width": a.width, "command": " ".join(sys.argv), "errors": []}

    def write():
        (a.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (a.out / "gpu_check.md").write_text(_markdown(report))

    def part(label, fn):
        t = time.perf_counter()
        try:
            return fn()
        except Exception as e:                 # recorded; the other parts still run
            report["errors"].append({"part": label, "error": f"{type(e).__name__}: {e}",
                                     "traceback": traceback.format_exc()[-3000:]})
            return None
        finally:
            report.setdefault("seconds", {})[label] = round(time.perf_counter() - t, 1)
            write()

    report["ceiling"] = part("ceiling", lambda: ceiling(a, device))
    report["nolabel"] = []
    for m in methods:
        r = part(f"nolabel {m}", lambda m=m: nolabel_method(m, a, device, train_spec, test_spec, a.out / f"nolabel-{m}"))
        if r:
            report["nolabel"].append(r)
            write()
    why_not = "--skip-lightly" if a.skip_lightly else lightly_runs.available()
    report["lightly"] = {"skipped": why_not, "runs": []}
    if why_not is None:
        data = {role: open_images(spec, progress=False) for role, spec in (("train", train_spec), ("test", test_spec))}
        tensors = {role: d.subset(range(len(d))) for role, d in data.items()}
        x = {role: next(t.batches(len(t), shuffle=False)) for role, t in tensors.items()}
        for m in methods:
            r = part(f"lightly {m}", lambda m=m: lightly_runs.run(
                m, x["train"].images, x["train"].labels, x["test"].images, x["test"].labels, a.budget_s,
                a.batch_size, device, a.workers, max_steps))
            if r:
                report["lightly"]["runs"].append(r)
                write()
    elif not a.tiny and not a.skip_lightly:
        report["errors"].append({"part": "lightly", "error": f"lightly does not import: {why_not}"})
    write()
    print(_markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
