"""Pretrain-then-k-NN benchmark, CIFAR-10 by default: pretrain with a method (DINO by default), then weighted k-NN
top-1 under both protocols (thesis k=20 T=0.07; lightly k=200 T=0.1) and the NMI with
the labels of a k-means (k = number of classes, thesis 3.2.2) of the test features, for
the trained backbone, the same architecture randomly initialised, and raw pixels, all
measured in this run. Prints one JSON object; the last epoch's logged values (e.g. the
clustering methods' ``nmi_labels``) are in it too.

    python benchmarks/pretrain_knn.py --epochs 10 --train-subset 10000 --out runs/bench
    python benchmarks/pretrain_knn.py --train-spec demo --test-spec demo:test --out runs/bench-demo

Data: ../shared/datasets/cifar10/{train,test}.tar.gz (image folders in archives), or
--data DIR holding those two archives, or any data specs with --train-spec/--test-spec.
Extra config fields: --set section.key=value.
Speed is also reported as a ratio to the bare backbone's forward+backward on the
same batch size and image size, timed in the same process.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

import torch

from nolabel.backbones import build_backbone
from nolabel.cli import main as cli_main
from nolabel.config import apply_overrides, load_yaml, new_config
from nolabel.data import open_images
from nolabel.evaluate.clustering import cluster_quality
from nolabel.evaluate.features import extract_features
from nolabel.evaluate.knn import knn_classify
from nolabel.evaluate.models import load_model
from nolabel.presets import backbone_kwargs
from nolabel.runlog import MetricsLog
from nolabel.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"
PROTOCOLS = {"thesis": (20, 0.07), "lightly": (200, 0.1)}


def bare_backbone_speed(cfg, batch_size: int, device: torch.device, steps: int = 5) -> float:
    """Images/s of forward+backward of the backbone alone on one batch of
    full-size inputs (no views, no head, no optimizer)."""
    net = build_backbone(cfg.model.backbone, image_size=cfg.data.image_size, **backbone_kwargs(cfg)).to(device)
    x = torch.randn(batch_size, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        net(x).float().pow(2).mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch_size / (sorted(times[1:])[len(times[1:]) // 2])


def peak_memory_gb(device: torch.device) -> dict:
    out = {"cpu_max_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if device.type == "cuda":
        out["gpu_max_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def score_run(run: Path, bank, test, device: torch.device) -> tuple[dict, dict]:
    """k-NN top-1 under both protocols and the k-means NMI of the test features, for the
    run's backbone, the same architecture randomly initialised and raw pixels:
    ({name: {protocol: top1, "eval_seconds": s}}, {name: nmi})."""
    results, nmis = {}, {}
    for name, spec in (("trained", str(run)), ("random_init", f"random:{run}"), ("pixels", "pixels")):
        t = time.time()
        model = load_model(spec, image_size=bank.image_size)
        bank_x, bank_y = extract_features(model, bank, 512, device)
        test_x, test_y = extract_features(model, test, 512, device)
        results[name] = {proto: round(knn_classify(bank_x, bank_y, test_x, test_y, k=k, temperature=t_)["top1"], 2)
                         for proto, (k, t_) in PROTOCOLS.items()}
        n_classes = int(test_y.max()) + 1
        nmis[name] = round(cluster_quality(test_x, test_y, n_classes)["nmi"], 4)
        results[name]["eval_seconds"] = round(time.time() - t, 1)
    return results, nmis


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.tar.gz and test.tar.gz")
    p.add_argument("--train-spec", default=None, help="any data spec to pretrain on and use as k-NN bank")
    p.add_argument("--test-spec", default=None, help="any labelled data spec to classify")
    p.add_argument("--method", default="dino")
    p.add_argument("--backbone", default="vit_tiny")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--train-subset", type=int, default=None, help="pretrain on a stratified subset of N images")
    p.add_argument("--knn-train-subset", type=int, default=None, help="k-NN bank subset (default: all 50,000)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-cifar10"))
    p.add_argument("--set", nargs="*", default=[], help="config overrides section.key=value")
    p.add_argument("--resume", action="store_true",
                   help="continue the stopped run in --out (the same options; of --set, a resumed run may change "
                        "only how it proceeds, e.g. run.threads: nolabel train --resume), then score it")
    args = p.parse_args(argv)

    if args.train_spec and args.test_spec:
        train_base, test_spec, benchmark = args.train_spec, args.test_spec, args.train_spec
    else:
        train_archive, test_archive = args.data / "train.tar.gz", args.data / "test.tar.gz"
        if not train_archive.is_file() or not test_archive.is_file():
            sys.exit(f"CIFAR-10 archives not found in {args.data}: expected train.tar.gz and test.tar.gz "
                     "(or give --train-spec and --test-spec)")
        train_base, test_spec, benchmark = str(train_archive), str(test_archive), "cifar10"
    train_spec = train_base + (f"?subset={args.train_subset}" if args.train_subset else "")
    bank_spec = train_base + (f"?subset={args.knn_train_subset}" if args.knn_train_subset else "")

    settings = [f"data.train={train_spec}", f"model.backbone={args.backbone}", f"run.out={args.out}",
                f"run.epochs={args.epochs}", f"run.batch_size={args.batch_size}", "run.progress=false", *args.set]
    t0 = time.time()
    if args.resume:      # the CLI's resume: it checks the options against the run's saved config
        with contextlib.redirect_stdout(sys.stderr):          # stdout is the report's JSON alone
            code = cli_main(["train", "--out", str(args.out), "--method", args.method, "--resume",
                             *[f"--{s}" for s in settings if not s.startswith("run.out=")]])
        if code:
            sys.exit(code)
    elif (args.out / "checkpoint.pt").exists():   # never train over a finished benchmark's run
        sys.exit(f"{args.out} already holds a run (and maybe its benchmark.json): choose another --out, "
                 "delete that folder, or continue a stopped one with --resume")
    else:
        cfg = new_config(args.method)
        apply_overrides(cfg, settings)
        train(cfg)
    train_seconds = time.time() - t0
    cfg = load_yaml(args.out / "config.yaml")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_memory = peak_memory_gb(device)
    records = MetricsLog(args.out).read()
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    rates = sorted(r["images_per_s"] for r in steps[1:] if r.get("images_per_s"))
    train_rate = rates[len(rates) // 2] if rates else float("nan")
    bare_rate = bare_backbone_speed(cfg, min(cfg.run.batch_size, 256), device)

    size = cfg.data.image_size
    bank = open_images(bank_spec, image_size=size, progress=False)
    test = open_images(test_spec, image_size=size, progress=False)
    results, nmis = score_run(args.out, bank, test, device)

    report = {
        "benchmark": benchmark, "method": cfg.method, "backbone": cfg.model.backbone,
        "backbone_kwargs": backbone_kwargs(cfg), "image_size": size, "epochs": cfg.run.epochs,
        "batch_size": cfg.run.batch_size, "train_images": len(open_images(train_spec, image_size=size,
                                                                            progress=False)),
        "knn_bank_images": len(bank), "test_images": len(test),
        "knn_top1": results, "nmi_kmeans_test": nmis, "train_seconds": round(train_seconds, 1),
        "resumed": args.resume,     # train_seconds: this command's share of the training only
        "train_images_per_s": round(train_rate, 1), "bare_backbone_fwd_bwd_images_per_s": round(bare_rate, 1),
        "speed_ratio_to_bare_backbone": round(train_rate / bare_rate, 3),
        "peak_memory_during_training": train_memory, "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "date": date.today().isoformat(),
        "final_loss": steps[-1]["loss"] if steps else None,
        "last_epoch_log": epochs[-1] if epochs else None,
        "overrides": args.set, "command": " ".join(sys.argv),
    }
    print(json.dumps(report, indent=2))
    (args.out / "benchmark.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
