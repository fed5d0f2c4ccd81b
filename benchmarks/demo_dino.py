"""DINO on the demo set through the real training loop, scored by k-NN beside random init and pixels.

The evidence behind issue 2's open demo criterion (BENCHMARKS.md, "DINO on the demo
set"): ``nolabel train --method dino --data demo`` with the given options, optionally
on a demo set of another design (``--design``, ``--bg-contrast``, ``--bg-noise``, ...:
the knobs of ``demo_learnability.py``; the rows measured before 2026-12-02 used
``--design textured``), then weighted k-NN (k=20, T=0.07, demo ->
demo:test) of the run, of snapshots of it taken after the epochs in ``--snapshots``,
of the same architecture randomly initialised and of raw pixels, all on the same
data. Prints one JSON object with the teacher entropy of every epoch.

    python benchmarks/demo_dino.py --out runs/demo-dino-long --snapshots 5,10,15 -- \\
        --model.width=0.25 --model.small_stem=true --run.epochs=25 --dino.hue=0.5
    python benchmarks/demo_dino.py --out runs/demo-dino-bg03 --design textured --bg-contrast 0.3 -- --run.epochs=5 ...
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling script's data patch
from demo_learnability import demo_design, design_changes, design_options  # noqa: E402

from nolabel.config import apply_overrides, load_yaml, new_config  # noqa: E402
from nolabel.data import open_images  # noqa: E402
from nolabel.evaluate.knn import knn_protocol  # noqa: E402
from nolabel.presets import apply_demo_preset, is_demo  # noqa: E402
from nolabel.runlog import MetricsLog  # noqa: E402
from nolabel.runs import CONFIG_FILE  # noqa: E402
from nolabel.train import train  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder (must not hold a run)")
    design_options(p)
    p.add_argument("--snapshots", default="", help="comma-separated epochs after which the run is copied and scored")
    p.add_argument("--knn-train", default="demo:train", help="k-NN bank (labelled data spec; demo specs get --design's)")
    p.add_argument("--knn-test", default="demo:test", help="k-NN test set (labelled data spec)")
    p.add_argument("train_options", nargs="*", help="after --: options of `nolabel train`")
    a = p.parse_args(argv)
    if a.out.exists():
        sys.exit(f"{a.out} exists: choose another --out or delete it")
    snapshots = sorted(int(e) for e in a.snapshots.split(",") if e)
    with demo_design(a.design, **design_changes(a)) as design:
        knn_train, knn_test = (_with_design(s, design) for s in (a.knn_train, a.knn_test))
        t0 = time.time()
        _train(a.train_options, a.out, snapshots, design)
        train_seconds = time.time() - t0
        knn = {name: knn_protocol(spec, knn_train, knn_test, progress=False)["top1"]
               for name, spec in [("trained", str(a.out)),
                                  *[(f"epoch {e}", f"{a.out}-epoch{e}") for e in snapshots],
                                  ("random_init", f"random:{a.out}"), ("pixels", "pixels")]}
    epochs = [r for r in MetricsLog(a.out).read() if r["type"] == "epoch"]
    report = {"train_options": a.train_options, "design": a.design, "design_changes": design_changes(a),
              "train_seconds": round(train_seconds, 1), "steps": epochs[-1]["step"] + 1 if epochs else 0,
              "knn_top1": knn, "teacher_entropy": [round(r["teacher_entropy"], 3) for r in epochs],
              "kl": [float(f"{r['kl']:.3g}") for r in epochs]}
    print(json.dumps(report, indent=1))
    return report


def _with_design(spec: str, design: str) -> str:
    """A demo spec with ``design=``; other specs unchanged."""
    if not is_demo(spec):
        return spec
    return f"{spec}{'&' if '?' in spec else '?'}design={design}"


def _train(options: list[str], out: Path, snapshots: list[int], design: str) -> None:
    """``nolabel train --method dino --data demo OPTIONS``, copying the run folder to
    ``OUT-epochE`` once epoch E's checkpoint is written (before the first step of epoch
    E + 1; the last epoch's is the run itself)."""
    cfg = new_config("dino")
    apply_overrides(cfg, [f"--data.train=demo?design={design}", f"--run.out={out}", "--run.progress=false", *options])
    apply_demo_preset(cfg)              # the demo's values where no option was given
    state = {}

    def on_step(step, logs):
        if "steps_per_epoch" not in state:      # the saved config has the resolved batch size
            saved = load_yaml(out / CONFIG_FILE)
            n = len(open_images(saved.data.train, image_size=saved.data.image_size, progress=False))
            state["steps_per_epoch"] = n // saved.run.batch_size
        epoch, first = divmod(step, state["steps_per_epoch"])
        if first == 0 and epoch in snapshots:
            shutil.copytree(out, out.parent / f"{out.name}-epoch{epoch}")

    train(cfg, on_step=on_step if snapshots else None)


if __name__ == "__main__":
    main()
