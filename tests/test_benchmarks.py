"""The benchmark scripts keep working: a tiny run of each prints its JSON report."""
import importlib.util
import json
from pathlib import Path

from tests.train.conftest import TINY

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_knn_report(tmp_path, capsys):
    overrides = [o[2:] for o in TINY if not o.startswith(("--data.train", "--run.epochs", "--run.batch_size",
                                                            "--model.backbone"))]
    report = load("pretrain_knn").main(["--train-spec", "demo?n=64", "--test-spec", "demo:test?n=32",
                                        "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "b"),
                                        "--set", *overrides])
    printed = json.loads(capsys.readouterr().out)
    assert printed["knn_top1"] == report["knn_top1"]
    for model in ("trained", "random_init", "pixels"):
        assert 0 <= report["knn_top1"][model]["thesis"] <= 100
        assert 0 <= report["knn_top1"][model]["lightly"] <= 100
    assert report["benchmark"] == "demo?n=64"
    assert report["train_images"] == 64 and report["test_images"] == 32
    assert report["speed_ratio_to_bare_backbone"] > 0
    assert set(report["nmi_kmeans_test"]) == set(report["knn_top1"])
    assert all(0 <= v <= 1 for v in report["nmi_kmeans_test"].values())
    assert report["last_epoch_log"]["type"] == "epoch" and "teacher_entropy" in report["last_epoch_log"]


def test_dino_dynamics_report(capsys):
    """Identical views and a fast teacher: a few steps run and report entropies within [0, log K]."""
    report = load("dino_dynamics").main(["--backbone", "vit", "--views", "same", "--steps", "3",
                                         "--out-dim", "16", "--hidden-dim", "16", "--bottleneck-dim", "8"])
    assert report["method"] == "dino"
    assert json.loads(capsys.readouterr().out)["trace"] == report["trace"]
    assert [t["step"] for t in report["trace"]] == [0, 2]
    assert all(0 <= t["teacher_entropy"] <= report["log_k"] + 1e-3 for t in report["trace"])
    swav = load("dino_dynamics").main(["--method", "swav", "--backbone", "vit", "--views", "method", "--steps", "2",
                                       "--out-dim", "16", "--hidden-dim", "16", "--bottleneck-dim", "8"])
    assert [t["step"] for t in swav["trace"]] == [0, 1] and all(t["loss"] > 0 for t in swav["trace"])


def test_demo_learnability_report(capsys):
    from nolabel.data import demo
    before = demo._background
    report = load("demo_learnability").main(["--loss", "simclr", "--steps", "2", "--batch-size", "8",
                                             "--n-train", "40", "--n-test", "20", "--bg-contrast", "0.5"])
    assert json.loads(capsys.readouterr().out)["knn_top1"] == report["knn_top1"]
    assert set(report["knn_top1"]) == {"trained", "random_init", "pixels"}
    assert demo._background is before                   # the data patch does not leak


def _report(method, trained, overrides=()):
    knn = {m: {"thesis": v, "lightly": v - 1} for m, v in (("trained", trained), ("random_init", 20.0),
                                                           ("pixels", 30.0))}
    return {"method": method, "overrides": ["model.width=0.25", *overrides], "knn_top1": knn,
            "nmi_kmeans_test": {"trained": 0.1, "random_init": 0.05, "pixels": 0.07}, "train_seconds": 12.4,
            "train_images_per_s": 99.0, "last_epoch_log": {"type": "epoch", "loss": 1.5, "nmi_labels": 0.25}}


def test_knn_table_sorts_labels_and_reads_both_formats(tmp_path, capsys):
    import pytest
    (tmp_path / "a.json").write_text(json.dumps(_report("simclr", 31.0)))
    old = _report("deepcluster", 35.5, ["deepcluster.sobel=false"])     # the format before 2026-12-01
    both = old.pop("knn_top1")
    for name, v in both.items():
        v["nmi_kmeans"] = old["nmi_kmeans_test"][name]
    del old["nmi_kmeans_test"]
    old["knn_top1_and_nmi"] = both
    (tmp_path / "b.json").write_text(json.dumps(old))
    text = load("knn_table").main([str(tmp_path / "a.json"), f"no Sobel={tmp_path / 'b.json'}"])
    lines = text.splitlines()
    assert capsys.readouterr().out.strip() == text
    assert lines[2].startswith("| no Sobel | 35.5 | 34.5 | 0.1 | 20 | 30 | 12 | 99 | nmi_labels 0.25, loss 1.5 |")
    assert lines[3].startswith("| simclr | 31 | 30 |")                  # model.* overrides are not in the label
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(SystemExit, match="empty.json: not a JSON report"):
        load("knn_table").main([str(tmp_path / "empty.json")])


def test_pretrain_knn_refuses_a_folder_that_holds_a_run(tmp_path):
    import pytest
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "checkpoint.pt").write_bytes(b"finished run")
    with pytest.raises(SystemExit, match="already holds a run"):
        load("pretrain_knn").main(["--train-spec", "demo?n=64", "--test-spec", "demo:test?n=32",
                                   "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == b"finished run"


def test_demo_dino_scores_the_run_and_its_snapshots(tmp_path, capsys):
    from nolabel.data import demo
    before = demo._background
    out = tmp_path / "d"
    options = [o for o in TINY if not o.startswith("--run.log_every")]
    report = load("demo_dino").main(["--out", str(out), "--snapshots", "1", "--bg-noise", "20",
                                     "--knn-train", "demo?n=64", "--knn-test", "demo:test?n=32", "--", *options])
    assert json.loads(capsys.readouterr().out)["knn_top1"] == report["knn_top1"]
    assert set(report["knn_top1"]) == {"trained", "epoch 1", "random_init", "pixels"}
    from nolabel.checkpoint import load_checkpoint
    snapshot = load_checkpoint(tmp_path / "d-epoch1" / "checkpoint.pt")
    assert (snapshot["epoch"], snapshot["global_step"]) == (1, 4)          # after epoch 1, not later
    assert report["steps"] == 8 and len(report["teacher_entropy"]) == 2          # 2 epochs of 4 steps
    assert demo._background is before
