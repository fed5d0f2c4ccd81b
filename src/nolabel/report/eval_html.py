"""The report of ``nolabel eval all`` as HTML: its settings, features, one table of every
protocol's numbers (the rows of ``eval.md``, from each protocol's ``rows``), a
column per baseline when ``eval.json`` has a ``baselines`` section, the skipped
protocols and the figures embedded. :func:`write_eval_html` writes ``eval.html`` beside
``eval.md``; ``nolabel report --eval`` puts the same sections in the run's page.

``eval.json`` is read defensively: a missing key shows as "-", a protocol result whose
shape is unknown is listed key by key, a figure that is gone is named in a note.
"""
from __future__ import annotations

import json
from pathlib import Path

from nolabel.evaluate.protocols import get_protocol
from nolabel.evaluate.report import title
from nolabel.evaluate.report import BASELINES
from nolabel.evaluate.suite import REPORT_JSON
from nolabel.report.errors import ReportError
from nolabel.report.html import esc, image_file, note, page, pairs, plain, side_by_side, table
from nolabel.report.output import check_out, read_dict, save

EVAL_HTML = "eval.html"
FIGURE_KEYS = ("grid", "png", "examples")   # the figure paths a protocol result may hold (as eval.md lists them)


def read_eval(eval_dir: str | Path, option: str = "--eval") -> dict:
    """The parsed ``eval.json`` of ``eval_dir``, or a ReportError naming what is wrong."""
    folder = Path(eval_dir)
    path = folder / REPORT_JSON
    if not folder.is_dir():
        raise ReportError(f"{option} {folder}: no such folder (give the --out of `nolabel eval all`)")
    if not path.is_file():
        raise ReportError(f"{option} {folder} holds no {REPORT_JSON}: give the --out of `nolabel eval all`")
    return read_dict(path, json.loads, (json.JSONDecodeError,), "JSON",
                     "evaluation report (expected a JSON object with protocols)", prefix=f"{option}: ")


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _protocol(name: str):
    """The registered protocol ``name``, or None for a name this version does not know."""
    try:
        return get_protocol(name)
    except ValueError:
        return None


def protocol_rows(name: str, result) -> list[tuple[str, str, str]]:
    """(setting, metric, value) rows of one protocol result: eval.md's rows, or, for a result
    they do not know, one row per plain value."""
    if not isinstance(result, dict):
        return [("", "", plain(result))]
    protocol = _protocol(name)
    try:
        known = protocol.rows(result) if protocol is not None else []
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):   # a result of another shape
        known = []
    if known:
        return [(str(s), str(m), str(v)) for s, m, v in known]
    return [(key, "", plain(v)) for key, v in result.items()
            if key != "seconds" and key not in FIGURE_KEYS and not isinstance(v, (dict, list))]


def baselines(report: dict) -> dict[str, dict]:
    """``{column title: section}`` of the optional ``baselines`` section (``{"random": {"model",
    "architecture", "protocols", "skipped"}, ...}``); a section that is only protocol results
    is taken as its ``protocols``."""
    found = {}
    for key, entry in _dict(report.get("baselines")).items():
        if isinstance(entry, dict):
            section = entry if isinstance(entry.get("protocols"), dict) else {"protocols": entry}
            found[BASELINES.get(key, str(key))] = section
    return found


def _baseline_cells(section: dict, name: str) -> list[tuple[str, str, str]]:
    """A baseline's rows of protocol ``name``; when it was not run on the baseline, one row:
    "n/a" (skipped there, or a protocol baselines do not run), else "-"."""
    if name in section["protocols"]:
        return protocol_rows(name, section["protocols"][name])
    skipped = name in _dict(section.get("skipped")) or not getattr(_protocol(name), "baseline", True)
    return [("", "", "n/a" if skipped else "-")]


def _value_for(base_rows: list[tuple[str, str, str]], i: int, metric: str) -> str:
    """The baseline's value on row ``i`` of a protocol ("" past its rows; "-" where that row
    measures another metric)."""
    if i >= len(base_rows):
        return ""
    return base_rows[i][2] if base_rows[i][1] in (metric, "") else "-"


def _seconds(report: dict, name: str, result) -> str:
    """Seconds spent, and the estimate printed before the protocol started, when recorded."""
    spent = _dict(result).get("seconds")
    estimate = _dict(_dict(report.get("estimates")).get("model")).get(name)
    text = f"{spent:.1f}" if isinstance(spent, (int, float)) else ""
    return text + (f" (est. {estimate:.0f})" if isinstance(estimate, (int, float)) else "")


def results_table(report: dict) -> str:
    """One row per protocol setting: setting, metric, the model's value, each baseline's, seconds."""
    protocols = _dict(report.get("protocols"))
    bases = baselines(report)
    names = list(dict.fromkeys([*protocols, *(n for b in bases.values() for n in b["protocols"])]))
    body = []
    for name in names:
        mine = protocol_rows(name, protocols[name]) if name in protocols else []
        theirs = {b: _baseline_cells(section, name) for b, section in bases.items()}
        length = max([1, len(mine), *(len(r) for r in theirs.values() if r and r[0][1])])
        for i in range(length):
            if i < len(mine):
                setting, metric, value = mine[i]
            else:   # a row only a baseline has
                setting, metric = next((r[i][:2] for r in theirs.values() if i < len(r)), ("", ""))
                value = "-"
            body.append([title(name) if i == 0 else "", setting, metric, value,
                         *(_value_for(r, i, metric) for r in theirs.values()),
                         _seconds(report, name, protocols.get(name)) if i == 0 else ""])
    headers = ["protocol", "setting", "metric", plain(report.get("model", "model")), *bases, "seconds"]
    if not body:
        return note("eval.json lists no protocol results")
    return table(headers, body, numeric=(len(headers) - 1,))


def _summary(report: dict) -> str:
    fast = " (--fast schedules)" if report.get("fast") else ""
    seconds = report.get("seconds")
    items = [(label, plain(report.get(key))) for label, key in (
        ("model", "model"), ("architecture", "architecture"), ("train data", "train"), ("test data", "test"),
        ("image size", "image_size"), ("patch tokens", "patch_tokens"), ("started", "started"))]
    items.append(("time", (f"{seconds:.0f} s in all" if isinstance(seconds, (int, float)) else "-") + fast))
    items += [(f"baseline: {label}", f"{plain(b.get('model'))} ({plain(b.get('architecture'))}), same data")
              for label, b in baselines(report).items() if "model" in b]
    features = [(role, plain(f.get("n")), plain(f.get("dim")),
                 "from the cache" if f.get("from_cache") else "extracted", plain(f.get("seconds")))
                for role, f in _dict(report.get("features")).items() if isinstance(f, dict)]
    text = pairs(items)
    if features:
        text += "<h3>Features</h3>\n" + table(("split", "images", "dimension", "source", "seconds"), features,
                                              numeric=(1, 2, 4))
    return text


def _skipped(report: dict) -> str:
    """The protocols not run, on the model and on each baseline, with the reason."""
    lists = [("Skipped protocols", _dict(report.get("skipped")))]
    lists += [(f"Not run on {label}", _dict(b.get("skipped"))) for label, b in baselines(report).items()]
    return "".join(f"<h3>{esc(heading)}</h3>\n" + table(("protocol", "why"), [(title(n), plain(w))
                                                                               for n, w in skipped.items()])
                   for heading, skipped in lists if skipped)


def _locate(eval_dir: Path, recorded: str) -> Path | None:
    """A figure eval.json names, found in the eval folder (which may have moved since it was
    written): the longest tail of the recorded path under ``eval_dir`` (``baselines/random/
    attention.png`` before ``attention.png``), else the recorded path itself."""
    parts = Path(recorded).parts[1:] if Path(recorded).is_absolute() else Path(recorded).parts
    for start in range(len(parts)):
        if (eval_dir / Path(*parts[start:])).is_file():
            return eval_dir / Path(*parts[start:])
    return Path(recorded) if Path(recorded).is_file() else None


def figures(eval_dir: str | Path, report: dict) -> str:
    """The protocols' figures embedded, each followed by the baselines' figure of the same
    protocol, then any other PNG of the eval folder."""
    eval_dir = Path(eval_dir)
    sources = [("", _dict(report.get("protocols")))]
    sources += [(f"{label} \u00b7 ", b["protocols"]) for label, b in baselines(report).items()]
    parts, shown = [], set()
    for name in dict.fromkeys(n for _, protocols in sources for n in protocols):
        for prefix, protocols in sources:
            for key in FIGURE_KEYS:
                recorded = _dict(protocols.get(name)).get(key)
                if not isinstance(recorded, str) or not recorded.lower().endswith((".png", ".jpg", ".jpeg")):
                    continue
                caption = f"{prefix}{title(name)}: {Path(recorded).name}"
                path = _locate(eval_dir, recorded)
                if path is None:
                    parts.append(note(f"{caption} is missing (not in {eval_dir} nor at {recorded})"))
                    continue
                shown.add(path.resolve())
                parts.append(image_file(path, caption))
    parts += [image_file(p, p.name) for p in sorted(eval_dir.glob("*.png")) if p.resolve() not in shown]
    return side_by_side(parts) if parts else note(f"no figures in {eval_dir}")


def eval_sections(eval_dir: str | Path, report: dict) -> list[tuple[str, str, str]]:
    """The ``(anchor, title, body)`` sections of an evaluation, for :func:`nolabel.report.html.page`."""
    unknown = report.get("baselines") is not None and not baselines(report)
    raw = (note("eval.json has a baselines section of an unknown shape; here it is as recorded")
           + f"<pre>{esc(json.dumps(report['baselines'], indent=2, default=str))}</pre>\n") if unknown else ""
    body = (f"<p>From <code>{esc(Path(eval_dir) / REPORT_JSON)}</code>.</p>\n" + _summary(report)
            + "<h3>Results</h3>\n" + results_table(report) + raw + _skipped(report))
    return [("evaluation", "Evaluation", body), ("figures", "Evaluation figures", figures(eval_dir, report))]


def write_eval_html(eval_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``eval.html`` (or ``out``), one self-contained page, for the eval folder
    ``eval_dir`` from its ``eval.json`` and figures; return its path."""
    report = read_eval(eval_dir, option="eval folder")
    out = check_out(Path(eval_dir) / EVAL_HTML if out is None else out)
    heading = f"nolabel evaluation of {plain(report.get('model'))}"
    return save(out, page(heading, f"{Path(eval_dir).resolve()}", eval_sections(eval_dir, report)))
