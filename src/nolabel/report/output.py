"""What a report reads and where it goes: its JSON/YAML inputs read with a message naming
the file, the output path checked before any work, then the page written atomically (a
crash or a bad input never leaves a half-written file)."""
from __future__ import annotations

from pathlib import Path

from nolabel.atomic import atomic_write
from nolabel.report.errors import ReportError


def read_dict(path: Path, parse, errors: tuple, kind: str, expected: str, prefix: str = "") -> dict:
    """``parse(text)`` of the file ``path`` when it gives a dict, else a ReportError naming the
    file: not readable as ``kind`` (``errors`` are the parser's own), or not the ``expected`` object."""
    try:
        value = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, *errors) as exc:
        raise ReportError(f"{prefix}{path} is not readable {kind} ({exc})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{prefix}{path} holds no {expected}")
    return value


def check_out(out: str | Path, option: str = "--out") -> Path:
    """``out`` as a Path, or a ReportError when it cannot be written there."""
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"{option} {out} is a folder: give a file name, e.g. {out / 'report.html'}")
    if not out.parent.is_dir():
        raise ReportError(f"{option} {out}: the folder {out.parent} does not exist (create it first)")
    return out


def save(out: Path, text: str) -> Path:
    """Write ``text`` to ``out`` through a temporary file and a rename."""
    atomic_write(out, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out
