"""Checkpoints: atomic save and exact resume (the run folder's other files: :mod:`nolabel.runs`).

A checkpoint is loaded with ``torch.load(weights_only=True)``: only tensors and plain
containers, never pickled code. RNG states are stored as tensors and ints for that.
A run keeps its last two checkpoints, ``checkpoint.pt`` and ``checkpoint.prev.pt``
(each put in place by a rename), so a damaged newest one (a disk that filled up, a copy
cut short) costs one checkpoint interval, not the run.
"""
from __future__ import annotations

import os
import random
import shlex
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nolabel.atomic import atomic_write

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
# What the training loop reads back on resume: a file without these is not a run's checkpoint.
RESUME_KEYS = ("method", "optimizer", "scaler", "epoch", "step_in_epoch", "global_step", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file and what to do."""


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint ``path`` replaced is kept (``checkpoint.prev.pt`` beside ``checkpoint.pt``)."""
    path = Path(path)
    return path.with_name(PREVIOUS) if path.name == CHECKPOINT else path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically; the checkpoint it replaces becomes
    :func:`previous_checkpoint` (renamed once the new one is completely written)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.exists():
            os.replace(path, previous_checkpoint(path))

    atomic_write(path, write)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved at ``path``; a file that is not a readable checkpoint (truncated,
    overwritten, another program's) raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with warnings.catch_warnings(record=True) as caught:     # torch warns about garbage before failing on it
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (OSError, MemoryError, torch.cuda.OutOfMemoryError):
            raise
        except Exception:   # torch's own text (a zip reader's, or advice to unpickle code) misleads here
            raise CheckpointError(f"{path} is damaged: it cannot be read as a checkpoint "
                                  "(truncated, or overwritten by another file)") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is damaged: it holds a {type(state).__name__}, not a checkpoint")
    return state


def load_resume_state(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint a resumed run continues from, checked before anything else is
    opened. When it is missing or damaged, the :class:`CheckpointError` says which file,
    that the run's other files are intact, and whether the previous checkpoint can take
    its place."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    try:
        state = load_checkpoint(path, map_location=map_location)
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path} is damaged: it is not a training checkpoint (no {', '.join(missing)})")
        return state
    except (CheckpointError, FileNotFoundError) as exc:
        problem = str(exc) if isinstance(exc, CheckpointError) else f"{run_dir} has no {CHECKPOINT}"
    others = sorted(p.name for p in run_dir.iterdir()
                    if p.is_file() and p.name not in (CHECKPOINT, PREVIOUS) and not p.name.startswith("."))
    intact = f"The run's other files ({', '.join(others)}) are intact. " if others else ""
    raise CheckpointError(f"{problem}. {intact}{_previous_advice(path)}")


def _previous_advice(path: Path) -> str:
    previous = previous_checkpoint(path)
    if not previous.is_file():
        return ("There is no earlier checkpoint to fall back on: start the run again (delete the folder, "
                "or give another --out).")
    try:
        state = load_checkpoint(previous)
        where = (f"in epoch {state['epoch'] + 1}" if state["step_in_epoch"] else f"after epoch {state['epoch']}") \
            + f", step {state['global_step']}"
    except (CheckpointError, KeyError, TypeError):
        return (f"The previous checkpoint {previous} is damaged too: start the run again (delete the folder, "
                "or give another --out).")
    return (f"The previous checkpoint {previous} (saved {where}) reads fine: to continue from it, move it "
            f"into place (`mv {shlex.quote(str(previous))} {shlex.quote(str(path))}`) and resume again; "
            "the steps after it are trained again.")


def training_complete(path: Path) -> bool:
    """Whether the checkpoint at ``path`` ends its run: every epoch its config asks for
    is done (an interrupted run's checkpoint is mid-way and can be resumed)."""
    state = load_checkpoint(path)
    return state["epoch"] >= state["config"]["run"]["epochs"]


def rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [int(x) for x in random.getstate()[1]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((3, tuple(py), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def state_with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    out = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    if not out:
        raise KeyError(f"no weights under {prefix!r} in this checkpoint")
    return out
