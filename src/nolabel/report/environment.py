"""The environment section of the run report: what the run recorded (the device,
precision and threads asked for in ``config.yaml``; the set-up line of ``train.log``,
which names the device actually used) and, labelled as such, the machine writing the
report (Python, torch, nolabel, device), which may not be the one that trained."""
from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

from nolabel import __version__
from nolabel.report.html import esc, pairs, plain
from nolabel.runlog import LOG

# train.log's set-up line: "dino on demo: 64 images at 32 px, vit_tiny, ..., cpu/fp32, 1 CPU threads"
_SETUP = re.compile(r" images at \d+ px, .* CPU threads")


def _setup_lines(run_dir: Path) -> list[str]:
    """train.log's set-up lines (one per start or resume), without the time stamp."""
    try:
        lines = (run_dir / LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line.split(" INFO ", 1)[-1] for line in lines if _SETUP.search(line)]


def _device_now() -> str:
    try:
        import torch
    except ImportError:
        return "unknown (torch is not importable)"
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU(s))"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_section(run_dir: Path, config: dict) -> str:
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    asked = [(f"run.{key}", plain(run.get(key))) for key in ("device", "precision", "threads", "channels_last")]
    setup = _setup_lines(run_dir)
    used = "".join(f"<li><code>{esc(line)}</code></li>" for line in setup)
    text = "<h3>Recorded with the run</h3>\n" + pairs(asked)
    text += (f"<p>Set-up as logged in <code>{LOG}</code> (device/precision used):</p>\n<ul>{used}</ul>\n" if setup
             else f"<p>No set-up line in <code>{LOG}</code> (missing or from another version).</p>\n")
    here = [("python", platform.python_version()), ("torch", _version("torch")), ("nolabel", __version__),
            ("device", _device_now()), ("platform", platform.platform())]
    return text + ("<h3>This machine, when the report was written (not recorded by the run)</h3>\n"
                   + pairs(here))
