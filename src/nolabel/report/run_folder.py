"""The training half of the run report, read from the run folder: the config
(``config.yaml``), the curves and last values (``metrics.jsonl``, drawn by
:func:`nolabel.runlog.metrics_figure`) and the files training skipped
(``skipped_files.txt``)."""
from __future__ import annotations

import io
from pathlib import Path

import yaml

from nolabel.report.errors import ReportError
from nolabel.report.html import esc, image, note, pairs, plain, side_by_side, table
from nolabel.report.output import read_dict
from nolabel.runlog import METRICS, MetricsLog, metrics_figure
from nolabel.runs import BAD_FILES, CONFIG_FILE

MAX_SKIPPED_ROWS = 500          # a longer skipped_files.txt is counted, not listed
CURVE_COLUMNS = 3               # panels per row of the curves figure


def read_config(run_dir: Path) -> dict:
    """The run's ``config.yaml`` as a dict, or a ReportError when ``run_dir`` is not a run folder."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ReportError(f"{run_dir} is not a run folder (no {CONFIG_FILE}): give the --out of `nolabel train`")
    return read_dict(path, yaml.safe_load, (yaml.YAMLError,), "YAML",
                     "config (expected sections such as run: and model:)")


def config_section(config: dict) -> str:
    """Every config value, one small table per section (the top-level scalars first)."""
    top = [(key, plain(v, exact=True)) for key, v in config.items() if not isinstance(v, dict)]
    blocks = [("top level", pairs(top))] if top else []
    blocks += [(key, pairs((k, plain(v, exact=True)) for k, v in section.items()))
               for key, section in config.items() if isinstance(section, dict)]
    return (f"<p>From <code>{CONFIG_FILE}</code> in the run folder.</p>\n"
            + side_by_side([f"<h3>{esc(key)}</h3>\n{body}" for key, body in blocks]))


def _curves_png(run_dir: Path) -> bytes | None:
    """:func:`metrics_figure` as PNG bytes, its panels wrapped :data:`CURVE_COLUMNS` to a row
    so that they stay legible at page width; None before the first logged step."""
    import matplotlib.pyplot as plt

    fig = metrics_figure(run_dir)
    if fig is None:
        return None
    axes = fig.axes
    n_rows = -(-len(axes) // CURVE_COLUMNS)
    if n_rows > 1:
        grid = fig.add_gridspec(n_rows, CURVE_COLUMNS)
        for i, ax in enumerate(axes):
            ax.set_subplotspec(grid[i // CURVE_COLUMNS, i % CURVE_COLUMNS])
        fig.set_size_inches(4.2 * CURVE_COLUMNS, 3.3 * n_rows)
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _last_values(records: list[dict], epochs: object) -> str:
    """The means of the last logged epoch and the latest in-training k-NN, side by side."""
    parts = []
    last = next((r for r in reversed(records) if r.get("type") == "epoch"), None)
    if last is not None:
        parts.append(f"<h3>Last epoch ({esc(_epoch_number(last))} of {esc(plain(epochs))}, "
                     f"step {esc(plain(last.get('step')))})</h3>\n"
                     + pairs((k, plain(v)) for k, v in last.items() if k not in ("type", "epoch", "step")))
    knn = next((r for r in reversed(records) if r.get("type") == "knn"), None)
    if knn is not None:
        parts.append(f"<h3>In-training k-NN (after epoch {esc(_epoch_number(knn))})</h3>\n"
                     + pairs((k, plain(v)) for k, v in knn.items() if k not in ("type", "epoch", "step")))
    return side_by_side(parts) if parts else ""


def _epoch_number(record: dict) -> str:
    """The record's epoch counted from 1, as train.log and the curves count it."""
    epoch = record.get("epoch")
    return str(epoch + 1) if isinstance(epoch, int) else "?"


def training_section(run_dir: Path, config: dict) -> str:
    """The curves (loss, learning rate, collapse monitor, k-NN) and the last logged values."""
    path = run_dir / METRICS
    if not path.is_file():
        return note(f"no {METRICS} in the run folder: training has logged nothing yet")
    try:
        records = MetricsLog(run_dir).read()
        png = _curves_png(run_dir)
    except ValueError as exc:      # a line that is not JSON (a copy cut short)
        return note(f"{path} could not be read ({exc}); the curves are left out")
    epochs = config.get("run", {}).get("epochs") if isinstance(config.get("run"), dict) else None
    text = f"<p>From <code>{METRICS}</code>: {len(records)} records.</p>\n"
    text += image(png, "image/png", "loss, learning rate, collapse monitor and k-NN curves") if png else note(
        f"{METRICS} has no training steps yet: no curves to draw")
    return text + _last_values(records, epochs)


def skipped_section(run_dir: Path) -> str:
    """The files training skipped (or used after a large upscale), with the reason."""
    path = run_dir / BAD_FILES
    if not path.is_file():
        return f"<p>None: training skipped no files (no <code>{BAD_FILES}</code> in the run folder).</p>\n"
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError as exc:
        return note(f"{path} could not be read ({exc.strerror or exc})")
    rows = [(*line.split("\t", 1), "")[:2] for line in lines[:MAX_SKIPPED_ROWS]]
    text = f"<p>{len(lines)} file(s), from <code>{BAD_FILES}</code>.</p>\n" + table(("file", "reason"), rows)
    if len(lines) > MAX_SKIPPED_ROWS:
        text += note(f"{len(lines) - MAX_SKIPPED_ROWS} more are listed in {path}")
    return text
