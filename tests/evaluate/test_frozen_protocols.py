"""Protocols on frozen features: linear probe, logistic regression, few labels, clustering,
retrieval, t-SNE; each on tiny data, plus hand-checked pieces."""
from __future__ import annotations

import json
import re

import pytest
import torch

from nolabel.evaluate.clustering import cluster_quality, clustering_protocol
from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.fewshot import fewshot_protocol, subset_file
from nolabel.metrics import mean_average_precision, recall_at_k
from nolabel.evaluate.probe import linear_protocol, logistic_protocol, split_val
from nolabel.evaluate.subsets import save_subset
from nolabel.evaluate.retrieval import retrieval_protocol, retrieval_scores
from nolabel.evaluate.tsne import class_means, tsne_protocol
from tests.evaluate.conftest import TEST, TRAIN


def test_split_val_is_stratified_and_disjoint():
    y = torch.arange(10).repeat(5)  # 10 classes x 5
    tr, va = split_val(y, 0.2, seed=0)
    assert len(set(tr.tolist()) | set(va.tolist())) == 50 and not set(tr.tolist()) & set(va.tolist())
    assert torch.bincount(y[va]).tolist() == [1] * 10


def test_linear_probe_cached_and_augmented(vit_ctx):
    r = linear_protocol(vit_ctx, lrs=(0.1, 1.0), epochs=3)
    assert r["selected_on"] == "val" and r["lr"] in (0.1, 1.0) and len(r["runs"]) == 2
    assert 0 <= r["top1"] <= r["top5"] <= 100 and r["n_test"] == 32 and r["n_val"] == 10
    aug = linear_protocol(vit_ctx, lrs=(0.1, 1.0), augment=True, augment_epochs=1)
    assert aug["augment"] and aug["n_train"] == 54 and "val_top1" in aug["runs"][0]
    assert 0 <= aug["top1"] <= aug["top5"] <= 100


def test_logistic_picks_l2_on_val(resnet_ctx):
    r = logistic_protocol(resnet_ctx, l2s=(1e-4, 1e-2), max_iter=20)
    assert r["l2"] in (1e-4, 1e-2) and [s["l2"] for s in r["sweep"]] == [1e-4, 1e-2]
    assert r["selected_on"] == "val" and r["n_train"] == 64 and 0 <= r["top1"] <= r["top5"] <= 100


def test_fewshot_writes_then_reuses_subsets(resnet_ctx, tmp_path):
    r = fewshot_protocol(resnet_ctx, fractions=(0.1, 0.5), subset_dir=tmp_path, finetune=True,
                         finetune_options={"steps": 2, "batch_size": 8})
    labels = resnet_ctx.features("train").y
    for key, fraction in (("10%", 0.1), ("50%", 0.5)):
        e = r[key]
        assert not e["reused"] and e["knn"]["n_train"] == e["n"] and e["finetune"]["n_train"] == e["n"]
        record = json.loads(subset_file(tmp_path, TRAIN, fraction, 0).read_text())
        expected = [min(n, max(1, int(fraction * n + 0.5))) for n in torch.bincount(labels).tolist()]
        assert record["per_class"] == expected and record["n"] == e["n"] == sum(expected)
    again = fewshot_protocol(resnet_ctx, fractions=(0.1,), subset_dir=tmp_path, finetune=False)
    assert again["10%"]["reused"] and "finetune" not in again["10%"]
    assert again["10%"]["knn"] == r["10%"]["knn"]


def test_fewshot_refuses_a_subset_of_other_labels(tiny_resnet, tmp_path):
    ctx = EvalContext(tiny_resnet, TRAIN, TEST, out=tmp_path, progress=False)
    foreign = torch.arange(64) % 3  # 64 labels, but not these
    save_subset(subset_file(tmp_path / "subsets", TRAIN, 0.1, 0), torch.arange(5), foreign, fraction=0.1, seed=0)
    with pytest.raises(EvalError, match="made for other labels.*Delete it"):
        fewshot_protocol(ctx, fractions=(0.1,), finetune=False)


def test_cluster_quality_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4) * 10
    y = torch.arange(4).repeat(10)
    x = centres[y] + 0.01 * torch.randn(40, 4, generator=g)
    r = cluster_quality(x, y, 4)
    assert r["nmi"] == pytest.approx(1.0) and r["purity"] == 1.0 and r["ari"] == pytest.approx(1.0)
    many = cluster_quality(x, y, 20)
    assert many["purity"] == 1.0 and many["nmi"] < 1.0  # splitting classes keeps purity, costs NMI


def test_clustering_protocol(vit_ctx, monkeypatch):
    import nolabel.evaluate.clustering as module
    titles = []
    real = module.cluster_grid
    monkeypatch.setattr(module, "cluster_grid", lambda images, picks, t: titles.extend(t) or real(images, picks, t))
    r = clustering_protocol(vit_ctx, multiples=(1, 10))
    assert r["k=1x"]["k"] == 10 and r["k=10x"]["k"] == 32  # 10 x 10 classes, capped at the 32 test images
    assert all(0 <= r["k=1x"][m] <= 1 for m in ("nmi", "purity"))
    assert (vit_ctx.out / "clustering_grid.png").stat().st_size > 0
    # one row per cluster (the shared grid of `nolabel cluster`), titled with id, size and majority class
    assert titles and all(re.fullmatch(r"cluster \d+: \d+ images, \d+% \S+", t) for t in titles)


def test_retrieval_chunks_match_the_whole_matrix():
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g)
    qy, dy = torch.randint(0, 4, (37,), generator=g), torch.randint(0, 3, (50,), generator=g)  # class 3: no match
    r = retrieval_scores(q, qy, db, dy, ks=(1, 5), chunk_size=8)
    sim = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(db, dim=1).T
    assert r["map"] == pytest.approx(mean_average_precision(sim, qy, dy))
    assert r["recall@5"] == pytest.approx(recall_at_k(sim, qy, dy, (5,))[5])
    assert r["n_scored"] == int((qy < 3).sum()) and r["n_db"] == 50


def test_retrieval_hand_made():
    db = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    r = retrieval_scores(torch.tensor([[1.0, 0.1]]), torch.tensor([1]), db, torch.tensor([0, 1, 1]), ks=(1, 2))
    # ranking: db0 (class 0), db2 (hit), db1 (hit): AP = (1/2 + 2/3) / 2
    assert r["map"] == pytest.approx((1 / 2 + 2 / 3) / 2) and r["recall@1"] == 0.0 and r["recall@2"] == 1.0


def test_retrieval_protocol(resnet_ctx):
    r = retrieval_protocol(resnet_ctx, ks=(1, 10), max_queries=20)
    assert r["n_queries"] == 20 and r["n_db"] == 64 and 0 <= r["recall@1"] <= r["recall@10"] <= 1


def test_tsne_of_class_means(resnet_ctx):
    present, means = class_means(torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0]]), torch.tensor([1, 1, 3]))
    assert present.tolist() == [1, 3] and means.tolist() == [[1.0, 1.0], [4.0, 4.0]]
    r = tsne_protocol(resnet_ctx, iterations=250)
    assert r["classes"] == 10 and r["pca_dim"] == 10 and r["perplexity"] == 3.0  # 20 needs > 20 classes
    assert (resnet_ctx.out / "tsne.png").stat().st_size > 0


def test_supervised_protocols_refuse_unlabelled_data(tiny_resnet, flat_folder, tmp_path):
    ctx = EvalContext(tiny_resnet, flat_folder, TEST, out=tmp_path, progress=False)
    for protocol in (linear_protocol, logistic_protocol, retrieval_protocol, fewshot_protocol):
        with pytest.raises(EvalError, match=f"--train {flat_folder} has no labels"):
            protocol(ctx)
    ctx = EvalContext(tiny_resnet, TRAIN, flat_folder, out=tmp_path, progress=False)
    for protocol in (clustering_protocol, tsne_protocol):
        with pytest.raises(EvalError, match="--test .* has no labels"):
            protocol(ctx)
