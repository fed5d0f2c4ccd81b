"""Under the loop's bf16 autocast, the losses and the heads' temperature-scaled logits are
computed in float32: the same numbers as without autocast from the same float32 inputs."""
import pytest
import torch
import torch.nn.functional as F

from nolabel.heads import DINOHead
from nolabel.losses.contrastive import info_nce, nt_xent
from nolabel.losses.dino import dino_loss, masked_patch_loss, teacher_probs
from nolabel.losses.hierarchical import hierarchical_loss
from nolabel.losses.koleo import koleo_loss
from nolabel.losses.reconstruction import masked_mse
from nolabel.losses.redundancy import barlow_twins_loss, vicreg_loss
from nolabel.losses.regression import negative_cosine, normalized_mse
from nolabel.losses.swav import swav_loss
from nolabel.ops.precision import autocast_off, float32_region
from nolabel.ops.sinkhorn import sinkhorn_knopp

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def test_autocast_off_computes_matmuls_in_float32():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with torch.autocast(**BF16):
        assert (a @ b).dtype == torch.bfloat16                 # what autocast does to a float32 matmul
        with autocast_off(a):
            assert (a @ b).dtype == torch.float32
        assert (a @ b).dtype == torch.bfloat16                 # restored on exit

    @float32_region
    def product(x, y):
        return x @ y

    with torch.autocast(**BF16):
        inside = product(a, b)
    assert inside.dtype == torch.float32 and torch.equal(inside, a @ b)


def test_float32_region_upcasts_its_inputs_itself():
    """A function that forgets ``.float()`` still computes in float32, for tensors passed
    alone, by keyword or in a list; gradients reach the bf16 inputs; other arguments pass."""
    a = torch.randn(8, 16).bfloat16().requires_grad_()
    b = torch.randn(16, 4).bfloat16()

    @float32_region
    def product(x, ys, scale=1.0, *, z):
        assert x.dtype == ys[0].dtype == z.dtype == torch.float32
        return (x @ ys[0]) * scale + z.sum()

    with torch.autocast(**BF16):
        out = product(a, [b], 2.0, z=b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (a.float() @ b.float()) * 2.0 + b.float().sum())
    out.sum().backward()
    assert a.grad is not None and a.grad.dtype == torch.bfloat16
    assert product.__name__ == "product"


def _inputs():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)                 # noqa: E731
    every_other = torch.zeros(2, 4, 6, dtype=torch.bool)
    every_other[..., ::2] = True                                # 24 masked patches
    return {
        "nt_xent": (nt_xent, (r(8, 16), r(8, 16), 0.1)),
        "info_nce": (info_nce, (r(8, 16), r(8, 16), r(20, 16), 0.2)),
        "dino_loss": (dino_loss, (r(4, 8, 32), r(2, 8, 32), r(32), 0.04, 0.1)),
        "teacher_probs": (teacher_probs, (r(2, 8, 32), r(32), 0.04)),
        "swav_loss": (swav_loss, (r(3, 8, 32), F.softmax(r(2, 8, 32), dim=-1), 0.1)),
        "barlow_twins": (barlow_twins_loss, (r(8, 16), r(8, 16))),
        "vicreg": (lambda a, b: vicreg_loss(a, b)[0], (r(8, 16), r(8, 16))),
        "negative_cosine": (negative_cosine, (r(8, 16), r(8, 16))),
        "normalized_mse": (normalized_mse, (r(8, 16), r(8, 16))),
        "hierarchical": (hierarchical_loss, (r(8, 12), r(12, 8, 5), torch.randint(0, 12, (8,), generator=g),
                                             torch.randint(0, 5, (8,), generator=g))),
        "sinkhorn": (sinkhorn_knopp, (torch.tanh(r(16, 8)),)),
        "masked_mse": (masked_mse, (r(4, 6, 12), r(4, 6, 12), r(4, 6) > 0)),
        "koleo": (koleo_loss, (r(2, 8, 16),)),
        "masked_patch_loss": (masked_patch_loss, (r(24, 32), r(2, 4, 6, 32), every_other, r(32), 0.04, 0.1)),
    }


@pytest.mark.parametrize("name", list(_inputs()))
def test_losses_are_float32_under_bf16_autocast(name):
    fn, args = _inputs()[name]
    want = fn(*args)
    with torch.autocast(**BF16):
        got = fn(*args)
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-7), name


def test_losses_upcast_bf16_logits_and_gradients_reach_them():
    logits = torch.randn(4, 8, 32).bfloat16().requires_grad_()
    teacher = torch.randn(2, 8, 32).bfloat16()
    with torch.autocast(**BF16):
        loss = dino_loss(logits, teacher, torch.zeros(32), 0.04)
    assert loss.dtype == torch.float32
    want = dino_loss(logits.detach().float(), teacher.float(), torch.zeros(32), 0.04)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_dino_head_logits_are_float32_cosines_under_autocast():
    torch.manual_seed(0)
    head = DINOHead(32, out_dim=64, hidden_dim=48, bottleneck_dim=16)
    x = torch.randn(8, 32)
    with torch.autocast(**BF16):
        out = head(x)
        hidden = F.normalize(head.mlp(x).float(), dim=-1)     # the bf16 MLP's output, as the head sees it
    assert out.dtype == torch.float32
    assert torch.allclose(out, head.last_layer(hidden), rtol=1e-6, atol=1e-7)
    assert out.abs().max() <= 1 + 1e-5                         # cosines
