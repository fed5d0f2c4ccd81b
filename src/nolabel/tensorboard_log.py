"""Metrics as TensorBoard events, with ``--run.tensorboard=true``: every number of every
``metrics.jsonl`` record also goes to ``RUN/tensorboard`` as the scalar ``<type>/<key>``
(``step/loss``, ``epoch/emb_std``, ``knn/knn_top1_k20``) at the record's global step.
View them with ``tensorboard --logdir RUN``.

Needs the ``tensorboard`` package (``torch.utils.tensorboard`` writes through it), which
nolabel does not require: :func:`check_tensorboard` refuses the option, before any data
is read, when it is missing.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

from nolabel.config import ConfigError

TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = ("type", "step", "epoch")


def check_tensorboard(enabled: bool) -> None:
    """Raise :class:`ConfigError` when ``--run.tensorboard=true`` but ``tensorboard`` is not installed."""
    if enabled and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--run.tensorboard=true needs the tensorboard package, which is not installed: "
                          "pip install tensorboard (metrics.jsonl and metrics.png are written without it)")


def _summary_writer(log_dir: str, purge_step: int | None):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir, purge_step=purge_step)


class TensorBoardEvents:
    """Writes metrics records as scalars into ``run_dir/tensorboard``.

    Args:
        make_writer: ``(log_dir, purge_step) -> writer`` with ``add_scalar``, ``flush`` and
            ``close`` (default: ``torch.utils.tensorboard.SummaryWriter``).
    """

    def __init__(self, run_dir: Path, make_writer: Callable[[str, int | None], Any] | None = None) -> None:
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._make_writer = make_writer or _summary_writer
        self._writer = None
        self._purge_step: int | None = None

    def purge_from(self, step: int) -> None:
        """On resume: hide the events at ``step`` and later written before the
        interruption (TensorBoard's ``purge_step``). Takes effect before the first write."""
        if self._writer is None:
            self._purge_step = step

    def write(self, record: dict[str, Any]) -> None:
        """Every finite number of ``record`` (but its type, step and epoch) as ``<type>/<key>``."""
        step = record.get("step")
        if not isinstance(step, int):
            return
        if self._writer is None:
            self._writer = self._make_writer(str(self.log_dir), self._purge_step)
        kind = record.get("type", "step")
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(f"{kind}/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
