"""A run that fails says why and loses nothing."""
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

import nolabel.train_setup
from nolabel.checkpoint import load_checkpoint
from nolabel.cli import main
from nolabel.methods.dino import Dino
from nolabel.train import TrainingError, TrainingInterrupted, train
from tests.train.conftest import TINY


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


def test_batch_larger_than_dataset_is_a_clear_error_and_leaves_nothing_behind(tiny_config, tmp_path):
    with pytest.raises(TrainingError, match="--batch-size 128 is larger than the 64 images"):
        train(tiny_config(out="new/run", extra=["--run.batch_size=128"]))
    assert not (tmp_path / "new").exists()                  # the folders this run created are gone
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="--batch-size 128"):
        train(tiny_config(out="keep", extra=["--run.batch_size=128"]))
    assert sorted(os.listdir(keep)) == ["notes.txt"]         # a folder that was there stays, with its files


def _no_data(monkeypatch, what="the options were checked"):
    def no_data(*args, **kwargs):
        raise AssertionError(f"the data was opened before {what}")
    monkeypatch.setattr(nolabel.train_setup, "open_images", no_data)


@pytest.mark.parametrize("option,message", [
    (["--epochs", "-1"], "--epochs -1"),
    (["--epochs", "0"], "--epochs 0"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--backbone", "vgg"], "unknown backbone 'vgg'"),
    (["--optim.optimizer=adam"], "--optim.optimizer='adam'"),
    (["--run.precision=fp8"], "--run.precision='fp8'"),
    (["--run.device=tpu"], "--run.device='tpu'"),
    (["--run.channels_last=maybe"], "--run.channels_last='maybe'"),
    (["--run.threads=0"], "--run.threads=0"),
    (["--run.threads=many"], "--run.threads='many'"),
    (["--data.in_memory=sometimes"], "--data.in_memory='sometimes'"),
    (["--optim.clip_mode=norm"], "--optim.clip_mode='norm'"),
    (["--run.recipe=big"], "--run.recipe='big'"),
    (["--run.log_every=0"], "--run.log_every=0"),
    (["--run.save_every=0"], "--run.save_every=0"),
    (["--eval.every=-1"], "--eval.every=-1"),
    (["--model.init=no/such/run"], "--model.init=no/such/run"),
], ids=lambda v: v[-1] if isinstance(v, list) else None)
def test_every_value_is_checked_before_the_data_is_read(option, message, tmp_path, monkeypatch, capsys):
    _no_data(monkeypatch)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith(("--run.epochs=", "--run.batch_size=", "--model.backbone="))]
    code = main(["train", "--out", str(out), "--method", "dino", *tiny, "--epochs", "2", "--batch-size", "16",
                 "--backbone", "vit_tiny", *option])      # the options under test come last: they win
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert not out.exists()                                  # a refused run writes nothing


@pytest.mark.parametrize("method", ["mae", "ibot"])
def test_a_masking_method_on_a_resnet_is_refused_before_the_data_is_read(method, tmp_path, monkeypatch, capsys):
    _no_data(monkeypatch, "the backbone was checked")
    out = tmp_path / "run"
    code = main(["train", "--method", method, "--data", "demo?n=64", "--backbone", "resnet18", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--method {method} masks patch tokens and needs a ViT backbone" in err
    assert "--model.backbone=resnet18 is not one; choose from vit_tiny, vit_small, vit_base" in err
    assert not out.exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"\x80\x04 not a checkpoint" * 50)




def test_damaged_checkpoint_names_the_file_and_the_previous_one(tiny_config, monkeypatch, capsys):
    def interrupt(step, logs):
        if step == 5:                                        # epoch 2: epoch 1's checkpoint becomes the previous
            os.kill(os.getpid(), signal.SIGINT)

    cfg = tiny_config(extra=["--eval.every=0"])
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_step=interrupt)
    out = Path(cfg.run.out)
    current, previous = out / "checkpoint.pt", out / "checkpoint.prev.pt"
    assert load_checkpoint(current)["global_step"] == 6 and load_checkpoint(previous)["global_step"] == 4
    _damage(current, "truncated")
    with monkeypatch.context() as m:
        _no_data(m, "the checkpoint was checked")
        code = main(["train", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{current} is damaged" in err and "intact" in err and "config.yaml" in err
    assert f"mv {previous} {current}" in err and "epoch 1" in err
    assert "PytorchStreamReader" not in err and "Traceback" not in err
    os.replace(previous, current)                            # as the message says
    assert main(["train", "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert load_checkpoint(current)["global_step"] == 8


def test_garbage_checkpoint_without_a_previous_one_says_what_to_do(tiny_config, monkeypatch, capsys):
    cfg = tiny_config(extra=["--eval.every=0", "--run.epochs=1"])
    out = train(cfg)
    assert not (out / "checkpoint.prev.pt").exists()         # one checkpoint written so far
    _damage(out / "checkpoint.pt", "garbage")
    _no_data(monkeypatch, "the checkpoint was checked")
    code = main(["train", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{out / 'checkpoint.pt'} is damaged" in err and "intact" in err and "no earlier checkpoint" in err
    assert "weights_only" not in err and "Traceback" not in err


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
