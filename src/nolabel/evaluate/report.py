"""``eval.md``: the report of ``nolabel eval all`` as tables a person reads.

One table row per row a protocol declares (:meth:`nolabel.evaluate.protocols.Protocol.rows`).
Accuracies are percents; NMI, AMI, ARI, purity, mAP, recall and Jaccard are fractions
in [0, 1], as the protocols return them. With baselines, their values sit in columns
beside the model's, row for row. The last column gives each protocol's seconds and the
estimate printed before it started.
"""
from __future__ import annotations

from nolabel.evaluate.protocols import get_protocol

BASELINES = {"random": "random init", "pixels": "raw pixels"}   # column key -> its title in eval.md


def title(name: str) -> str:
    try:
        return get_protocol(name).title
    except ValueError:
        return name


def baseline_cells(report: dict, name: str, n_rows: int) -> list[list[str]]:
    """Per row of protocol ``name``, the value of each baseline column (or why it has none)."""
    columns = []
    for key in (k for k in BASELINES if k in report.get("baselines", {})):
        section = report["baselines"][key]
        if name in section["protocols"]:
            values = [value for _, _, value in get_protocol(name).rows(section["protocols"][name])]
        else:
            values = ["n/a" if name in section["skipped"] or not get_protocol(name).baseline else "-"]
        columns.append(values + [""] * (n_rows - len(values)))
    return [list(cells) for cells in zip(*columns)] if columns else [[] for _ in range(n_rows)]


def _seconds(report: dict, name: str, result: dict) -> str:
    estimate = report.get("estimates", {}).get("model", {}).get(name)
    spent = f"{result.get('seconds', 0):.1f}"
    return spent if estimate is None else f"{spent} (est. {estimate:.0f})"


def markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"- model: {report['architecture']}, features: patch tokens {report['patch_tokens']}",
             f"- train: `{report['train']}`, test: `{report['test']}`, image size {report['image_size']}",
             f"- started {report['started']}, {report['seconds']:.0f} s in all"
             + (" (--fast schedules)" if report.get("fast") else ""), ""]
    for role, f in report.get("features", {}).items():
        lines.append(f"- {role} features: {f['n']} x {f['dim']}, "
                     f"{'from the cache' if f['from_cache'] else 'extracted'} in {f['seconds']:.1f} s")
    keys = [k for k in BASELINES if k in report.get("baselines", {})]
    for key in keys:
        seeded = ", weights drawn with torch's seed 0 (the same network at every call)" if key == "random" else ""
        lines.append(f"- {BASELINES[key]}: `{report['baselines'][key]['model']}` "
                     f"({report['baselines'][key]['architecture']}{seeded}), same data and image size")
    heads = ["protocol", "setting", "metric", "value", *(BASELINES[k] for k in keys), "seconds"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, result in report["protocols"].items():
        rows = get_protocol(name).rows(result)
        for i, ((setting, metric, value), others) in enumerate(zip(rows, baseline_cells(report, name, len(rows)))):
            cells = [title(name) if i == 0 else "", setting, metric, value, *others,
                     _seconds(report, name, result) if i == 0 else ""]
            lines.append("| " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {title(n)}: {why}" for n, why in report["skipped"].items()]
    for key in keys:
        skipped = report["baselines"][key]["skipped"]
        if skipped:
            lines += ["", f"Not run on {BASELINES[key]}:", ""] + [f"- {title(n)}: {why}" for n, why in skipped.items()]
    pngs = [(n, r[k]) for n, r in report["protocols"].items() for k in ("grid", "png", "examples") if k in r]
    if pngs:
        lines += ["", "Figures:", ""] + [f"- {title(n)}: `{p}`" for n, p in pngs]
    return "\n".join(lines) + "\n"
