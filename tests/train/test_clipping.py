"""The loop's gradient clipping: the configured rule, applied after the frozen parameters'
gradients are dropped (so a frozen layer never enters the norm), and a wrong rule fails
before any data is read."""
from __future__ import annotations

import pytest

import nolabel.train as train_module
from nolabel.methods.dino import Dino
from nolabel.train import train


def test_frozen_gradients_dropped_before_clipping(tiny_config, monkeypatch):
    frozen, calls = [], []

    def record_frozen(self, info):
        params = original_frozen(self, info)
        frozen[:] = params
        return params

    def record_clip(params, max_norm, mode):
        params = list(params)
        calls.append((mode, max_norm, len(frozen), all(p.grad is None for p in frozen),
                      sum(p.grad is not None for p in params)))
        return original_clip(params, max_norm, mode)

    original_frozen, original_clip = Dino.frozen_parameters, train_module.clip_gradients_
    monkeypatch.setattr(Dino, "frozen_parameters", record_frozen)
    monkeypatch.setattr(train_module, "clip_gradients_", record_clip)
    # one epoch (4 steps), the last layer frozen in all of them (freeze_last_layer_epochs 1)
    train(tiny_config(extra=["--run.epochs=1", "--optim.clip_grad=3.0", "--optim.clip_mode=global"]))
    assert len(calls) == 4
    for mode, max_norm, n_frozen, frozen_dropped, n_with_grad in calls:
        assert (mode, max_norm) == ("global", 3.0)
        assert n_frozen >= 1 and frozen_dropped and n_with_grad > 0


def test_bad_clip_mode_fails_before_reading_data(tiny_config):
    cfg = tiny_config(extra=["--optim.clip_mode=norm"])
    cfg.data.train = "/nonexistent/folder"          # never opened: the option is checked first
    with pytest.raises(ValueError, match=r"--optim\.clip_mode='norm': choose from per_param, global"):
        train(cfg)
