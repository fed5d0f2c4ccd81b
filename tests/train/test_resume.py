"""Exact resume: a run interrupted by SIGINT and resumed reproduces, step for step,
the losses of an uninterrupted run (CPU, fixed seed)."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nolabel.checkpoint import load_checkpoint
from nolabel.cli import main
from nolabel.config import load_yaml
from nolabel.methods.dino import Dino
from nolabel.runlog import MetricsLog
from nolabel.train import TrainingInterrupted, train
from tests.train.conftest import TINY


def step_losses(run_dir):
    return [(r["step"], r["loss"]) for r in MetricsLog(run_dir).read() if r["type"] == "step"]


def knn_curves(run_dir):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in MetricsLog(run_dir).read() if r["type"] == "knn"]


RESNET = ["--model.backbone=resnet18", "--model.width=0.125", "--model.small_stem=true", "--model.patch_size=null",
          "--model.depth=null", "--model.embed_dim=null", "--model.num_heads=null"]     # TINY's ViT fields unset


@pytest.mark.parametrize("interrupt_at,extra", [
    (1, []), (3, []),                                   # mid-epoch, and the last step of epoch 1
    (1, ["--run.precision=bf16"]),                      # bf16 autocast on CPU is as deterministic
    (3, ["--run.precision=bf16", *RESNET]),             # ResNet: channels-last weights and views (auto)
], ids=["fp32-mid", "fp32-end", "bf16-mid", "bf16-resnet-channels-last-end"])
def test_sigint_then_resume_matches_uninterrupted(tiny_config, interrupt_at, extra):
    full = train(tiny_config("full", extra))
    reference = step_losses(full)
    assert len(reference) == 8

    def interrupt(step, logs):
        if step == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = tiny_config("cut", extra)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, on_step=interrupt)
    out = Path(cfg.run.out)
    assert stopped.value.exit_code == 130 and f"nolabel train --out {out} --resume" in str(stopped.value)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["global_step"] == interrupt_at + 1
    assert len(step_losses(out)) == interrupt_at + 1
    train(cfg, resume=True)
    resumed = step_losses(out)
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    for (_, a), (_, b) in zip(resumed, reference):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert len(knn_curves(full)) == 2 and knn_curves(out) == knn_curves(full)   # k-NN curves on by default
    # the epoch records' means cover the whole epoch, the steps before the interruption too (issue 14)
    epochs = lambda run: [r for r in MetricsLog(run).read() if r["type"] == "epoch"]   # noqa: E731
    assert [r["epoch"] for r in epochs(out)] == [r["epoch"] for r in epochs(full)] == [0, 1]
    for got, want in zip(epochs(out), epochs(full)):
        for key in ("loss", "lr", "weight_decay", "teacher_momentum"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), (got["epoch"], key)
    a = load_checkpoint(out / "checkpoint.pt")["method"]
    b = load_checkpoint(full / "checkpoint.pt")["method"]
    for key in b:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_run_folder_contents(tiny_config):
    out = train(tiny_config())
    for name in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "metrics.png", "train.log"):
        assert (out / name).is_file(), name
    records = MetricsLog(out).read()
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    for r in records:
        assert {"epoch", "step"} <= set(r) and ("loss" in r or r["type"] == "knn")
    assert {"teacher_entropy", "kl", "emb_std", "lr", "teacher_momentum", "teacher_temp"} <= set(epochs[0])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_teacher_moves_and_last_layer_frozen_in_first_epoch(tiny_config):
    from nolabel.backbones import build_backbone
    from nolabel.config import load_yaml
    from nolabel.methods import RunShape, get_method
    from nolabel.presets import backbone_kwargs

    out = train(tiny_config(extra=["--run.epochs=1"]))
    cfg = load_yaml(out / "config.yaml")
    torch.manual_seed(cfg.run.seed)
    backbone = build_backbone(cfg.model.backbone, image_size=cfg.data.image_size, **backbone_kwargs(cfg))
    init = get_method("dino")(cfg.method_config, backbone, RunShape(cfg.data.image_size, 1, 64)).state_dict()
    final = load_checkpoint(out / "checkpoint.pt")["method"]
    # the student's last layer never moved during the (only) epoch; the teacher's backbone did
    assert torch.equal(final["student.head.last_layer.direction"], init["student.head.last_layer.direction"])
    assert not torch.equal(final["teacher.backbone.blocks.0.attn.qkv.weight"],
                           init["teacher.backbone.blocks.0.attn.qkv.weight"])
    assert not torch.equal(final["student.backbone.blocks.0.attn.qkv.weight"],
                           final["teacher.backbone.blocks.0.attn.qkv.weight"])


def _interrupt_at(step_to_stop):
    def interrupt(step, logs):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)
    return interrupt


def test_ctrl_c_exits_130_with_the_checkpoint_written_and_the_command_printed(tmp_path):
    """A real Ctrl-C on `nolabel train`: `train && eval` must not go on with a half-trained model."""
    out = tmp_path / "my run"                      # a space: the printed command quotes it
    argv = ["train", "--out", str(out), "--method", "dino", *TINY, "--run.epochs=500", "--eval.every=0"]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from nolabel.cli import main; sys.exit(main())",
                             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics, deadline = out / "metrics.jsonl", time.time() + 180
    while not (metrics.exists() and metrics.read_text().strip()):        # the first step is logged
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"no training step logged: {proc.communicate()}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"nolabel train --out {shlex.quote(str(out))} --resume" in stderr
    assert 1 <= load_checkpoint(out / "checkpoint.pt")["global_step"] < 500 * 4


def test_sigterm_exits_143_after_the_checkpoint(tmp_path, monkeypatch, capsys):
    real_step = Dino.training_step

    def step(self, views, info):
        if info.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, views, info)

    monkeypatch.setattr(Dino, "training_step", step)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--method", "dino", *TINY, "--eval.every=0"]) == 143
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 2
    err = capsys.readouterr().err
    assert "SIGTERM" in err and f"nolabel train --out {out} --resume" in err


def test_moved_or_copied_run_folder_resumes_where_it_is(tiny_config, tmp_path, capsys):
    """The folder is the run: config.yaml's run.out follows it, the original is left alone."""
    cfg = tiny_config("first", ["--eval.every=0"])
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_step=_interrupt_at(1))
    first, copy, moved = tmp_path / "first", tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(first, copy)
    shutil.move(first, moved)

    assert main(["train", "--out", str(copy), "--resume"]) == 0, capsys.readouterr().err
    assert load_checkpoint(copy / "checkpoint.pt")["global_step"] == 8
    assert load_yaml(copy / "config.yaml").run.out == str(copy)
    assert load_checkpoint(moved / "checkpoint.pt")["global_step"] == 2      # the copy's source: untouched
    assert load_yaml(moved / "config.yaml").run.out == str(first)

    assert main(["train", "--out", str(moved), "--resume"]) == 0, capsys.readouterr().err
    assert load_checkpoint(moved / "checkpoint.pt")["global_step"] == 8
    assert load_yaml(moved / "config.yaml").run.out == str(moved)
    assert not first.exists()                                                # nothing written to the old place
    assert step_losses(moved) == step_losses(copy)
