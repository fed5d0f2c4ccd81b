"""--run.tensorboard: metrics records as TensorBoard scalars, refused clearly without the package."""

from __future__ import annotations

import importlib.util
import math

import pytest

import nolabel.tensorboard_log as tb
from nolabel.cli import main
from nolabel.runlog import MetricsLog


class RecordingWriter:
    """Stands in for SummaryWriter: records what a run would write."""

    def __init__(self, log_dir: str, purge_step: int | None) -> None:
        self.log_dir, self.purge_step = log_dir, purge_step
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0
        self.closed = False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def test_records_become_scalars_at_their_step(tmp_path, monkeypatch) -> None:
    made: list[RecordingWriter] = []
    monkeypatch.setattr(tb, "_summary_writer", lambda *args: made.append(RecordingWriter(*args)) or made[-1])
    metrics = MetricsLog(tmp_path, tensorboard=True)
    metrics.truncate_from(5)                  # a resumed run: events from step 5 on are replaced
    metrics.write({"type": "step", "epoch": 0, "step": 5, "loss": 1.5, "lr": 0.1, "kl": math.nan,
                   "finite": True, "method": "dino"})
    metrics.write({"type": "knn", "epoch": 0, "step": 9, "knn_top1_k20": 50.0})
    metrics.close()
    assert len(made) == 1
    writer = made[0]
    assert (writer.log_dir, writer.purge_step) == (str(tmp_path / "tensorboard"), 5)
    assert writer.scalars == [("step/loss", 1.5, 5), ("step/lr", 0.1, 5), ("knn/knn_top1_k20", 50.0, 9)]
    assert writer.flushes == 2 and writer.closed
    assert len(metrics.read()) == 2           # metrics.jsonl is written as before
    MetricsLog(tmp_path / "other", enabled=False, tensorboard=True).write({"type": "step", "step": 1, "loss": 1.0})
    assert len(made) == 1                     # a non-main process writes no events


def test_missing_package_is_refused_before_the_data_is_read(tmp_path, monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "no_such_data"), "--out", str(out), "--run.tensorboard=true"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--run.tensorboard=true" in err and "pip install tensorboard" in err and "no_such_data" not in err
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_events_read_back_with_tensorboard(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = MetricsLog(tmp_path, tensorboard=True)
    metrics.truncate_from(0)
    for step in range(3):
        metrics.write({"type": "step", "epoch": 0, "step": step, "loss": 2.0 - step})
    metrics.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("step/loss")] == [(0, 2.0), (1, 1.0), (2, 0.0)]
