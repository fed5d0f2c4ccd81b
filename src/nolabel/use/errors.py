"""The error of the ``embed`` / ``neighbors`` / ``duplicates`` commands and their Python API."""
from __future__ import annotations

__all__ = ["UseError"]


class UseError(ValueError):
    """Bad input to a collection command: one line naming the option or file at fault
    and what to do. Raised before anything is written (the CLI exits with status 2)."""
