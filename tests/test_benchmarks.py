"""The benchmark scripts keep working: a tiny run of each prints its JSON report."""
import importlib.util
import json

import torch
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
    before = dict(demo.DESIGNS)
    report = load("demo_learnability").main(["--loss", "simclr", "--steps", "2", "--batch-size", "8",
                                             "--n-train", "40", "--n-test", "20", "--design", "textured",
                                             "--bg-contrast", "0.5"])
    assert json.loads(capsys.readouterr().out)["knn_top1"] == report["knn_top1"]
    assert set(report["knn_top1"]) == {"trained", "random_init", "pixels"}
    assert demo.DESIGNS == before                        # the benchmark's design does not leak


def test_demo_design_knobs_change_the_data():
    from nolabel.data import generate_demo
    bench = load("demo_learnability")
    with bench.demo_design("textured", background_contrast=0.0, object_min=None) as name:
        calm = generate_demo("test", n=8, design=name)
    textured = generate_demo("test", n=8, design="textured")
    assert torch.equal(calm["masks"], textured["masks"])         # same objects, flatter backgrounds
    assert not torch.equal(calm["images"], textured["images"])


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


def test_pretrain_knn_resume_continues_through_the_cli_checks(tmp_path, capsys):
    import pytest
    from nolabel.checkpoint import load_checkpoint
    from nolabel.config import load_yaml
    overrides = [o[2:] for o in TINY if not o.startswith(("--data.train", "--run.epochs", "--run.batch_size",
                                                            "--model.backbone"))]
    out = tmp_path / "b"
    argv = ["--train-spec", "demo?n=64", "--test-spec", "demo:test?n=32", "--epochs", "1", "--batch-size", "16",
            "--out", str(out)]
    load("pretrain_knn").main([*argv, "--set", *overrides])
    capsys.readouterr()
    report = load("pretrain_knn").main([*argv, "--resume", "--set", *overrides, "run.threads=2"])
    assert json.loads(capsys.readouterr().out)["resumed"] is report["resumed"] is True   # stdout: the JSON alone
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4                   # nothing left to train
    assert load_yaml(out / "config.yaml").run.threads == 2
    with pytest.raises(SystemExit) as refused:
        load("pretrain_knn").main([*argv, "--resume", "--set", *overrides, "optim.lr=0.1"])
    assert refused.value.code == 2 and "optim.lr" in capsys.readouterr().err


def test_demo_dino_scores_the_run_and_its_snapshots(tmp_path, capsys):
    from nolabel.data import demo
    before = dict(demo.DESIGNS)
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
    assert demo.DESIGNS == before


def test_throughput_tiny_report(capsys):
    """Two tiny methods, A/B interleaved: images/s of the training step and of the bare backbone
    passes it made (the student's with gradient; DINO's teacher's without), and their ratio."""
    import pytest
    report = load("throughput").main(["--tiny", "--methods", "simclr,dino", "--threads", "1", "--precision", "bf16",
                                      "--set", "simclr.hidden_dim=64", "dino.out_dim=64", "dino.hidden_dim=64",
                                      "dino.bottleneck_dim=16", "dino.n_local_views=2"])
    assert json.loads(capsys.readouterr().out)["methods"] == report["methods"]
    assert (report["precision"], report["channels_last"]) == ("bf16", True)
    simclr, dino = report["methods"]
    for m in (simclr, dino):
        assert m["train_images_per_s"] > 0 and m["bare_backbone_images_per_s"] > 0
        assert m["ratio"] == pytest.approx(m["train_images_per_s"] / m["bare_backbone_images_per_s"], rel=0.01)
        assert m["rounds"] == 2 and m["timed_steps"] == 2 and m["threads"] == 1
        assert all(c["channels_last"] for c in m["backbone_calls"])
    assert [c["grad"] for c in simclr["backbone_calls"]] == [True]           # both views in one call
    assert [(c["grad"], c["shape"]) for c in dino["backbone_calls"]] == [      # teacher, student globals, locals
        (False, "16x3x32x32"), (True, "16x3x32x32"), (True, "16x3x16x16")]


def test_convergence_plans_to_the_budget_and_scores_beside_baselines(tmp_path, capsys):
    bench = load("convergence")
    assert bench.plan_epochs(1000, 0.5, 100) == 19                    # 950 s of 50 s epochs
    assert bench.plan_epochs(10, 0.5, 100) == 1                       # never less than one epoch
    out = tmp_path / "conv"
    report = bench.main(["simclr", "--minutes", "0.1", "--train-spec", "demo?n=96&size=16",
                         "--test-spec", "demo:test?n=40&size=16", "--batch-size", "16", "--out", str(out),
                         "--set", "simclr.hidden_dim=16", "simclr.out_dim=8"])
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    assert report["epochs"] == 1 and report["steps"] == 6 and report["probe_step_seconds"] > 0
    assert report["epochs_from"] == "budget" and report["cpu"]
    fixed_part = 3 * bench.SCORE_SECONDS_PER_MODEL                   # decoding, k-NN, k-means of 3 models
    assert report["score_seconds_planned"] > fixed_part               # plus the two encoders' timed inference
    probe = tmp_path / "conv-probe"
    assert bench.score_seconds_estimate(probe, 0, torch.device("cpu")) == fixed_part
    assert bench.score_seconds_estimate(probe, 10**6, torch.device("cpu")) > fixed_part + 10  # scales with images
    assert [c["epoch"] for c in report["curve"]] == [0]                 # the end-of-training k-NN point
    assert set(report["knn_top1"]) == {"trained", "random_init", "pixels"}
    assert json.loads((out / "convergence.json").read_text())["knn_top1"] == report["knn_top1"]
    png = bench.main(["--plot", str(tmp_path / "c.png"), str(out / "convergence.json")])
    assert Path(png["plot"]).stat().st_size > 5000
    fixed = bench.main(["simclr", "--minutes", "0.1", "--epochs", "2", "--train-spec", "demo?n=48&size=16",
                        "--test-spec", "demo:test?n=20&size=16", "--batch-size", "16", "--out", str(tmp_path / "c2"),
                        "--set", "simclr.hidden_dim=16", "simclr.out_dim=8"])
    assert fixed["epochs"] == 2 and fixed["steps"] == 6 and fixed["epochs_from"] == "--epochs"
    assert report["backbone"] == fixed["backbone"] == "resnet18"
    vit = bench.main(["mae", "--minutes", "0.1", "--epochs", "1", "--backbone", "vit_tiny", "--train-spec",
                      "demo?n=48&size=16", "--test-spec", "demo:test?n=20&size=16", "--batch-size", "16",
                      "--out", str(tmp_path / "c3"), "--set", "model.patch_size=8", "model.depth=1",
                      "model.embed_dim=16", "model.num_heads=2", "mae.decoder_dim=16", "mae.decoder_depth=1"])
    assert vit["backbone"] == "vit_tiny" and vit["steps"] == 3 and vit["knn_top1"]["trained"]   # no ResNet fields


def test_sinkhorn_speed_report(capsys):
    report = load("sinkhorn_speed").main(["--rows", "64", "--prototypes", "30", "--repeats", "2"])
    assert json.loads(capsys.readouterr().out) == report
    assert report["linear_ms"] > 0 and report["log_ms"] > 0 and report["max_abs_diff"] < 1e-6


def test_gpu_check_tiny_writes_every_part_and_fails_on_an_error(tmp_path, capsys):
    """The GPU script end to end on the CPU (--tiny): the ceiling, each nolabel method with its
    figures, lightly skipped with the reason where it does not import; an unknown method is
    an error recorded in the JSON with exit status 1, the other parts written all the same."""
    import pytest
    bench = load("gpu_check")
    out = tmp_path / "gc"
    status = bench.main(["--tiny", "--out", str(out), "--methods", "simclr,nosuch"])
    report = json.loads((out / "gpu_check.json").read_text())
    assert status == 1 and [e["part"] for e in report["errors"]] == ["nolabel nosuch"]
    assert [c["images_per_s"] > 0 for c in report["ceiling"]] == [True, True]
    (simclr,) = report["nolabel"]
    assert simclr["method"] == "simclr" and simclr["epochs"] >= 1 and simclr["images_per_s"] > 0
    assert 0 < simclr["ratio_to_bare_backbone"] and 0 <= simclr["knn_top1_k200"] <= 100
    assert simclr["curve"] and simclr["curve"][-1]["epoch"] == simclr["epochs"] - 1   # 0-based
    md = (out / "gpu_check.md").read_text()
    assert "| simclr |" in md and "error in nolabel nosuch" in md
    lightly = bench.lightly_runs.available()
    if lightly is not None:
        assert report["lightly"]["skipped"] == lightly and "lightly skipped" in md
    else:
        pytest.skip("lightly imports here: tests/test_benchmarks.py covers the nolabel side only")


def test_pass_scaling_shards_the_labelling_and_keeps_its_result(capsys):
    """One process, then two over gloo: the whole-dataset pass and DeepCluster-v2's k-means
    labelling give every process the one-process rows and labels (k-means clusters each
    process's share of the gathered rows, not all of them on every process)."""
    report = load("pass_scaling").main(["--data", "demo?n=96", "--repeats", "1", "--k", "6", "--batch-size", "16"])
    assert report["images"] == 96 and report["rows_equal"] and report["labels_equal"]
    assert report["kmeans_on_the_same_rows_labels_equal"] and report["rows_max_abs_diff"] >= 0
    assert report["pass_seconds"]["1"] > 0 and report["labelling_with_pass_seconds"]["2"] > 0
