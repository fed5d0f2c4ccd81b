"""Protocols that look at images: fine-tuning, copy detection, attention maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nolabel.evaluate.attention import attention_protocol, cls_attention, jaccard_table, pixel_masks, summarize
from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.copydetect import copy_detection_scores, copydetect_protocol, distort, make_copies
from nolabel.evaluate.finetune import finetune_protocol, param_groups, vit_layer_id
from tests.evaluate.conftest import TEST, TRAIN


def test_finetune_runs_and_leaves_the_model_alone(resnet_ctx):
    before = {k: v.clone() for k, v in resnet_ctx.model.network.state_dict().items()}
    r = finetune_protocol(resnet_ctx, steps=3, batch_size=16)
    assert r["steps"] == 3 and r["n_train"] == 64 and r["epochs"] == 0.75 and 0 <= r["top1"] <= r["top5"] <= 100
    after = resnet_ctx.model.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_layer_decay_scales_by_depth(vit_ctx):
    from nolabel.runs import load_backbone

    vit = load_backbone(vit_ctx.model_spec)  # depth 1
    head = torch.nn.Linear(32, 10)
    assert [vit_layer_id(n, 1) for n in ("pos_embed", "patch_embed.weight", "blocks.0.attn.qkv.weight", "norm.bias")] \
        == [0, 0, 1, 2]
    groups = param_groups(vit, head, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert scale[id(vit.pos_embed)] == 0.25 and scale[id(vit.blocks[0].attn.qkv.weight)] == 0.5
    assert scale[id(vit.norm.weight)] == 1.0 and scale[id(head.weight)] == 1.0
    assert decay[id(vit.pos_embed)] == 0.0 and decay[id(vit.norm.weight)] == 0.0 and decay[id(head.weight)] == 0.05
    r = finetune_protocol(vit_ctx, steps=2, batch_size=8, layer_decay=0.65)
    assert r["layer_decay"] == 0.65


def test_finetune_errors(resnet_ctx, tmp_path):
    with pytest.raises(EvalError, match="--layer-decay applies to ViT"):
        finetune_protocol(resnet_ctx, steps=1, layer_decay=0.7)
    pixels = EvalContext("pixels", TRAIN, TEST, out=tmp_path, progress=False)
    with pytest.raises(EvalError, match="pixels has none"):
        finetune_protocol(pixels, steps=1)


def test_distortions_are_strong_and_seeded():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = distort(image, np.random.default_rng(1))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, distort(image, np.random.default_rng(1)))
    assert np.abs(a.astype(int) - image).mean() > 20
    copies, source = make_copies(torch.from_numpy(np.stack([image, image])).permute(0, 3, 1, 2), copies=3)
    assert copies.shape == (6, 3, 32, 32) and source.tolist() == [0, 0, 0, 1, 1, 1]


def test_copy_detection_scores_hand_made():
    db = torch.eye(4)
    queries = torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.0, 0.2, 1.0, 0.9]])
    # query 0 ranks its original (row 0) first: AP 1; query 1 ranks row 2 first, its original row 3 second
    r = copy_detection_scores(queries, db, torch.tensor([0, 3]))
    ap1 = (1 / 2 + 0 / 1) / 2  # trapezoid at rank 2: precision before (0/1) and at (1/2)
    assert r["map"] == pytest.approx((1 + ap1) / 2)
    white = copy_detection_scores(queries, db, torch.tensor([0, 2]), whiten_set=torch.randn(50, 4))
    assert 0 <= white["map_whitened"] <= 1 and white["whiten_dim"] == 4


def test_copydetect_protocol(vit_ctx):
    r = copydetect_protocol(vit_ctx, n_originals=6, copies=2, n_distractors=20, n_whiten=30)
    assert r["n_queries"] == 12 and r["n_originals"] == 6 and r["n_distractors"] == 20 and r["n_whiten"] == 30
    assert 0 <= r["map"] <= 1 and 0 <= r["map_whitened"] <= 1
    plain = copydetect_protocol(vit_ctx, n_originals=4, copies=1, whiten=False)
    assert "map_whitened" not in plain and plain["n_distractors"] == 64


def test_copydetect_on_one_set_keeps_originals_out_of_the_distractors(tiny_vit, tmp_path):
    ctx = EvalContext(tiny_vit, TEST, TEST, out=tmp_path, progress=False)
    r = copydetect_protocol(ctx, n_originals=4, copies=1, whiten=False)
    assert r["n_distractors"] == 32 - 4


def test_attention_pieces_by_hand():
    maps = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    maps[0, 0] = torch.tensor([[0.7, 0.1], [0.1, 0.1]])  # 60% of the mass: the top-left patch alone
    maps[0, 1] = torch.tensor([[0.25, 0.25], [0.25, 0.25]])  # ties: every patch
    masks = pixel_masks(maps, patch_size=2)
    assert masks.shape == (1, 2, 4, 4)
    assert masks[0, 0].sum() == 4 and masks[0, 0, :2, :2].all() and masks[0, 1].all()
    truth = torch.zeros(1, 4, 4, dtype=torch.bool)
    truth[0, :2, :] = True  # top half
    table = jaccard_table(masks, truth)
    assert table.tolist() == [[0.5, 0.5]]  # 4/8 and 8/16
    s = summarize(torch.tensor([[0.2, 0.6], [0.4, 0.3]]), torch.tensor([0.1, 0.2]))
    assert s["best_head_index"] == 1 and s["best_head"] == pytest.approx(0.45)
    assert s["oracle"] == pytest.approx(0.5) and s["head_mean"] == pytest.approx(0.15)


def test_attention_protocol_on_a_vit(vit_ctx):
    from nolabel.runs import load_backbone

    vit = load_backbone(vit_ctx.model_spec)
    maps = cls_attention(vit, torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 2, 4, 4) and torch.all(maps.sum((2, 3)) < 1)  # CLS->self takes the rest
    r = attention_protocol(vit_ctx, max_images=20, n_show=3)
    assert r["n_images"] == 20 and len(r["per_head"]) == 2 and 0 <= r["best_head"] <= 1
    assert r["best_head"] == max(r["per_head"]) and r["oracle"] >= r["best_head"]
    assert (vit_ctx.out / "attention.png").stat().st_size > 0


def test_attention_without_masks_and_on_a_resnet(vit_ctx, resnet_ctx, flat_folder, tmp_path):
    ctx = EvalContext(vit_ctx.model_spec, None, flat_folder, out=tmp_path, progress=False)
    r = attention_protocol(ctx, n_show=2)
    assert "best_head" not in r and "no object masks" in r["jaccard"]
    with pytest.raises(EvalError, match="resnet18.*give a ViT model"):
        attention_protocol(resnet_ctx)
