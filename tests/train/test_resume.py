"""Exact resume: a run interrupted by SIGINT and resumed reproduces, step for step,
the losses of an uninterrupted run (CPU, fixed seed)."""
import os
import signal

import pytest
import torch

from nolabel.checkpoint import load_checkpoint
from nolabel.runlog import MetricsLog
from nolabel.train import train


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
    out = train(cfg, on_step=interrupt)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["global_step"] == interrupt_at + 1
    assert len(step_losses(out)) == interrupt_at + 1
    train(cfg, resume=True)
    resumed = step_losses(out)
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    for (_, a), (_, b) in zip(resumed, reference):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    assert len(knn_curves(full)) == 2 and knn_curves(out) == knn_curves(full)   # k-NN curves on by default
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
