"""``eval knn``: weighted k-NN classification of frozen features (thesis 5.3.2; Wu et al., 2018).

Two settings (``--protocol``): ``thesis`` (k = 20, T = 0.07, thesis 5.3.2) and
``lightly`` (k = 200, T = 0.1, lightly's benchmarks), from
:data:`nolabel.ops.knn.KNN_PROTOCOLS`; ``--k`` / ``--temperature`` override them. Without
``--out``, ``eval knn`` writes nothing (no cache, no result file): a quick check.
"""
from __future__ import annotations

import time

from nolabel.evaluate.protocols import Protocol, pct, register

SETTINGS = ("thesis", "lightly")     # the keys of nolabel.ops.knn.KNN_PROTOCOLS (a test checks)


@register
class Knn(Protocol):
    name, order, title = "knn", 0, "k-NN"
    help = "weighted k-NN classification (thesis 5.3.2)"
    seeded = False
    writes_without_out = False

    def add_options(self, p) -> None:
        p.add_argument("--k", type=int, default=None, help="neighbours (default 20; 200 with --protocol lightly)")
        p.add_argument("--temperature", type=float, default=None, help="vote temperature (default 0.07)")
        p.add_argument("--protocol", dest="knn_setting", choices=SETTINGS, default="thesis",
                       help="thesis: k=20, T=0.07; lightly: k=200, T=0.1")

    def options(self, args) -> dict:
        return {"k": args.k, "temperature": args.temperature, "setting": args.knn_setting}

    def run(self, ctx, k: int | None = None, temperature: float | None = None, setting: str = "thesis") -> dict:
        from nolabel.evaluate.context import EvalError
        from nolabel.ops.knn import KNN_PROTOCOLS, knn_classify

        k_default, t_default = KNN_PROTOCOLS[setting]
        k = k_default if k is None else k
        temperature = t_default if temperature is None else temperature
        if k < 1:
            raise EvalError(f"--k {k}: the number of neighbours must be at least 1")
        if not temperature > 0:
            raise EvalError(f"--temperature {temperature}: must be positive")
        ctx.require_labels("knn", "train", "test")
        t0 = time.time()
        train, test = ctx.features("train", "knn"), ctx.features("test", "knn")
        result = knn_classify(train.x, train.y, test.x, test.y, k=k, temperature=temperature,
                              num_classes=ctx.num_classes("train", "test"))
        result.update(setting=setting, k_asked=k, feature_dim=int(train.x.shape[1]),
                      seconds=round(time.time() - t0, 2))
        return result

    def rows(self, r: dict) -> list[tuple[str, str, str]]:
        return [(f"k={r['k']}, T={r['temperature']}", "top-1 / top-5", f"{pct(r['top1'])} / {pct(r['top5'])}")]

    def summary(self, r: dict, model: str) -> list[str]:
        k = r.get("k_asked", r["k"])
        used = f" ({r['k']} used)" if r["k"] != k else ""
        return [f"k-NN ({model}, k={k}{used}, T={r['temperature']}): top-1 {r['top1']:.2f}%  "
                f"top-5 {r['top5']:.2f}%  ({r['n_train']} train, {r['n_test']} test)"]
