"""MAE (He et al. 2022): the step is the masked MSE of the decoder's reconstruction, the
encoder never sees the hidden patches, the paper's optimiser (AdamW betas (0.9, 0.95)) and
views, small-image defaults; and `nolabel eval knn` / `eval attention` on the encoders of a
tiny MAE and iBOT run. (The registered-method sweep in test_peer_methods.py trains both
through the loop.)"""
from __future__ import annotations

import json

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.backbones.pos_embed import sincos_2d
from nolabel.cli import main
from nolabel.config import apply_overrides, new_config
from nolabel.losses.reconstruction import masked_mse, patchify
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.ops.masking import random_masking
from nolabel.optim import build_optimizer
from nolabel.views import MultiCrop
from tests.train.conftest import TINY


def tiny_vit(image_size=32, patch_size=8):
    return build_backbone("vit_tiny", image_size=image_size, patch_size=patch_size, depth=1, embed_dim=32, num_heads=2)


def build(image_size=32, backbone=None, **overrides):
    cfg = new_config("mae")
    apply_overrides(cfg, ["--mae.decoder_dim=32", "--mae.decoder_depth=1"] +
                    [f"--mae.{k}={v}" for k, v in overrides.items()])
    return get_method("mae")(cfg.method_config, backbone or tiny_vit(image_size), RunShape(image_size, 2, 64))


INFO = StepInfo(step=0, epoch=0, total_steps=10, steps_per_epoch=5)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_step_is_the_masked_mse_of_the_reconstruction(norm_pix):
    torch.manual_seed(0)
    m = build(norm_pix_loss=norm_pix)
    x = torch.randn(4, 3, 32, 32) * 3 + 2
    torch.manual_seed(5)
    loss, _ = m.training_step([x], INFO)
    torch.manual_seed(5)
    keep, mask = random_masking(4, 16, 0.75)                         # the step's draw: 12 of 16 hidden
    pred = m.reconstruct(x, keep)
    assert pred.shape == (4, 16, 3 * 8 * 8)
    want = masked_mse(pred, patchify(x, 8), mask, norm_pix=norm_pix)
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    other = masked_mse(pred, patchify(x, 8), mask, norm_pix=not norm_pix)
    assert float(loss.detach()) != pytest.approx(float(other.detach()), rel=0.1)    # the option matters


@torch.no_grad()
def test_the_encoder_never_sees_hidden_patches():
    """Predictions (of hidden patches too) depend only on the visible patches: hidden pixels
    cannot leak into the loss through the encoder or the decoder."""
    torch.manual_seed(0)
    m = build().eval()
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    pred = m.reconstruct(x, keep)
    changed = x.clone()
    for b in range(2):
        for i in set(range(16)) - set(keep[b].tolist()):
            r, c = divmod(i, 4)
            changed[b, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = torch.randn(3, 8, 8) * 3
    torch.testing.assert_close(m.reconstruct(changed, keep), pred, rtol=0, atol=1e-5)
    changed[1, :, 0:8, 8:16] += 1.0                                  # patch 1: visible in image 1
    assert not torch.allclose(m.reconstruct(changed, keep)[1], pred[1], atol=1e-4)


def test_gradients_reach_encoder_and_decoder_but_not_the_fixed_positions():
    torch.manual_seed(0)
    m = build()
    loss, _ = m.training_step([torch.randn(4, 3, 32, 32)], INFO)
    loss.backward()
    assert m.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.backbone.cls_token.grad.abs().sum() > 0
    assert m.decoder.mask_token.grad.abs().sum() > 0 and m.decoder.pred.weight.grad.abs().sum() > 0
    assert m.backbone.pos_embed.grad is None and not m.backbone.pos_embed.requires_grad
    want = torch.cat([torch.zeros(1, 32), sincos_2d((4, 4), 32)])[None]
    assert torch.equal(m.backbone.pos_embed.detach(), want)
    torch.manual_seed(0)
    learned = build(sincos_pos_embed=False)
    torch.manual_seed(0)
    assert learned.backbone.pos_embed.requires_grad and torch.equal(learned.backbone.pos_embed, tiny_vit().pos_embed)


def test_adamw_betas_are_the_papers_and_other_methods_keep_torchs():
    mae = build()
    group = build_optimizer("adamw", mae, lr=1e-3, weight_decay=0.05).param_groups[0]
    assert group["betas"] == (0.9, 0.95)
    dino_cfg = apply_overrides(new_config("dino"), [o for o in TINY if o.startswith("--dino.")])
    dino = get_method("dino")(dino_cfg.method_config, tiny_vit(), RunShape(32, 2, 64))
    assert build_optimizer("adamw", dino, lr=1e-3, weight_decay=0.04).param_groups[0]["betas"] == (0.9, 0.999)
    assert build_optimizer("adamw", torch.nn.Linear(2, 2), lr=1e-3, weight_decay=0.0).param_groups[0]["betas"] \
        == (0.9, 0.999)
    assert build_optimizer("adamw", mae, lr=1e-3, weight_decay=0.0, betas=(0.8, 0.9)).param_groups[0]["betas"] \
        == (0.8, 0.9)
    # the paper's schedule values (A.1, Table 8)
    optim = get_method("mae").default_optim
    assert (optim["optimizer"], optim["lr"], optim["weight_decay"], optim["weight_decay_end"]) == \
        ("adamw", 1.5e-4, 0.05, 0.05)


def test_views_are_one_crop_and_flip_without_colour():
    (spec,) = build().view_specs()
    assert spec.size == 32 and spec.scale == (0.2, 1.0) and spec.flip == 0.5
    assert (spec.jitter, spec.grayscale, spec.blur, spec.solarize) == (0.0, 0.0, 0.0, 0.0)
    views = MultiCrop([spec])(torch.full((2, 3, 32, 32), 128, dtype=torch.uint8))
    assert len(views) == 1 and torch.allclose(views[0][:, 0], views[0][0, 0, 0, 0])   # a grey image stays grey


def test_decoder_defaults_follow_the_image_size_and_are_saved():
    cfg = new_config("mae").method_config
    small = get_method("mae")(cfg, tiny_vit(32, 4), RunShape(32, 2, 64))
    assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads) == (128, 4, 4)
    assert len(small.decoder.blocks) == 4 and small.decoder.blocks[0].attn.num_heads == 4
    assert small.n_patches == 64                                     # 32 px, patch 4: an 8 x 8 grid
    cfg = new_config("mae").method_config
    get_method("mae")(cfg, tiny_vit(96, 16), RunShape(96, 2, 64))
    assert (cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads) == (512, 8, 16)


def test_errors_name_the_option():
    with pytest.raises(ValueError, match="needs a ViT"):
        build(backbone=build_backbone("resnet18", image_size=32, width=0.125))
    with pytest.raises(ValueError, match="mask_ratio"):
        build(mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_num_heads"):
        build(decoder_num_heads=3)


@pytest.mark.parametrize("name", ["mae", "ibot"])
def test_eval_knn_and_attention_on_the_trained_encoder(name, tmp_path, capsys):
    general = [o for o in TINY if not o.startswith("--dino.")]
    sizes = {"mae": ["--mae.decoder_dim=32", "--mae.decoder_depth=1"],
             "ibot": ["--ibot.out_dim=32", "--ibot.hidden_dim=32", "--ibot.bottleneck_dim=16",
                      "--ibot.n_local_views=2"]}
    run = tmp_path / "run"
    assert main(["train", "--method", name, "--out", str(run), *general, "--run.epochs=1", "--eval.every=0",
                 *sizes[name]]) == 0
    assert json.loads((run / "encoder.json").read_text())["name"] == "vit_tiny"
    assert main(["eval", "knn", str(run), "--train", "demo?n=64", "--test", "demo:test?n=32",
                 "--json", str(tmp_path / "knn.json")]) == 0
    assert json.loads((tmp_path / "knn.json").read_text())["n_test"] == 32
    assert main(["eval", "attention", str(run), "--test", "demo:test?n=8", "--out", str(tmp_path / "eval"),
                 "--show", "2"]) == 0
    result = json.loads((tmp_path / "eval" / "attention.json").read_text())
    assert result["heads"] == 2 and result["n_images"] == 8 and len(result["per_head"]) == 2
    assert (tmp_path / "eval" / "attention.png").stat().st_size > 0
    capsys.readouterr()
