"""The error raised for a data spec that cannot be opened."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A data spec or its files cannot be used (missing path, no images, offline download, ...).

    The message names the spec or path and says what to do about it.
    """
