"""The demo: train on the built-in dataset, then compare the k-NN accuracy of the
trained backbone with a random initialisation of the same backbone and raw pixels
on the held-out demo images.

It trains SimCLR by default (``presets.DEMO_METHOD``: the method that learns the demo
within minutes on a CPU, BENCHMARKS.md "The demo") and names DINO's command as the next
thing to try. A demo interrupted by Ctrl-C keeps its checkpoint, skips the comparison
(the model is half-trained) and raises the training loop's
:class:`~nolabel.train.TrainingInterrupted` with the demo's own command to continue
(the CLI maps it to exit status 130/143 as for ``nolabel train``); running it again continues.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from nolabel.config import apply_overrides, diff, load_yaml, new_config, set_value
from nolabel.evaluate.knn import knn_protocol
from nolabel.presets import DEMO_METHOD, apply_demo_preset
from nolabel.runs import CHECKPOINT, CONFIG_FILE
from nolabel.train import TrainingInterrupted, train

TRAIN, TEST = "demo:train", "demo:test"


def run_demo(out: Path, method: str | None = None, epochs: int | None = None, fresh: bool = False,
             seed: int | None = None, train_spec: str = TRAIN, test_spec: str = TEST,
             overrides: tuple[str, ...] = ()) -> dict:
    """Train (or continue) the demo run in ``out``, then print and return the k-NN
    comparison. ``overrides`` are ``section.key=value`` settings applied after the preset."""
    t0 = time.time()
    if fresh and out.exists():
        shutil.rmtree(out)
    if (out / CHECKPOINT).exists():
        cfg = load_yaml(out / CONFIG_FILE)
        asked = {"--method": (method, cfg.method), "--epochs": (epochs, cfg.run.epochs),
                 "--seed": (seed, cfg.run.seed)}
        for option, (value, saved) in asked.items():
            if value is not None and value != saved:
                raise ValueError(f"{out} holds a demo run with {option} {saved}: add --fresh to start over "
                                 f"with {option} {value}, or choose another --out")
        changed = diff(cfg, apply_overrides(load_yaml(out / CONFIG_FILE), list(overrides)))
        if changed:
            raise ValueError(f"{out} holds a demo run whose config differs in {', '.join(changed)}: add --fresh "
                             "to start over with them, or choose another --out")
        print(f"continuing the demo run in {out} (add --fresh to start over)")
        cfg.run.out = str(out)             # the folder is the run, wherever it was moved
        _train(cfg, out, resume=True)
    else:
        cfg = new_config(method or DEMO_METHOD)
        cfg.data.train = train_spec
        cfg.run.out = str(out)
        apply_overrides(cfg, list(overrides))
        if epochs is not None:
            set_value(cfg, "run.epochs", epochs)
        if seed is not None:
            set_value(cfg, "run.seed", seed)
        apply_demo_preset(cfg)                 # the demo's values where no option was given
        _train(cfg, out)
    saved = load_yaml(out / CONFIG_FILE)
    t_train = time.time() - t0
    # the baseline is the very same architecture, randomly initialised
    models = (("trained", str(out)), (f"random init ({saved.model.backbone})", f"random:{out}"), ("pixels", "pixels"))
    rows = knn_rows(models, train_spec, test_spec, progress=saved.run.progress)
    summary = {"method": saved.method, "seed": saved.run.seed, "train_seconds": round(t_train, 1),
               "total_seconds": round(time.time() - t0, 1),
               "knn": {n: {"top1": r["top1"], "top5": r["top5"]} for n, r in rows.items()}}
    (out / "demo_knn.json").write_text(json.dumps(summary, indent=2))
    print(f"\nk-NN on {test_spec} (k=20, T=0.07), {saved.method} {saved.model.backbone} trained {t_train:.0f}s:")
    for name, r in rows.items():
        print(f"  {name:<22} top-1 {r['top1']:6.2f}%   top-5 {r['top5']:6.2f}%")
    print(f"results in {out / 'demo_knn.json'}, curves in {out / 'metrics.png'}")
    if saved.method != "dino":
        print(f"\nNext: DINO (thesis ch. 5) on the same data, e.g.\n"
              f"  nolabel train --method dino --data demo --out {out.parent / 'demo-dino'}\n"
              f"  nolabel eval knn {out.parent / 'demo-dino'} --train {TRAIN} --test {TEST}\n"
              "(in a CPU budget DINO stays on its uniform plateau on this set: BENCHMARKS.md, \"The demo\")")
    return summary


def knn_rows(models, train_spec: str, test_spec: str, progress: bool = True) -> dict[str, dict]:
    """k-NN result of each ``(name, model spec)`` of ``models``, by name; with ``progress``,
    a bar on stderr names the model being evaluated (``--run.progress=false``: silent)."""
    from tqdm import tqdm

    rows = {}
    with tqdm(total=len(models), desc="k-NN", unit="model", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        for name, spec in models:
            bar.set_postfix_str(name)        # drawn now: "k-NN: i/3 ... <name being evaluated>"
            rows[name] = knn_protocol(spec, train_spec, test_spec, progress=False)
            bar.update(1)
    return rows


def _train(cfg, out: Path, resume: bool = False) -> None:
    try:
        train(cfg, resume=resume)
    except TrainingInterrupted as stopped:    # the comparison is skipped: the model is half-trained
        stopped.command = f"nolabel demo --out {shlex.quote(str(out))}"
        raise
