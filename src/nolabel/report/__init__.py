"""Reports as single HTML files that open offline: :func:`write_run_report` for a run
folder (``nolabel report``), :func:`write_eval_html` for an ``eval all`` folder.

- ``html.py``: escaped tables, embedded images, the page; ``output.py``: checked, atomic writing
- ``run_folder.py``: config, curves, skipped files; ``environment.py``: versions and device
- ``eval_html.py``: the evaluation table and figures; ``run_report.py``: the run's page
"""
from nolabel.report.errors import ReportError
from nolabel.report.eval_html import write_eval_html
from nolabel.report.run_report import write_run_report

__all__ = ["ReportError", "write_eval_html", "write_run_report"]
