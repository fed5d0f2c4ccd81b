"""iBOT (Zhou et al. 2022): the step is DINO's [CLS] loss plus the masked-patch loss, the
student sees masked global views and the teacher whole ones, shared or separate patch head,
two centers, the patch temperature schedule; KoLeo as an option of DINO and iBOT. (The
registered-method sweep in test_peer_methods.py trains iBOT through the loop; test_mae.py
evaluates its encoder with `nolabel eval knn` / `eval attention`.)"""
from __future__ import annotations

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.config import apply_overrides, new_config
from nolabel.heads import DINOHead
from nolabel.losses.dino import dino_loss, masked_patch_loss, updated_center
from nolabel.losses.koleo import koleo_loss
from nolabel.methods import RunShape, StepInfo, get_method

SMALL_HEAD = ["out_dim=32", "hidden_dim=32", "bottleneck_dim=16", "n_local_views=2"]


def tiny_vit():
    return build_backbone("vit_tiny", image_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)


def build(name="ibot", seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = new_config(name)
    apply_overrides(cfg, [f"--{name}.{o}" for o in SMALL_HEAD] + [f"--{name}.{k}={v}" for k, v in overrides.items()])
    return get_method(name)(cfg.method_config, tiny_vit(), RunShape(image_size=32, epochs=2, n_images=64))


def views(batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 32, 32, generator=g), torch.randn(batch, 3, 32, 32, generator=g),
            torch.randn(batch, 3, 16, 16, generator=g), torch.randn(batch, 3, 16, 16, generator=g)]


def info(step=0):
    return StepInfo(step, 0, 10, 5, {"teacher_momentum": 0.996, "teacher_temp": 0.05, "teacher_patch_temp": 0.06})


@pytest.mark.parametrize("shared", [True, False])
def test_step_is_cls_distillation_plus_masked_patch_distillation(shared):
    m = build(shared_head=shared, patch_out_dim=32 if shared else 24, patch_loss_weight=0.7, mask_prob=1.0)
    m.center.normal_()
    m.patch_center.normal_()
    center, patch_center = m.center.clone(), m.patch_center.clone()
    v = views()
    torch.manual_seed(7)
    loss, logs = m.training_step(v, info())
    torch.manual_seed(7)
    masks = m.sample_masks(2, 4, v[0])                                  # the step's draw
    assert masks.shape == (2, 4, 16) and masks.any(dim=-1).all()      # mask_prob 1: every image masked
    with torch.no_grad():
        _, teacher_cls, teacher_tokens = m.teacher(v[:2], 2)
        teacher_patch = m.teacher.patch_logits(teacher_tokens)         # (2, 4, 16, K_p)
        _, student_cls, student_tokens = m.student(v, 2, masks)
        student_patch = m.student.patch_logits(student_tokens)[masks]
    assert teacher_patch.shape == (2, 4, 16, 32 if shared else 24)
    cls_loss = dino_loss(student_cls, teacher_cls, center, 0.05, 0.1)
    patch_loss = masked_patch_loss(student_patch, teacher_patch, masks, patch_center, 0.06, 0.1)
    assert float(loss.detach()) == pytest.approx(float(cls_loss + 0.7 * patch_loss), rel=1e-5)
    assert logs["patch_loss"] == pytest.approx(float(patch_loss), rel=1e-5)
    assert logs["cls_loss"] == pytest.approx(float(cls_loss), rel=1e-5)
    assert logs["masked"] == pytest.approx(float(masks.float().mean()))
    # both centers moved, each with its own outputs
    torch.testing.assert_close(m.center, updated_center(center, teacher_cls, 0.9))
    torch.testing.assert_close(m.patch_center, updated_center(patch_center, teacher_patch, 0.9))


@torch.no_grad()
def test_student_sees_masked_global_views_and_the_teacher_whole_ones():
    m = build()
    m.student.mask_token.normal_()
    v = views(batch=2)
    masks = torch.zeros(2, 2, 16, dtype=torch.bool)
    masks[0, 0, [0, 1, 4, 5]] = True                                   # top-left 2 x 2 patches of view 0, image 0
    changed = [x.clone() for x in v]
    changed[0][0, :, :16, :16] = torch.randn(3, 16, 16) * 3           # the pixels under that block
    student = m.student(v, 2, masks)
    for a, b in zip(student, m.student(changed, 2, masks)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)           # the student never sees them
    unmasked = m.student(changed, 2, None)
    assert not torch.allclose(unmasked[2][0, 0], student[2][0, 0], atol=1e-4)
    teacher, teacher_changed = m.teacher(v[:2], 2), m.teacher(changed[:2], 2)
    assert not torch.allclose(teacher[2][0, 0], teacher_changed[2][0, 0], atol=1e-4)   # the teacher does
    # the teacher's pass is the plain ViT's
    plain = m.teacher.backbone.forward_tokens(torch.cat(v[:2]))[:, 1:]
    torch.testing.assert_close(teacher[2].reshape(4, 16, 32), plain)


def test_heads_shared_or_separate():
    shared = build()
    assert shared.student.patch_head is None and shared.cfg.patch_out_dim == 32
    tokens = torch.randn(3, 5, 32)
    want = shared.student.head(tokens.reshape(15, 32)).reshape(3, 5, 32)
    torch.testing.assert_close(shared.student.patch_logits(tokens), want)
    separate = build(shared_head=False, patch_out_dim=24)
    assert isinstance(separate.student.patch_head, DINOHead) and separate.patch_center.shape == (24,)
    frozen = separate.frozen_parameters(StepInfo(0, 0, 10, 5))
    last = [separate.student.head.last_layer.direction, separate.student.patch_head.last_layer.direction]
    assert len(frozen) == 2 and all(any(p is q for q in frozen) for p in last)
    assert separate.frozen_parameters(StepInfo(5, 1, 10, 5)) == []
    with pytest.raises(ValueError, match="shared head"):
        build(patch_out_dim=24)


def test_encoder_is_the_teachers_plain_vit():
    m = build()
    encoder = m.encoder()
    assert encoder is m.teacher.backbone and "mask_token" not in dict(encoder.named_parameters())
    assert encoder.spec == tiny_vit().spec
    assert not m.teacher.mask_token.requires_grad and m.student.mask_token.requires_grad


def test_schedules_and_defaults():
    m = build()
    sched = m.schedules(total_steps=100, steps_per_epoch=10)
    warmup = round(m.warmup_temp_epochs * 10)                        # 10% of 2 epochs: 2 steps
    assert sched["teacher_patch_temp"](0) == pytest.approx(0.04) and sched["teacher_patch_temp"](warmup) == 0.07
    assert sched["teacher_temp"](0) == pytest.approx(0.04) and sched["teacher_momentum"](0) == pytest.approx(0.996)
    cfg = new_config("ibot").method_config
    assert (cfg.n_local_views, cfg.mask_prob, cfg.mask_ratio_min, cfg.mask_ratio_max, cfg.shared_head) == \
        (10, 0.5, 0.1, 0.5, True)
    big = get_method("ibot")(cfg, build_backbone("vit_tiny", image_size=96, patch_size=16, depth=1, embed_dim=32,
                                                 num_heads=2), RunShape(96, 2, 64))
    assert big.out_dim == 8192 and cfg.patch_out_dim == 8192
    assert get_method("ibot").default_optim == get_method("dino").default_optim
    with pytest.raises(ValueError, match="needs a ViT"):
        get_method("ibot")(new_config("ibot").method_config, build_backbone("resnet18", image_size=32, width=0.125),
                           RunShape(32, 2, 64))


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_koleo_option_adds_its_weighted_term_and_is_off_by_default(name):
    v = views()
    base = build(name)
    torch.manual_seed(3)
    loss_off, logs_off = base.training_step(v, info())
    assert "koleo" not in logs_off
    on = build(name, koleo_weight=0.25)
    torch.manual_seed(3)
    loss_on, logs_on = on.training_step(v, info())
    # the regulariser of the student's backbone features of each global view (iBOT: the masked views)
    torch.manual_seed(3)
    if name == "ibot":
        masks = on.sample_masks(2, 4, v[0])
        feats = on.student(v, 2, masks)[0]
    else:
        feats = on.student(v)[0][:8]
    want = koleo_loss(feats.reshape(2, 4, -1))
    assert logs_on["koleo"] == pytest.approx(float(want.detach()), rel=1e-5)
    assert float((loss_on - loss_off).detach()) == pytest.approx(0.25 * float(logs_on["koleo"]), rel=1e-4)


def test_dino_loss_is_unchanged_by_the_option():
    """DINO with KoLeo off computes exactly its loss of before: Eq. 5.3 on its networks' outputs."""
    m = build("dino")
    v = views()
    with torch.no_grad():
        teacher_out = m.teacher(v[:2])[1]
        student_out = m.student(v)[1]
    want = dino_loss(student_out, teacher_out, m.center.clone(), 0.05, 0.1)
    loss, _ = m.training_step(v, info())
    assert torch.equal(loss.detach(), want)
