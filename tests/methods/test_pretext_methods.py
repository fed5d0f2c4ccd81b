"""Jigsaw (Noroozi and Favaro 2016) and relative patch location (Doersch et al. 2015):
a few CPU steps through the real loop, gradients into the backbone, the pretext accuracy
logs, and the labels' encoding (a known permutation / neighbour decodes back)."""
from __future__ import annotations

import math

import pytest
import torch

import nolabel.train as train_module
import nolabel.train_setup as train_setup
from nolabel.backbones import build_backbone
from nolabel.config import apply_overrides, new_config
from nolabel.methods import RunShape, StepInfo, get_method, method_names
from nolabel.methods.jigsaw import shuffle_tiles
from nolabel.monitor import pretext_health
from nolabel.ops.permutations import permutation_index
from nolabel.ops.tiles import NEIGHBOUR_OFFSETS, cell_origins
from nolabel.runlog import MetricsLog

NAMES = ("jigsaw", "relativeloc")
TINY_RUN = ["--data.train=demo?n=32", "--run.epochs=1", "--run.batch_size=16", "--run.log_every=1",
            "--run.progress=false", "--model.backbone=vit_tiny", "--model.patch_size=8", "--model.depth=1",
            "--model.embed_dim=32", "--model.num_heads=2"]


def tiny_vit():
    return build_backbone("vit_tiny", image_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)


def build(name, backbone=None, image_size=32, **overrides):
    cfg = new_config(name)
    apply_overrides(cfg, [f"--{name}.hidden_dim=32"] + [f"--{name}.{k}={v}" for k, v in overrides.items()])
    return get_method(name)(cfg.method_config, backbone or tiny_vit(), RunShape(image_size, 1, 64))


def info():
    return StepInfo(step=0, epoch=0, total_steps=10, steps_per_epoch=5)


def cell_image(method, batch=3):
    """Normalised-looking views whose every grid cell is filled with its cell index."""
    layout = method.layout
    view = torch.full((batch, 3, method.shape.image_size, method.shape.image_size), -1.0)
    for k, (y, x) in enumerate(cell_origins(layout).tolist()):
        view[:, :, y:y + layout.cell, x:x + layout.cell] = float(k)
    return view


def test_registered():
    assert set(NAMES) <= set(method_names())


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_the_loop(name, tmp_path):
    grads = {}
    backbone_params = []
    original = train_setup.build_backbone

    def spy(*args, **kwargs):
        backbone = original(*args, **kwargs)
        backbone_params.extend(backbone.parameters())
        return backbone

    def on_step(step, record):
        grads[step] = sum(float(p.grad.abs().sum()) for p in backbone_params if p.grad is not None)

    cfg = new_config(name)
    apply_overrides(cfg, TINY_RUN + [f"--run.out={tmp_path / 'run'}", f"--{name}.hidden_dim=32"])
    train_setup.build_backbone = spy
    try:
        out = train_module.train(cfg, on_step=on_step)
    finally:
        train_setup.build_backbone = original
    steps = [r for r in MetricsLog(out).read() if r["type"] == "step"]
    assert len(steps) == 2
    assert all(math.isfinite(r["loss"]) for r in steps)
    assert all(0.0 <= r["pretext_acc"] <= 1.0 for r in steps)
    chance = 1 / (100 if name == "jigsaw" else 8)
    assert all(r["chance"] == pytest.approx(chance) for r in steps)
    assert steps[0]["loss"] == pytest.approx(-math.log(chance), rel=0.3)     # starts near chance
    assert max(grads.values()) > 0
    epochs = [r for r in MetricsLog(out).read() if r["type"] == "epoch"]
    assert "pretext_acc" in epochs[-1]


@pytest.mark.parametrize("name", NAMES)
def test_step_gives_backbone_gradients_and_resnets_work(name):
    torch.manual_seed(0)
    for backbone in (tiny_vit(), build_backbone("resnet18", image_size=32, width=0.125)):
        m = build(name, backbone=backbone)
        loss, logs = m.training_step([torch.randn(4, 3, 32, 32)], info())
        loss.backward()
        assert math.isfinite(loss.item()) and set(logs) == {"pretext_acc", "chance"}
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())
        assert m.encoder() is backbone


def test_jigsaw_known_permutation_decodes_back():
    torch.manual_seed(0)
    m = build("jigsaw", n_permutations=20, normalize_tiles="false")
    assert m.perm_set.shape == (20, 9)
    tiles = torch.arange(9.0).view(1, 9, 1, 1, 1).expand(5, 9, 3, 2, 2)
    labels = torch.tensor([0, 3, 7, 19, 11])
    shuffled = shuffle_tiles(tiles, m.perm_set[labels])
    for b in range(5):
        perm = shuffled[b, :, 0, 0, 0].long()                  # which tile sits at each position
        assert permutation_index(m.perm_set, perm) == labels[b]
        assert torch.equal(shuffled[b][perm.argsort()], tiles[b])            # unshuffles
    # through the real puzzle maker: tiles stay inside their cells, so they decode too
    puzzle, labels = m.make_puzzle(cell_image(m, batch=6))
    assert puzzle.shape == (6, 9, 3, m.layout.tile, m.layout.tile)
    for b in range(6):
        assert bool((puzzle[b] == puzzle[b, :, :1, :1, :1]).all())          # one cell per tile
        assert permutation_index(m.perm_set, puzzle[b, :, 0, 0, 0].long()) == labels[b]


def test_relativeloc_known_neighbour_decodes_back():
    torch.manual_seed(0)
    m = build("relativeloc", normalize_tiles="false")
    pairs, labels = m.make_pairs(cell_image(m, batch=200))
    assert pairs.shape == (200, 2, 3, m.layout.tile, m.layout.tile)
    assert set(labels.tolist()) == set(range(8))
    assert bool((pairs[:, 0] == 4).all())                                    # centre first
    cells = pairs[:, 1, 0, 0, 0].long()
    assert bool((pairs[:, 1] == cells.view(-1, 1, 1, 1)).all())
    for cell, label in zip(cells.tolist(), labels.tolist()):
        assert (cell // 3 - 1, cell % 3 - 1) == NEIGHBOUR_OFFSETS[label]


def test_defaults_views_and_health():
    j, r = build("jigsaw"), build("relativeloc")
    assert j.cfg.n_permutations == 100 and r.layout.tile < r.layout.cell
    assert torch.equal(j.perm_set, build("jigsaw").perm_set)                # deterministic set
    for m in (j, r):
        (spec,) = m.view_specs()
        assert spec.size == 32 and spec.is_global
        assert m.default_optim["optimizer"] == "adamw"
    assert pretext_health({"pretext_acc": 0.2, "chance": 0.125}) == []
    assert "chance" in pretext_health({"pretext_acc": 0.13, "chance": 0.125})[0]
    assert r.health({}) == []
