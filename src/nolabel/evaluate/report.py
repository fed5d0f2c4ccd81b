"""``eval.md``: the report of ``nolabel eval all`` as tables a person reads.

Accuracies are percents; NMI, AMI, ARI, purity, mAP, recall and Jaccard are fractions
in [0, 1], as the protocols return them.
"""
from __future__ import annotations


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f} %"


def _frac(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def rows(name: str, r: dict) -> list[tuple[str, str, str]]:
    """(setting, metric, value) rows of one protocol result."""
    if name == "knn":
        return [(f"k={r['k']}, T={r['temperature']}", "top-1 / top-5", f"{_pct(r['top1'])} / {_pct(r['top5'])}")]
    if name == "linear":
        how = "augmented views" if r.get("augment") else "cached features"
        sweep = ", ".join(f"{x['lr']:g}: {x['val_top1']:.1f}" for x in r["runs"])
        return [(f"{how}, {r['epochs']} epochs, lr {r['lr']:g} chosen on val", "top-1 / top-5",
                 f"{_pct(r['top1'])} / {_pct(r['top5'])}"), ("lr sweep", "val top-1 per lr", sweep)]
    if name == "logistic":
        return [(f"L-BFGS, L2 {r['l2']:g} chosen on val", "top-1 / top-5", f"{_pct(r['top1'])} / {_pct(r['top5'])}")]
    if name == "finetune":
        decay = f", layer decay {r['layer_decay']}" if r.get("layer_decay") else ""
        return [(f"{r['steps']} steps x {r['batch_size']} ({r['epochs']:g} epochs), lr {r['lr']:g}{decay}",
                 "top-1 / top-5", f"{_pct(r['top1'])} / {_pct(r['top5'])}")]
    if name == "fewshot":
        out = []
        for key, e in r.items():
            if not isinstance(e, dict):
                continue
            cells = [f"k-NN {_pct(e['knn']['top1'])}"]
            if "logistic" in e:
                cells.append(f"logistic {_pct(e['logistic']['top1'])}")
            if "finetune" in e:
                cells.append(f"fine-tune {_pct(e['finetune']['top1'])}")
            out.append((f"{key} of labels ({e['n']} images)", "top-1", ", ".join(cells)))
        return out
    if name == "clustering":
        return [(f"k-means k={e['k']} ({key.split('=')[1]} classes)", "NMI / AMI / ARI / purity",
                 " / ".join(_frac(e[m]) for m in ("nmi", "ami", "ari", "purity")))
                for key, e in r.items() if key.startswith("k=")]
    if name == "retrieval":
        recalls = [k for k in r if k.startswith("recall@")]
        return [(f"{r['n_scored']} test queries, {r['n_db']} train images", "mAP", _frac(r["map"])),
                ("", " / ".join(recalls), " / ".join(_frac(r[k]) for k in recalls))]
    if name == "copydetect":
        setting = f"{r['n_queries']} copies of {r['n_originals']} originals, {r['n_distractors']} distractors"
        out = [(setting, "mAP", _frac(r["map"]))]
        if "map_whitened" in r:
            out.append((f"whitening fitted on {r['n_whiten']} other images", "mAP", _frac(r["map_whitened"])))
        return out
    if name == "attention":
        if "best_head" not in r:
            return [(f"{r['heads']} heads, {r['n_images']} images", "Jaccard", r.get("jaccard", "-"))]
        per_head = ", ".join(f"{v:.3f}" for v in r["per_head"])
        return [(f"{r['mass']:.0%}-mass masks, {r['n_images']} images", "Jaccard, best head "
                 f"({r['best_head_index']})", _frac(r["best_head"])),
                ("", "Jaccard, mean of heads / per-image oracle", f"{_frac(r['head_mean'])} / {_frac(r['oracle'])}"),
                ("", "Jaccard per head", per_head)]
    if name == "tsne":
        return [(f"PCA {r['pca_dim']}, perplexity {r['perplexity']:g}", "plot", r["png"])]
    return []


TITLES = {"knn": "k-NN", "linear": "linear probe", "logistic": "logistic regression", "fewshot": "few labels",
          "finetune": "fine-tuning", "clustering": "clustering", "retrieval": "retrieval",
          "copydetect": "copy detection", "attention": "attention maps", "tsne": "t-SNE of class means"}


def markdown(report: dict) -> str:
    lines = [f"# Evaluation of `{report['model']}`", "",
             f"- model: {report['architecture']}, features: patch tokens {report['patch_tokens']}",
             f"- train: `{report['train']}`, test: `{report['test']}`, image size {report['image_size']}",
             f"- started {report['started']}, {report['seconds']:.0f} s in all"
             + (" (--fast schedules)" if report.get("fast") else ""), ""]
    for role, f in report.get("features", {}).items():
        lines.append(f"- {role} features: {f['n']} x {f['dim']}, "
                     f"{'from the cache' if f['from_cache'] else 'extracted'} in {f['seconds']:.1f} s")
    lines += ["", "| protocol | setting | metric | value | seconds |", "|---|---|---|---|---|"]
    for name, result in report["protocols"].items():
        for i, (setting, metric, value) in enumerate(rows(name, result)):
            seconds = f"{result.get('seconds', 0):.1f}" if i == 0 else ""
            lines.append(f"| {TITLES[name] if i == 0 else ''} | {setting} | {metric} | {value} | {seconds} |")
    if report["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {TITLES.get(n, n)}: {why}" for n, why in report["skipped"].items()]
    pngs = [(n, r[k]) for n, r in report["protocols"].items() for k in ("grid", "png", "examples") if k in r]
    if pngs:
        lines += ["", "Figures:", ""] + [f"- {TITLES[n]}: `{p}`" for n, p in pngs]
    return "\n".join(lines) + "\n"
