"""``nolabel report RUN [--eval DIR] --out report.html``: one self-contained HTML page of a
run: its config, training curves and last values, the evaluation of ``nolabel eval all``
with its figures, the files training skipped, and the environment.

Every input is checked before anything is drawn; the page is written atomically.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from nolabel.report.environment import environment_section
from nolabel.report.eval_html import eval_sections, read_eval
from nolabel.report.html import page, plain
from nolabel.report.output import check_out, save
from nolabel.report.run_folder import config_section, read_config, skipped_section, training_section

REPORT_HTML = "report.html"


def _title(run_dir: Path, config: dict) -> tuple[str, str]:
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    title = f"nolabel run {run_dir.resolve().name}: {plain(config.get('method'))}, {plain(model.get('backbone'))}"
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return title, f"data {plain(data.get('train'))}; folder {run_dir.resolve()}; report written {written}"


def write_run_report(run_dir: str | Path, eval_dir: str | Path | None = None,
                     out: str | Path | None = None) -> Path:
    """Write the report of the run folder ``run_dir`` (and of the ``nolabel eval all`` folder
    ``eval_dir``, if given) to ``out`` (default ``run_dir/report.html``); return its path."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    evaluation = read_eval(eval_dir) if eval_dir is not None else None
    out = check_out(run_dir / REPORT_HTML if out is None else out)
    sections = [("config", "Config", config_section(config)),
                ("training", "Training", training_section(run_dir, config))]
    if evaluation is not None:
        sections += eval_sections(eval_dir, evaluation)
    else:
        sections.append(("evaluation", "Evaluation", "<p>Not included: run <code>nolabel eval all RUN --out DIR"
                                                      "</code> and give <code>--eval DIR</code>.</p>\n"))
    sections += [("skipped", "Skipped files", skipped_section(run_dir)),
                 ("environment", "Environment", environment_section(run_dir, config))]
    return save(out, page(*_title(run_dir, config), sections))
