"""The device-resident path of issue 14, part 1, on CPU: decoded images kept on the device
(`--data.on_device`), `--run.compile`, fused/foreach optimiser steps."""
import pytest
import torch

import nolabel.train_setup as train_setup
from nolabel.config import ConfigError, apply_overrides, new_config
from nolabel.data import open_images
from nolabel.data.errors import DataError
from nolabel.optim import build_optimizer
from nolabel.runlog import MetricsLog
from nolabel.train import TrainingError, train
from tests.methods.test_peer_methods import GENERAL, section


def _batches(data):
    return [(b.images.clone(), b.labels.clone(), b.index.clone())
            for b in data.batches(8, shuffle=True, seed=3, epoch=1)]


def test_a_set_on_the_device_gives_the_same_batches():
    data = open_images("demo?n=40", in_memory=True)
    before = _batches(data)
    assert data.decoded_bytes == 40 * 3 * data.image_size ** 2
    moved = data.to_device("cpu")
    assert moved is data and data.device == torch.device("cpu")
    for (a, la, ia), (b, lb, ib) in zip(before, _batches(data)):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    assert len(data.subset([3, 1])) == 2


def test_a_streamed_set_cannot_live_on_the_device(tmp_path):
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    data = open_images(str(tmp_path), in_memory=False)
    with pytest.raises(DataError, match="streamed from disk"):
        data.to_device("cpu")


class _Fake:
    def __init__(self, in_memory, nbytes):
        self.in_memory, self.decoded_bytes, self.spec = in_memory, nbytes, "cifar10:/data"


def test_which_sets_go_to_the_device(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 2**30, 8 * 2**30))  # 4 GiB free
    decide = train_setup._data_on_device
    assert not decide("auto", _Fake(True, 150 * 2**20), torch.device("cpu"))     # the CPU: there already
    assert decide("auto", _Fake(True, 150 * 2**20), cuda)                         # CIFAR-10: 150 MB
    assert not decide("auto", _Fake(True, 2 * 2**30), cuda)                       # over a quarter of 4 GiB
    assert decide(True, _Fake(True, 2 * 2**30), cuda)                             # asked for
    assert not decide(False, _Fake(True, 1), cuda)
    assert not decide("auto", _Fake(False, 0), cuda)                              # streamed: pinned copies
    with pytest.raises(TrainingError, match="--data.on_device=true: cifar10:/data is streamed"):
        decide(True, _Fake(False, 0), cuda)


def _simclr(tmp_path, name, extra=()):
    cfg = new_config("simclr")
    apply_overrides(cfg, GENERAL + ["--run.epochs=1", f"--run.out={tmp_path / name}"]
                    + [f"--simclr.{o}" for o in section("simclr")] + list(extra))
    return cfg


def test_compile_keeps_the_run_identical(tmp_path):
    """`--run.compile=eager` runs the backbone through torch.compile's graph capture (the
    backend that adds no kernels of its own): the same losses as the eager run, and the
    checkpoint's keys unchanged (Module.compile compiles in place)."""
    plain, compiled = _simclr(tmp_path, "plain"), _simclr(tmp_path, "compiled", ["--run.compile=eager"])
    losses = {}
    for cfg in (plain, compiled):
        train(cfg)
        losses[cfg.run.out] = [r["loss"] for r in MetricsLog(cfg.run.out).read() if r["type"] == "step"]
    assert losses[plain.run.out] == pytest.approx(losses[compiled.run.out], rel=1e-5)
    from nolabel.checkpoint import load_checkpoint
    keys = [set(load_checkpoint(c.run.out + "/checkpoint.pt")["method"]) for c in (plain, compiled)]
    assert keys[0] == keys[1]
    assert "torch.compile (eager) on 1 backbone(s)" in (tmp_path / "compiled" / "train.log").read_text()


def test_compile_rejects_an_unknown_backend(tmp_path):
    with pytest.raises(ConfigError, match="--run.compile='fast'"):
        train(_simclr(tmp_path, "bad", ["--run.compile=fast"]))


def test_compile_takes_the_outermost_backbones_once():
    from nolabel.backbones import build_backbone
    inner = build_backbone("resnet18", image_size=32, width=0.125, small_stem=True)
    outer = torch.nn.Module()
    outer.spec, outer.num_features, outer.inner = {}, 8, inner
    holder = torch.nn.ModuleDict({"a": outer, "b": build_backbone("resnet18", image_size=32, width=0.125)})
    assert train_setup.compile_backbones_(holder, "eager") == 2


@pytest.mark.parametrize("name,kernel", [("adamw", "fused"), ("sgd", "foreach")])
def test_optimisers_take_the_fast_kernels_and_the_same_step(name, kernel):
    """AdamW fused, SGD foreach (torch's fused SGD cannot take a parameter whose momentum
    starts later than the others': DINO's last layer, SwAV's prototypes); the update equals
    torch's per-parameter loop to rounding, including a parameter that joins at step 2."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    reference.load_state_dict(model.state_dict())
    fast = build_optimizer(name, model, lr=0.1, weight_decay=0.0)   # no decay: one group, as below
    assert fast.defaults[kernel] is True
    groups = [{"params": list(reference.parameters())}]
    slow = (torch.optim.AdamW(groups, lr=0.1, weight_decay=0.0, foreach=False) if name == "adamw"
            else torch.optim.SGD(groups, lr=0.1, weight_decay=0.0, momentum=0.9, foreach=False))
    x = torch.randn(4, 6)
    for step in range(3):
        for net, opt in ((model, fast), (reference, slow)):
            opt.zero_grad(set_to_none=True)
            net(x).pow(2).sum().backward()
            if step == 0:
                net[1].weight.grad = None              # frozen at first, then trained
            opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
