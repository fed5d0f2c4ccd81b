"""Render the JSON reports of ``pretrain_knn.py`` as one Markdown table, best first.

Each argument is a report (``RUN/benchmark.json`` or a saved stdout), optionally
labelled ``LABEL=PATH``; without a label the row is named after the method and its
overrides. Columns: k-NN top-1 under both protocols (thesis k=20 T=0.07, lightly
k=200 T=0.1), the k-means NMI of the test features, the random-init and pixel
baselines of the same run, training time, images/s and a few values of the last
epoch's log (``--log-keys``), so a table in BENCHMARKS.md can be regenerated from
the runs instead of copied by hand.

    python benchmarks/knn_table.py runs/bench-*/benchmark.json
    python benchmarks/knn_table.py "SimCLR=runs/bench-simclr/benchmark.json" --sort none
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# last-epoch values worth a glance, in this order, when a method logs them
DEFAULT_LOG_KEYS = ("teacher_entropy", "kl", "prototypes_used", "nmi_labels", "nmi_consecutive",
                    "accuracy", "positive_cos", "loss")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 or abs(value) >= 1000 else f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def load_report(arg: str) -> tuple[str, dict]:
    label, _, path = arg.rpartition("=") if "=" in arg and not Path(arg).exists() else ("", "", arg)
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"{path}: no such report (give RUN/benchmark.json or a saved pretrain_knn.py output)")
    try:
        report = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not a JSON report of pretrain_knn.py ({e}); an interrupted run leaves an "
                         "empty file: rerun it or use RUN/benchmark.json") from None
    if "knn_top1" not in report and "knn_top1_and_nmi" in report:   # reports written before 2026-12-01 14:00
        both = report.pop("knn_top1_and_nmi")
        report["nmi_kmeans_test"] = {name: v.pop("nmi_kmeans") for name, v in both.items()}
        report["knn_top1"] = both
    if "knn_top1" not in report:
        raise SystemExit(f"{path}: has no 'knn_top1': not a pretrain_knn.py report")
    if not label:
        label = report["method"] + "".join(f" {o}" for o in report.get("overrides", [])
                                           if not o.startswith("model."))
    return label, report


def row(label: str, r: dict, log_keys) -> list[str]:
    knn, nmi = r["knn_top1"], r.get("nmi_kmeans_test", {})
    last = r.get("last_epoch_log") or {}
    logs = ", ".join(f"{k} {_fmt(last[k])}" for k in log_keys if k in last)
    return [label, _fmt(knn["trained"]["thesis"]), _fmt(knn["trained"]["lightly"]), _fmt(nmi.get("trained", "-")),
            _fmt(knn["random_init"]["thesis"]), _fmt(knn["pixels"]["thesis"]), _fmt(round(r["train_seconds"])),
            _fmt(r["train_images_per_s"]), logs]


HEADER = ["method", "k-NN top-1 k=20 T=0.07", "k-NN top-1 k=200 T=0.1", "NMI, k-means", "random init, k=20",
          "pixels, k=20", "train s", "images/s", "last epoch"]


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", help="benchmark.json files, optionally LABEL=PATH")
    p.add_argument("--sort", choices=("knn", "none"), default="knn", help="knn: best k=20 top-1 first")
    p.add_argument("--log-keys", default=",".join(DEFAULT_LOG_KEYS),
                   help="comma-separated keys of the last epoch's log to show")
    args = p.parse_args(argv)
    reports = [load_report(a) for a in args.reports]
    if args.sort == "knn":
        reports.sort(key=lambda lr: -lr[1]["knn_top1"]["trained"]["thesis"])
    keys = [k for k in args.log_keys.split(",") if k]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(label, r, keys)) + " |" for label, r in reports]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
