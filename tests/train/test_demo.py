"""`nolabel demo`: trains the demo method, compares it with random init and pixels,
stops cleanly on an interrupt and continues on the next call."""
from __future__ import annotations

import json
import os
import signal

import pytest

import nolabel.demo_run as demo_run
from nolabel.checkpoint import CHECKPOINT, load_checkpoint, training_complete
from nolabel.cli import main
from nolabel.train import TrainingInterrupted

SMALL = dict(train_spec="demo:train?n=64&size=16", test_spec="demo:test?n=20&size=16",
             overrides=("run.batch_size=16", "simclr.hidden_dim=16", "simclr.out_dim=8", "run.progress=false",
                        "eval.every=0"))


def test_demo_trains_simclr_and_prints_the_comparison(tmp_path, capsys):
    summary = demo_run.run_demo(tmp_path / "d", epochs=1, **SMALL)
    printed, errors = capsys.readouterr()
    assert "k-NN:" not in errors                                              # --run.progress=false: no bar
    assert summary["method"] == "simclr" and set(summary["knn"]) == {"trained", "random init (resnet18)", "pixels"}
    assert json.loads((tmp_path / "d" / "demo_knn.json").read_text()) == summary
    assert "nolabel train --method dino --data demo" in printed          # DINO is the next thing to try
    assert "trained" in printed and "pixels" in printed


def test_knn_phase_shows_its_progress_on_stderr(monkeypatch, capsys):
    seen = []

    def fake_knn(spec, train_spec, test_spec, progress):
        seen.append(capsys.readouterr().err)              # the bar names the model before it is evaluated
        return {"top1": 1.0, "top5": 2.0}

    monkeypatch.setattr(demo_run, "knn_protocol", fake_knn)
    models = (("trained", "run"), ("random init (resnet18)", "random:run"), ("pixels", "pixels"))
    rows = demo_run.knn_rows(models, "a", "b", progress=True)
    assert list(rows) == [name for name, _ in models]
    for i, (err, (name, _)) in enumerate(zip(seen, models)):
        assert "k-NN:" in err and f"{i}/3" in err and name in err
    capsys.readouterr()
    demo_run.knn_rows(models, "a", "b", progress=False)
    assert seen[3:] == ["", "", ""] and capsys.readouterr() == ("", "")


def test_interrupted_demo_skips_the_comparison_and_continues(tmp_path, monkeypatch, capsys):
    real_train = demo_run.train
    calls = []

    def interrupted_once(cfg, resume=False):
        calls.append(resume)

        def stop(step, logs):
            if step == 1 and len(calls) == 1:
                os.kill(os.getpid(), signal.SIGINT)
        return real_train(cfg, resume=resume, on_step=stop)

    monkeypatch.setattr(demo_run, "train", interrupted_once)
    out = tmp_path / "d"
    with pytest.raises(TrainingInterrupted, match=f"nolabel demo --out {out}") as stopped:
        demo_run.run_demo(out, epochs=2, **SMALL)
    assert stopped.value.exit_code == 130 and "--resume" not in str(stopped.value)
    assert not (out / "demo_knn.json").exists() and "k-NN" not in capsys.readouterr().out
    assert not training_complete(out / CHECKPOINT) and load_checkpoint(out / CHECKPOINT)["global_step"] == 2
    demo_run.run_demo(out, **SMALL)                                          # the next call continues
    assert calls == [False, True] and training_complete(out / CHECKPOINT)
    assert (out / "demo_knn.json").exists()
    with pytest.raises(ValueError, match="--fresh"):
        demo_run.run_demo(out, epochs=3, **SMALL)                            # another length needs --fresh
    with pytest.raises(ValueError, match="simclr.temperature"):
        demo_run.run_demo(out, **{**SMALL, "overrides": (*SMALL["overrides"], "simclr.temperature=0.3")})


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_demo_exits_with_the_signal_status(tmp_path, monkeypatch, capsys, signum, status):
    out = tmp_path / "d"

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(signum, out, epoch=1, step=2, command=f"nolabel demo --out {out}")
    monkeypatch.setattr(demo_run, "run_demo", interrupted)
    assert main(["demo", "--out", str(out)]) == status
    assert f"continue with `nolabel demo --out {out}`" in capsys.readouterr().err
