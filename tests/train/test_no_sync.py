"""No per-step host synchronisation (issue 14, part 1): a training step, and the loop's
bookkeeping of its record, read nothing back from the device. The loop reads the logs
every ``run.log_every`` steps; a non-finite loss still stops the run, at most that many
steps late, before any checkpoint could keep the weights it spoiled.

On CPU a read-back costs nothing, so the test counts the Python-level reads that would wait
for a GPU (``Tensor.item``, ``float``, ``int``, ``bool``, ``tolist``) made inside
``train_step`` and ``StepLogs.add``, with the run's logs read only at the epochs' ends.
"""
import traceback
from pathlib import Path

import pytest
import torch

import nolabel.train as train_module
from nolabel.config import apply_overrides, new_config
from nolabel.methods import method_names
from nolabel.train import StepLogs, TrainingError, train
from tests.methods.test_peer_methods import GENERAL, section

READS = ("item", "__float__", "__int__", "__bool__", "tolist", "__index__")
SRC = str(Path(train_module.__file__).parent)
# Reads that are no device round trip, or that a method needs by design, with the reason.
ALLOWED_FILES = {
    "views.py": "crop boxes are drawn on the host (CPU RNG) and copied to the device once",
}
ALLOWED_METHODS = {     # name: (the files that read, why)
    "deepercluster": ({"deepercluster.py", "hierarchical.py"},
                      "each batch is checked for images without a cluster, and the hierarchical loss checks "
                      "its rotation and super-cluster labels' range"),
    "ibot": ({"masking.py", "dino.py"},
             "blockwise masks are drawn by rejection until each image has its share, and the masked-patch "
             "loss checks its count of masked tokens (a data-dependent shape)"),
}


def _reads_in(monkeypatch, *targets):
    """Patch the read methods of torch.Tensor to note (name, first nolabel frame) while one
    of ``targets`` ((owner, attribute) callables) runs. Returns the list of notes."""
    reads, active = [], [False]
    for name in READS:
        real = getattr(torch.Tensor, name)

        def read(self, *args, _real=real, _name=name, **kwargs):
            if active[0]:
                frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(SRC)]
                where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
                reads.append((_name, where))
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, read)
    for owner, attr in targets:
        real = getattr(owner, attr)

        def watched(*args, _real=real, **kwargs):
            active[0] = True
            try:
                return _real(*args, **kwargs)
            finally:
                active[0] = False
        monkeypatch.setattr(owner, attr, watched)
    return reads


@pytest.mark.parametrize("name", method_names())
def test_a_training_step_reads_nothing_back_from_the_device(name, monkeypatch, tmp_path):
    reads = _reads_in(monkeypatch, (train_module, "train_step"), (StepLogs, "add"))
    cfg = new_config(name)
    apply_overrides(cfg, GENERAL + ["--run.log_every=1000000", f"--run.out={tmp_path / 'run'}"]
                    + [f"--{name}.{o}" for o in section(name)])
    train(cfg)
    seen = sorted({(n, w) for n, w in reads if w.split(":")[0] not in ALLOWED_FILES})
    if name in ALLOWED_METHODS:                 # the exception is still needed, and only where it says
        assert seen, f"{name} no longer reads back in its step: drop it from ALLOWED_METHODS"
        assert {w.split(":")[0] for _, w in seen} <= ALLOWED_METHODS[name][0], seen
    else:
        assert seen == [], f"{name}: reads from the device inside a training step: {seen}"


def test_the_read_counter_sees_a_read_in_a_step(monkeypatch, tmp_path):
    """The counter above is not blind: a method that logs float(...) of a tensor is caught."""
    from nolabel.methods.simclr import SimCLR
    real_step = SimCLR.training_step

    def with_a_read(self, views, info):
        loss, logs = real_step(self, views, info)
        return loss, {**logs, "read": float(loss.detach())}
    monkeypatch.setattr(SimCLR, "training_step", with_a_read)
    reads = _reads_in(monkeypatch, (train_module, "train_step"), (StepLogs, "add"))
    cfg = new_config("simclr")
    apply_overrides(cfg, GENERAL + ["--run.log_every=1000000", f"--run.out={tmp_path / 'run'}"]
                    + [f"--simclr.{o}" for o in section("simclr")])
    train(cfg)
    assert any(n == "__float__" for n, _ in reads)


def test_a_non_finite_loss_is_seen_at_the_next_read_and_no_checkpoint_keeps_it(tiny_config, monkeypatch):
    """The loss read back every 3 steps (and at each epoch's last step): a nan at step 5 stops
    the run at the first read after it (step 6), naming step 5; the checkpoint on disk is the
    one of epoch 1, all finite."""
    from nolabel.checkpoint import load_checkpoint
    from nolabel.methods.dino import Dino
    real_step = Dino.training_step

    def poisoned(self, views, info):
        loss, logs = real_step(self, views, info)
        return (loss * float("nan") if info.step == 5 else loss), logs
    monkeypatch.setattr(Dino, "training_step", poisoned)
    cfg = tiny_config(extra=["--run.log_every=3"])
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2, step 5: .*seen at step 6.*every "
                                            r"--run.log_every=3 steps"):
        train(cfg)
    state = load_checkpoint(cfg.run.out + "/checkpoint.pt")
    assert state["epoch"] == 1 and state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["method"].values() if v.is_floating_point())
