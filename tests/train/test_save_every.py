"""--run.save_every_steps: a checkpoint every N optimisation steps, mid-epoch too, so that a
crash (not only Ctrl-C) costs at most N steps; the resumed run is the uninterrupted one."""
from pathlib import Path

import pytest
import torch

import nolabel.train_setup
from nolabel.checkpoint import load_checkpoint
from nolabel.cli import main
from nolabel.runlog import MetricsLog
from nolabel.train import train
from tests.train.conftest import TINY
from tests.train.test_resume import step_losses

EVERY_2 = ["--run.save_every_steps=2", "--eval.every=0"]


class Crash(Exception):
    pass


def _crash_at(step_to_fail):
    def crash(step, logs):
        if step == step_to_fail:
            raise Crash(step)
    return crash


def _saved_steps(monkeypatch):
    """Record (global_step, step_in_epoch) of every checkpoint the loop writes."""
    saved, real = [], nolabel.train_setup.save_checkpoint

    def save(path, state):
        saved.append((state["global_step"], state["step_in_epoch"]))
        real(path, state)

    monkeypatch.setattr(nolabel.train_setup, "save_checkpoint", save)
    return saved


def test_checkpoint_every_n_steps_mid_epoch_and_at_epoch_ends(tiny_config, monkeypatch):
    saved = _saved_steps(monkeypatch)
    train(tiny_config("every3", ["--run.save_every_steps=3", "--eval.every=0"]))     # 4 steps an epoch
    assert saved == [(3, 3), (4, 0), (6, 2), (8, 0)]
    saved.clear()
    train(tiny_config("off", ["--eval.every=0"]))                                    # default 0: epoch ends only
    assert saved == [(4, 0), (8, 0)]
    saved.clear()
    train(tiny_config("epochs", ["--run.save_every=5", "--run.save_every_steps=4", "--eval.every=0"]))
    assert saved == [(4, 0), (8, 0)]          # due at an epoch's end: that epoch's checkpoint, written once


@pytest.mark.parametrize("fail_at", [2, 6], ids=["epoch1", "epoch2"])
def test_crash_after_step_3_resumes_from_step_2_like_an_uninterrupted_run(tiny_config, monkeypatch, fail_at):
    reference = train(tiny_config("full", EVERY_2))
    cfg = tiny_config("crashed", EVERY_2)
    with pytest.raises(Crash):
        train(cfg, on_step=_crash_at(fail_at))          # dies after its (fail_at + 1)th step, no handler runs
    out = Path(cfg.run.out)
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["global_step"], state["step_in_epoch"]) == (fail_at, 2)
    assert state["epoch_count"] == 2                     # the epoch's running sums go with it
    assert len(step_losses(out)) == fail_at + 1          # the step past the checkpoint is logged...

    saved = _saved_steps(monkeypatch)
    train(cfg, resume=True)
    assert saved == [(4, 0), (6, 2), (8, 0)][(fail_at - 2) // 2:]   # from where it crashed, as before
    resumed, want = step_losses(out), step_losses(reference)
    assert [s for s, _ in resumed] == [s for s, _ in want] == list(range(8))   # ...and replaced on resume
    for (_, a), (_, b) in zip(resumed, want):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)
    epochs = lambda run: [r for r in MetricsLog(run).read() if r["type"] == "epoch"]   # noqa: E731
    assert [r["epoch"] for r in epochs(out)] == [0, 1]
    for got, expected in zip(epochs(out), epochs(reference)):   # means over the whole epoch
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6, abs=1e-7)
    a = load_checkpoint(out / "checkpoint.pt")["method"]
    b = load_checkpoint(reference / "checkpoint.pt")["method"]
    for key in b:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.parametrize("value", ["-1", "-10"])
def test_negative_save_every_steps_is_refused_before_the_data_is_read(value, tmp_path, monkeypatch, capsys):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was opened before the options were checked")

    monkeypatch.setattr(nolabel.train_setup, "open_images", no_data)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--method", "dino", *TINY, f"--run.save_every_steps={value}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--run.save_every_steps={value}" in err and ">= 0" in err
    assert not out.exists()
