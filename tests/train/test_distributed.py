"""The same loop under torchrun: 2 CPU processes over gloo."""
import subprocess
import sys

import torch

from nolabel.checkpoint import load_checkpoint
from nolabel.runlog import MetricsLog
from tests.train.conftest import TINY


def _failure(stderr: str) -> str:
    """What a failed launch said: the workers' own errors (a C++ abort prints its reason before
    torchrun's summary, which is all the tail holds), then the tail."""
    own = [line for line in stderr.splitlines() if any(w in line for w in ("terminate", "what()", "Error", "error"))]
    return "\n".join(own[:40]) + "\n...\n" + stderr[-1500:]


def test_two_process_training_and_resume(tmp_path):
    out = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "nolabel.cli",
            "train", "--out", str(out)]
    done = subprocess.run(base + TINY + ["--run.epochs=1"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, _failure(done.stderr)
    state = load_checkpoint(out / "checkpoint.pt")
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2      # one RNG state per process
    # 64 images, batch 16 over 2 processes: 8 per process, 4 steps per epoch
    assert [r["step"] for r in MetricsLog(out).read() if r["type"] == "step"] == [0, 1, 2, 3]
    assert "2 processes" in (out / "train.log").read_text()
    assert [r["epoch"] for r in MetricsLog(out).read() if r["type"] == "knn"] == [0]   # rank 0 only, no deadlock
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
