"""A run that fails says why and loses nothing."""
import pytest
import torch
from PIL import Image

from nolabel.checkpoint import load_checkpoint
from nolabel.methods.dino import Dino
from nolabel.train import TrainingError, train


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_config, monkeypatch):
    real_step = Dino.training_step

    def poisoned(self, views, info):
        loss, logs = real_step(self, views, info)
        return (loss * float("nan") if info.step == 5 else loss), logs

    monkeypatch.setattr(Dino, "training_step", poisoned)
    cfg = tiny_config()
    with pytest.raises(TrainingError, match="loss is nan at epoch 2, step 5"):
        train(cfg)
    state = load_checkpoint(tiny_config().run.out + "/checkpoint.pt")
    assert state["epoch"] == 1 and state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())


def test_batch_larger_than_dataset_is_a_clear_error(tiny_config):
    with pytest.raises(TrainingError, match="--batch-size 128 is larger than the 64 images"):
        train(tiny_config(extra=["--run.batch_size=128"]))


def test_bad_files_are_skipped_and_reported(tiny_config, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(21):   # 21 good + 3 bad = 24 files: 3 full batches of 8, every file visited
        pixels = (torch.rand(24, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    good = (folder / "img0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    for in_memory in ("true", "false"):
        cfg = tiny_config(out=f"run-{in_memory}", extra=[f"--data.train={folder}", "--run.batch_size=8",
                                                          f"--data.in_memory={in_memory}", "--data.num_workers=0",
                                                          "--run.epochs=1"])
        out = train(cfg)
        skipped = (out / "skipped_files.txt").read_text()
        for name in ("empty.jpg", "notes.jpg", "cut.png"):
            assert name in skipped
        assert "skipped 3 unreadable file" in (out / "train.log").read_text() or \
               "unreadable file" in (out / "train.log").read_text()
