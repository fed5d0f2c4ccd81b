"""What a run leaves in its folder for people: ``metrics.jsonl`` (one JSON object per
logged step and per epoch), ``metrics.png`` (the curves), ``train.log`` (messages,
warnings, skipped files) and a progress bar on the terminal."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from nolabel.atomic import atomic_write
from nolabel.tensorboard_log import TensorBoardEvents

METRICS = "metrics.jsonl"
PLOT = "metrics.png"
LOG = "train.log"


def get_logger(run_dir: Path | None = None, enabled: bool = True) -> logging.Logger:
    """The ``nolabel`` logger, writing to stderr and to ``run_dir/train.log``."""
    logger = logging.getLogger("nolabel")
    logger.setLevel(logging.INFO if enabled else logging.ERROR)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if run_dir is not None and enabled:
        fh = logging.FileHandler(Path(run_dir) / LOG)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint are dropped
    so the file reads as one uninterrupted run."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = False):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        # --run.tensorboard=true: the same records as TensorBoard scalars (nolabel.tensorboard_log)
        self.events = TensorBoardEvents(run_dir) if tensorboard and enabled else None

    def truncate_from(self, step: int) -> None:
        """Keep only records with ``step < step``."""
        if self.events is not None:
            self.events.purge_from(step)
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.read() if line.get("step", -1) < step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.events is not None:
            self.events.write(clean)

    def close(self) -> None:
        """Close the TensorBoard event file, if any (metrics.jsonl is closed after each write)."""
        if self.events is not None:
            self.events.close()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


HEALTH_AXES = {"teacher_entropy": "teacher entropy (nats)", "kl": "teacher-student KL (nats)",
               "emb_std": "std of l2-normalised features"}


def _log_k(run_dir: Path) -> float | None:
    """log K of a DINO run (its ``out_dim`` in config.yaml), for the uniform-output line."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
        k = raw[raw["method"]]["out_dim"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return math.log(k) if isinstance(k, int) and k > 1 else None


def _readable(ax, values: list[float]) -> None:
    """No offset notation, and a nearly flat curve shown flat: the y-range is at least 2% of
    the values' size, so noise in the 4th digit is not stretched over the whole panel."""
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return
    lo, hi = min(finite), max(finite)
    floor = 0.02 * max(abs(lo), abs(hi)) or 1e-12
    if hi - lo < floor:
        mid = (hi + lo) / 2
        ax.set_ylim(mid - floor / 2, mid + floor / 2)


def plot_metrics(run_dir: Path) -> Path | None:
    """Write ``metrics.png`` (:func:`metrics_figure`) into the run folder; None before the
    first logged step."""
    import matplotlib.pyplot as plt

    fig = metrics_figure(run_dir)
    if fig is None:
        return None
    out = Path(run_dir) / PLOT
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return out


def metrics_figure(run_dir: Path):
    """The loss and learning rate per step, the health metrics (per epoch; per logged step
    when the run has fewer than 3 epochs) and the k-NN curves, every y-axis labelled, log K
    drawn on the teacher-entropy panel. Epochs are numbered from 1, as train.log does."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = MetricsLog(run_dir).read()
    steps = [r for r in records if r.get("type") == "step"]
    epochs = [r for r in records if r.get("type") == "epoch"]
    if not steps:
        return None
    by_step = len(epochs) < 3                     # a short run: one point an epoch says nothing
    rows, x_key, x_label = (steps, "step", "step") if by_step else (epochs, "epoch", "epoch")
    health = [k for k in HEALTH_AXES if any(k in r for r in rows)]
    knn = [r for r in records if r.get("type") == "knn"]
    n = 2 + len(health) + bool(knn)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "lr", "learning rate")):
        values = [r.get(key) for r in steps]
        ax.plot([r["step"] for r in steps], values, lw=0.8)
        ax.set(title=label, xlabel="step", ylabel=label)
        _readable(ax, values)
    for ax, key in zip(axes[2:], health):
        pts = [(r[x_key] + (x_key == "epoch"), r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if not by_step else None, ms=3, lw=0.8)
        ax.set(title=key, xlabel=x_label, ylabel=HEALTH_AXES[key])
        log_k = _log_k(run_dir) if key == "teacher_entropy" else None
        if log_k is not None:      # the uniform output's entropy (thesis Fig. 5.8)
            ax.axhline(log_k, color="grey", ls="--", lw=0.8, label=f"log K = {log_k:.2f}")
            ax.legend(fontsize=7)
        _readable(ax, [p[1] for p in pts] + ([log_k] if log_k is not None else []))
    if knn:   # k-NN learning curves (nolabel.knn_monitor)
        keys = sorted({k for r in knn for k in r if k.startswith("knn_top1_k")}, key=lambda k: int(k[10:]))
        use_steps = len({r["epoch"] for r in knn}) < 2 and by_step
        for key in keys:
            pts = [(r["step"] if use_steps else r["epoch"] + 1, r[key]) for r in knn if r.get(key) is not None]
            axes[-1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"k={key[10:]}")
        axes[-1].set(title="k-NN top-1", xlabel="step" if use_steps else "epoch", ylabel="top-1 (%)")
        axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


class Progress:
    """A per-epoch progress bar showing loss, learning rate, images/s and the whole
    run's remaining time."""

    def __init__(self, enabled: bool, total_steps: int):
        self.enabled = enabled
        self.total_steps = total_steps
        self.bar = None
        self.t0 = time.time()
        self.steps_done = 0
        self.note = ""          # appended to the postfix, e.g. the latest k-NN top-1

    def start_epoch(self, epoch: int, epochs: int, steps: int, initial: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        self.close()
        self.bar = tqdm(total=steps, initial=initial, desc=f"epoch {epoch + 1}/{epochs}",
                        dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0.5)

    def update(self, global_step: int, loss: float, lr: float, images_per_s: float) -> None:
        self.steps_done += 1
        if self.bar is None:
            return
        elapsed = time.time() - self.t0
        remaining = (self.total_steps - global_step) * elapsed / max(self.steps_done, 1)
        rate = f"{images_per_s:.1f}" if images_per_s < 9.95 else f"{images_per_s:.0f}"  # slow runs: not "0"
        self.bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e} {rate} img/s "
                                 f"run ETA {int(remaining // 60)}m{int(remaining % 60):02d}s"
                                 + (f" {self.note}" if self.note else ""), refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
