"""Atomic file writes: a file is either its old self or completely the new one, never half
written (a crash, a full disk or Ctrl-C mid-write leaves the previous version in place)."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``:
    a crash mid-write never leaves a half-written file in place. The file gets the mode
    a plain ``open`` would give it (0666 less the umask), whatever mode ``write`` gave the
    temporary file (safetensors creates it 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
