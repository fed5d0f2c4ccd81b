"""The demo: train on the built-in dataset, then compare the k-NN accuracy of the
trained backbone with a random initialisation of the same backbone and raw pixels
on the held-out demo images."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from nolabel.checkpoint import CHECKPOINT
from nolabel.config import load_yaml, new_config
from nolabel.evaluate.protocols import knn_protocol
from nolabel.presets import apply_demo_preset
from nolabel.train import CONFIG_FILE, train


def run_demo(out: Path, method: str = "dino", epochs: int | None = None, fresh: bool = False) -> dict:
    t0 = time.time()
    if fresh and out.exists():
        shutil.rmtree(out)
    if (out / CHECKPOINT).exists():
        cfg = load_yaml(out / CONFIG_FILE)
        if epochs is not None and epochs != cfg.run.epochs:
            raise ValueError(f"{out} holds a demo run of {cfg.run.epochs} epochs: use --fresh to start over")
        print(f"continuing the demo run in {out} (use --fresh to start over)")
        train(cfg, resume=True)
    else:
        cfg = apply_demo_preset(new_config(method))
        cfg.data.train = "demo"
        cfg.run.out = str(out)
        if epochs is not None:
            cfg.run.epochs = epochs
        train(cfg)
    backbone = load_yaml(out / CONFIG_FILE).model.backbone
    t_train = time.time() - t0
    rows = {}
    # the baseline is the very same architecture, randomly initialised
    for name, spec in (("trained", str(out)), (f"random init ({backbone})", f"random:{out}"), ("pixels", "pixels")):
        rows[name] = knn_protocol(spec, "demo:train", "demo:test", progress=False)
    summary = {"train_seconds": round(t_train, 1), "total_seconds": round(time.time() - t0, 1),
               "knn": {n: {"top1": r["top1"], "top5": r["top5"]} for n, r in rows.items()}}
    (out / "demo_knn.json").write_text(json.dumps(summary, indent=2))
    print(f"\nk-NN on demo:test (k=20, T=0.07), {method} {backbone} trained {t_train:.0f}s:")
    for name, r in rows.items():
        print(f"  {name:<22} top-1 {r['top1']:6.2f}%   top-5 {r['top5']:6.2f}%")
    print(f"results in {out / 'demo_knn.json'}, curves in {out / 'metrics.png'}")
    return summary
