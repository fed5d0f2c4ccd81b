"""The error of ``nolabel report`` and its Python API."""
from __future__ import annotations

__all__ = ["ReportError"]


class ReportError(ValueError):
    """Bad input to the report: one line naming the folder or file at fault and what to
    give instead. Raised before anything is written (the CLI exits with status 2)."""
