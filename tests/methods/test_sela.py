"""SeLa-v2 (thesis 4.4) through the one training loop on a tiny CPU config: whole-dataset
Sinkhorn labels at the right epochs, covering every image with balanced clusters, and
exact resume across labellings."""
import math
import os
import signal

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.checkpoint import load_checkpoint
from nolabel.config import apply_overrides, new_config
from nolabel.methods import RunShape, StepInfo
from nolabel.methods.sela import Sela, SelaConfig
from nolabel.runlog import MetricsLog
from nolabel.train import TrainingInterrupted, train
from tests.train.conftest import TINY

N, K, HEADS = 64, 4, 2
# TINY's 64 images, batch 16 (4 steps an epoch); 3 epochs, relabelled before epochs 0 and 2.
SELA = [a for a in TINY if not a.startswith("--dino.") and not a.startswith("--run.epochs")] + [
    "--run.epochs=3", "--sela.hidden_dim=64", "--sela.out_dim=16", f"--sela.n_prototypes={K}",
    f"--sela.n_heads={HEADS}", "--sela.n_local_views=2", "--sela.label_every_epochs=2"]


def sela_config(out):
    cfg = new_config("sela")
    apply_overrides(cfg, SELA + [f"--run.out={out}"])
    return cfg


def step_records(out):
    return [r for r in MetricsLog(out).read() if r["type"] == "step"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return train(sela_config(tmp_path_factory.mktemp("sela") / "full"))


def test_defaults():
    c = SelaConfig()
    assert (c.out_dim, c.temperature, c.n_heads, c.label_every_epochs) == (128, 0.1, 3, 1)
    backbone = build_backbone("vit_tiny", image_size=16, patch_size=8, depth=1, embed_dim=16, num_heads=2)
    assert Sela(SelaConfig(hidden_dim=16, n_heads=1), backbone, RunShape(16, 2, 64)).n_prototypes == 6
    assert Sela(SelaConfig(hidden_dim=16, n_heads=1), backbone, RunShape(16, 2, 100_000)).n_prototypes == 3000


def test_labels_at_the_right_epochs_cover_every_image_and_are_balanced(full):
    records = step_records(full)
    assert len(records) == 12 and all(math.isfinite(r["loss"]) for r in records)
    assert [r["label_epoch"] for r in records] == [0] * 8 + [2] * 4
    assert (full / "train.log").read_text().count(f"pass over {N} images") == 2
    labels = load_checkpoint(full / "checkpoint.pt")["method"]["labels"]
    assert labels.shape == (HEADS, N) and int(labels.min()) >= 0          # every image labelled
    for head in labels:
        sizes = torch.bincount(head.long(), minlength=K)
        assert sizes.min() >= N / K / 4 and sizes.max() <= 2 * N / K, sizes
    assert all(r["label_clusters_used"] == K for r in records)


def test_step_needs_indices_and_trains_backbone():
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny", image_size=16, patch_size=8, depth=1, embed_dim=16, num_heads=2)
    method = Sela(SelaConfig(hidden_dim=16, out_dim=8, n_prototypes=3, n_heads=2, n_local_views=1),
                  backbone, RunShape(16, 2, 10))
    method.labels.copy_(torch.arange(20).view(2, 10) % 3)
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), torch.randn(4, 3, 8, 8)]
    with pytest.raises(ValueError, match="indices"):
        method.training_step(views, StepInfo(0, 0, 10, 5))
    loss, logs = method.training_step(views, StepInfo(0, 0, 10, 5, index=torch.tensor([0, 3, 5, 9])))
    loss.backward()
    assert backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert all(h.weight.grad.abs().sum() > 0 for h in method.heads)


# 7: the last step of epoch 2, so the resumed run labels before epoch 3 itself; 9: the middle of
# epoch 3, so the resumed run must take epoch 3's labels from the checkpoint, not relabel.
@pytest.mark.parametrize("interrupt_at", [7, 9])
def test_resume_reproduces_the_uninterrupted_run(full, tmp_path, interrupt_at):
    def interrupt(step, logs):
        if step == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = sela_config(tmp_path / "cut")
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_step=interrupt)
    out = tmp_path / "cut"
    assert len(step_records(out)) == interrupt_at + 1
    train(cfg, resume=True)
    resumed, reference = step_records(out), step_records(full)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for a, b in zip(resumed, reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7)
        assert a["label_epoch"] == b["label_epoch"]
    a = load_checkpoint(out / "checkpoint.pt")["method"]
    b = load_checkpoint(full / "checkpoint.pt")["method"]
    assert torch.equal(a["labels"], b["labels"])
    for key in b:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key
