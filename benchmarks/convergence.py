"""Convergence within a wall-clock budget: how far a method gets on CIFAR-10 in N minutes.

    python benchmarks/convergence.py simclr --minutes 60 --out runs/conv-simclr
    python benchmarks/convergence.py --plot BENCH_curves.png runs/conv-*/convergence.json

Trains METHOD on the full 50,000-image CIFAR-10 training set (any labelled spec with
``--train-spec``/``--test-spec``) with the run length sized to the budget: a short
probe through the real loop measures the step time, then the number of epochs is
the budget (less the probe and the final scoring's estimate, from the encoder's inference
timed on a sample) over the epoch time,
so the schedules (warm-up, cosine lr, teacher momentum, ...) end with the budget.
``--epochs N`` fixes the length instead (the steps an hour bought on another machine:
the report names the CPU, and step times differ between machines of the same core count).
The in-training k-NN (``--eval.*``: a 5,000-image bank of the training set and 1,000
test images, both protocols) gives the learning curve. At the end, weighted k-NN of
the trained backbone under both protocols (k=20 T=0.07; k=200 T=0.1), from the whole
training set as the bank onto the 10,000 test images, beside the same architecture
randomly initialised and raw pixels measured the same way. Prints one JSON object and
writes it to ``OUT/convergence.json``.

Defaults are the CPU protocol of BENCHMARKS.md (ResNet-18 x0.25 with the small-image
stem, batch 256) and each method's own defaults under its recipe (``run.recipe=auto``:
the small recipe at 32 px, recorded in the report); ``--set section.key=value`` changes
any field (e.g. a recipe under study, or ``run.recipe=thesis``). ``--backbone vit_tiny``
trains the ViT the masked-image methods need (MAE, iBOT) instead of the ResNet.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sibling benchmark's scoring
from pretrain_knn import DEFAULT_DATA, score_run  # noqa: E402

from nolabel.backbones import build_backbone  # noqa: E402
from nolabel.config import apply_overrides, load_yaml, new_config  # noqa: E402
from nolabel.data import open_images, open_source  # noqa: E402
from nolabel.dist_setup import cpu_description, pick_device  # noqa: E402
from nolabel.evaluate.features import extract_features  # noqa: E402
from nolabel.evaluate.models import FeatureModel  # noqa: E402
from nolabel.presets import backbone_kwargs  # noqa: E402
from nolabel.runlog import MetricsLog  # noqa: E402
from nolabel.train import train  # noqa: E402

PROBE_STEPS = 12          # steps timed by the probe (the first 2 are warm-up and not counted)
# The final scoring (kept out of the training budget): the trained and the random-init encoder
# over the bank and the test images, timed on a sample at the probe, plus, for each of the three
# models (pixels too), the decoding, k-NN and k-means that do not depend on the encoder: 37-48 s
# of the pixels' row in every report of BENCHMARKS.md (AMD EPYC, 2 threads).
SCORE_SECONDS_PER_MODEL = 45
SCORE_SAMPLE = 512        # images whose encoding times the scoring estimate


class _ProbeDone(Exception):
    pass


def probe_step_seconds(cfg_overrides: list[str], method: str, out: Path, batch_size: int) -> float:
    """Median seconds of one training step through the real loop, on a small subset of
    the training data (the step time does not depend on the dataset size)."""
    cfg = new_config(method)
    apply_overrides(cfg, [*cfg_overrides, f"run.out={out}", "run.epochs=1", "eval.every=0", "run.progress=false"])
    cfg.data.train = cfg.data.train.split("?")[0] + f"?subset={batch_size * (PROBE_STEPS + 2)}"
    stamps: list[float] = []

    def on_step(step, logs):
        stamps.append(time.perf_counter())
        if len(stamps) > PROBE_STEPS:
            raise _ProbeDone

    try:
        train(cfg, on_step=on_step)
    except _ProbeDone:
        pass
    gaps = sorted(b - a for a, b in zip(stamps[2:], stamps[3:]))
    if not gaps:
        raise SystemExit("the probe ran fewer than 4 steps: is the batch larger than the data?")
    return gaps[len(gaps) // 2]


def score_seconds_estimate(probe: Path, n_images: int, device: torch.device) -> float:
    """Seconds the final scoring will take: the encoder of the probe's run (random weights:
    the cost does not depend on them) timed over ``SCORE_SAMPLE`` training images, scaled to
    the two encoders over ``n_images`` (bank + test), plus ``SCORE_SECONDS_PER_MODEL`` for each
    of the three models. A ViT's scoring takes ~14 min on 2 cores, a quarter-width ResNet's ~3."""
    cfg = load_yaml(probe / "config.yaml")
    size = cfg.data.image_size
    sample = open_images(cfg.data.train.split("?")[0] + f"?subset={SCORE_SAMPLE}", image_size=size, progress=False)
    net = build_backbone(cfg.model.backbone, image_size=size, **backbone_kwargs(cfg))
    t = time.perf_counter()
    extract_features(FeatureModel("probe", net, size), sample, SCORE_SAMPLE, device)
    per_image = (time.perf_counter() - t) / len(sample)
    return 2 * n_images * per_image + 3 * SCORE_SECONDS_PER_MODEL


def backbone_overrides(name: str) -> list[str]:
    """The ``model.*`` overrides of ``--backbone``: the CPU protocol's ResNet-18 x0.25 with the
    small-image stem for resnet18, the backbone's own defaults otherwise."""
    if name == "resnet18":
        return ["model.backbone=resnet18", "model.width=0.25", "model.small_stem=true"]
    return [f"model.backbone={name}"]


def plan_epochs(budget_s: float, step_s: float, steps_per_epoch: int, eval_fraction: float = 0.05) -> int:
    """Whole epochs that fit ``budget_s`` at ``step_s`` a step, keeping ``eval_fraction``
    of the time for the in-training k-NN; at least 1."""
    return max(1, math.floor(budget_s * (1 - eval_fraction) / (step_s * steps_per_epoch)))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", nargs="?", help="method name (nolabel train --method)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of the whole benchmark")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train.tar.gz and test.tar.gz")
    p.add_argument("--train-spec", default=None, help="labelled spec to train on and use as the final bank")
    p.add_argument("--test-spec", default=None, help="labelled spec to classify")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backbone", default="resnet18",
                   help="resnet18 (default): at quarter width with the small-image stem, the CPU protocol; "
                        "another registered backbone (e.g. vit_tiny for MAE and iBOT) with its own defaults "
                        "at the image size (patch 4 at 32 px), changed with --set model.*")
    p.add_argument("--epochs", type=int, default=0,
                   help="train this many epochs instead of the budget's plan: the same steps as a run on "
                        "another machine, to compare recipes across machines (the probe still runs and "
                        "is reported)")
    p.add_argument("--eval-every", type=int, default=0, help="epochs between k-NN points (0: about 10 points)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/conv-METHOD)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides section.key=value")
    p.add_argument("--score-only", action="store_true",
                   help="score the finished run in --out (its training is not repeated), e.g. after the "
                        "scoring stopped; the training time is read from its train.log")
    p.add_argument("--plot", type=Path, default=None, help="draw the curves of REPORTS into this PNG and exit")
    p.add_argument("reports", nargs="*", type=Path, help="with --plot: convergence.json files")
    a = p.parse_args(argv)
    if a.plot:
        return plot_curves([a.method, *a.reports] if a.method else a.reports, a.plot)
    if not a.method:
        p.error("give a METHOD (or --plot PNG REPORTS...)")
    t_start = time.time()
    train_spec, test_spec = a.train_spec, a.test_spec
    if not (train_spec and test_spec):
        train_spec, test_spec = str(a.data / "train.tar.gz"), str(a.data / "test.tar.gz")
        if not Path(train_spec).is_file() or not Path(test_spec).is_file():
            sys.exit(f"CIFAR-10 archives not found in {a.data}: expected train.tar.gz and test.tar.gz "
                     "(or give --train-spec and --test-spec)")
    out = a.out or Path(f"runs/conv-{a.method}")
    if a.score_only:
        cfg = load_yaml(out / "config.yaml") if (out / "config.yaml").is_file() else None
        train_seconds = logged_training_seconds(out / "train.log")
        if cfg is None or train_seconds is None or not (out / "checkpoint.pt").is_file():
            sys.exit(f"--score-only: {out} holds no finished run (config.yaml, checkpoint.pt and a train.log "
                     "that ends with 'done:')")
        steps_per_epoch = len(open_source(train_spec)) // cfg.run.batch_size
        return finish(a, out, train_spec, test_spec, cfg.run.epochs, steps_per_epoch, None, train_seconds, t_start)
    if (out / "checkpoint.pt").exists():
        sys.exit(f"{out} already holds a run: choose another --out or delete that folder")
    base = [f"data.train={train_spec}", *backbone_overrides(a.backbone), f"run.batch_size={a.batch_size}", *a.set]

    step_s = probe_step_seconds(base, a.method, out.with_name(out.name + "-probe"), a.batch_size)
    n_train = len(open_source(train_spec))             # counts the images without decoding them
    steps_per_epoch = n_train // a.batch_size
    device, _ = pick_device("auto", "fp32")         # the device the final scoring will use (finish)
    n_scored = n_train + len(open_source(test_spec))
    score_s = score_seconds_estimate(out.with_name(out.name + "-probe"), n_scored, device)
    budget_s = a.minutes * 60 - (time.time() - t_start) - score_s
    epochs = a.epochs or plan_epochs(budget_s, step_s, steps_per_epoch)
    every = a.eval_every or max(1, round(epochs / 10))
    cfg = new_config(a.method)
    apply_overrides(cfg, [*base, f"run.out={out}", f"run.epochs={epochs}", "run.progress=false",
                          f"eval.knn_train={train_spec}", f"eval.knn_test={test_spec}", f"eval.every={every}"])
    t0 = time.time()
    train(cfg)
    return finish(a, out, train_spec, test_spec, epochs, steps_per_epoch, step_s, time.time() - t0, t_start,
                  score_planned=score_s)


def logged_training_seconds(log: Path) -> float | None:
    """Seconds from a run's first line (its data line) to its 'done:' line in train.log
    (times of day; a run that passes midnight counts the day); None without 'done:'."""
    if not log.is_file():
        return None
    stamps = [(line[:8], line) for line in log.read_text().splitlines() if len(line) > 8 and line[2] == ":"]
    ends = [t for t, line in stamps if " done: " in line]
    if not stamps or not ends:
        return None

    def seconds(t):
        h, m, s = (int(x) for x in t.split(":"))
        return 3600 * h + 60 * m + s
    return (seconds(ends[-1]) - seconds(stamps[0][0])) % 86400


def finish(a, out: Path, train_spec: str, test_spec: str, epochs: int, steps_per_epoch: int,
           step_s: float | None, train_seconds: float, t_start: float, score_planned: float | None = None) -> dict:
    """Score the trained run against random init and pixels; write and return the report."""
    cfg = load_yaml(out / "config.yaml")
    records = MetricsLog(out).read()
    curve = [{k: r[k] for k in ("epoch", "step", "knn_top1_k20", "knn_top1_k200", "seconds") if k in r}
             for r in records if r["type"] == "knn"]
    device, _ = pick_device("auto", "fp32")
    size = cfg.data.image_size
    bank = open_images(train_spec, image_size=size, progress=False)
    test = open_images(test_spec, image_size=size, progress=False)
    t1 = time.time()
    results, nmis = score_run(out, bank, test, device)
    report = {
        "method": a.method, "backbone": cfg.model.backbone, "recipe": cfg.run.recipe,
        "minutes_budget": a.minutes, "overrides": a.set,
        "epochs": epochs, "epochs_from": "--epochs" if a.epochs else "budget",
        "batch_size": cfg.run.batch_size, "steps": epochs * steps_per_epoch,
        "probe_step_seconds": None if step_s is None else round(step_s, 4),
        "train_seconds": round(train_seconds, 1), "score_seconds": round(time.time() - t1, 1),
        "score_seconds_planned": None if score_planned is None else round(score_planned, 1),
        "total_seconds": round(time.time() - t_start, 1), "score_only": a.score_only,
        "train_images": len(bank), "knn_bank_images": len(bank),
        "test_images": len(test), "precision": cfg.run.precision,
        "cpu": cpu_description(), "threads": torch.get_num_threads(),
        "knn_top1": results, "nmi_kmeans_test": nmis, "curve": curve,
        "curve_protocol": f"in-training k-NN: bank {cfg.eval.bank_size} of {train_spec}, "
                          f"{cfg.eval.test_size} of {test_spec}",
        "final_loss": next((r["loss"] for r in reversed(records) if r["type"] == "epoch"), None),
        "torch": torch.__version__, "date": date.today().isoformat(), "command": " ".join(sys.argv),
    }
    text = json.dumps(report, indent=2)
    print(text)
    (out / "convergence.json").write_text(text)
    return report


def plot_curves(reports: list[Path], png: Path) -> dict:
    """One panel per protocol: in-training k-NN top-1 against the budget's minutes, one line
    per report, with the report's final random-init and pixel k-NN as dotted levels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [json.loads(Path(r).read_text()) for r in reports]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (key, proto, title) in zip(axes, (("knn_top1_k200", "lightly", "k=200, T=0.1"),
                                               ("knn_top1_k20", "thesis", "k=20, T=0.07"))):
        for rep in loaded:
            # the place in the budget the run's steps were planned for (the probe's quiet step time):
            # a run slowed by other jobs is drawn where its steps belong, not stretched
            minutes = [rep["minutes_budget"] * (c["step"] + 1) / rep["steps"] for c in rep["curve"]]
            line, = ax.plot(minutes, [c[key] for c in rep["curve"]], marker="o", label=rep["method"])
            ax.axhline(rep["knn_top1"]["pixels"][proto], color=line.get_color(), ls=":", lw=1)
        ax.axhline(loaded[0]["knn_top1"]["random_init"][proto], color="grey", ls="--", lw=1, label="random init")
        ax.set_title(f"in-training k-NN top-1 ({title}); dotted: raw pixels")
        ax.set_xlabel("minutes into the budget (step / planned steps)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("k-NN top-1 (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"plot": str(png), "reports": [str(r) for r in reports]}


if __name__ == "__main__":
    main()
