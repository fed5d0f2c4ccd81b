import pytest
import torch
from torch import nn

from nolabel.heads import DINOHead, WeightNormLinear, mlp


def test_mlp_structure():
    m = mlp(8, 16, 4, n_layers=3, norm="bn", act="gelu")
    linears = [l for l in m if isinstance(l, nn.Linear)]
    assert [l.out_features for l in linears] == [16, 16, 4]
    assert sum(isinstance(l, nn.BatchNorm1d) for l in m) == 2
    assert m(torch.randn(5, 8)).shape == (5, 4)
    assert len(mlp(8, 16, 4, n_layers=1)) == 1


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        mlp(2, 2, 2, act="tanh")
    with pytest.raises(ValueError, match="n_layers"):
        mlp(2, 2, 2, n_layers=0)


def test_weight_norm_linear_gives_cosine_when_scale_fixed():
    layer = WeightNormLinear(6, 3)
    x = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    want = x @ torch.nn.functional.normalize(layer.direction, dim=1).T
    assert torch.allclose(layer(x), want, atol=1e-6)
    assert layer(x).abs().max() <= 1 + 1e-6
    assert layer.scale is None and len(list(layer.parameters())) == 1


def test_dino_head_shapes_and_bottleneck():
    head = DINOHead(32, out_dim=100, hidden_dim=64, bottleneck_dim=16)
    assert head(torch.randn(3, 32)).shape == (3, 100)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert len([m for m in head.mlp if isinstance(m, nn.Linear)]) == 3
    assert DINOHead(32, 10, 64, 16, use_bn=True)(torch.randn(4, 32)).shape == (4, 10)


def test_dino_head_is_cosine_of_the_l2_bottleneck_and_the_normalised_prototypes():
    """Thesis 5.3.1: logits = <z / |z|, w_k / |w_k|> with z the MLP's bottleneck output. Written
    from the formula; scaling the bottleneck layer leaves the logits unchanged (drop the l2
    normalisation and both checks fail)."""
    torch.manual_seed(0)
    head = DINOHead(32, out_dim=50, hidden_dim=64, bottleneck_dim=16).eval()
    x = torch.randn(5, 32)
    z = head.mlp(x)
    w = head.last_layer.direction
    want = torch.stack([torch.stack([z[i] @ w[k] / (z[i].norm() * w[k].norm()) for k in range(w.shape[0])])
                        for i in range(z.shape[0])])
    got = head(x)
    assert torch.allclose(got, want, atol=1e-5)
    last = [m for m in head.mlp if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(7.0)
        last.bias.mul_(7.0)
    assert torch.allclose(head(x), got, atol=1e-5)
