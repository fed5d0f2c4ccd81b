import numpy as np
import pytest
import torch

from nolabel.ops.pca import fit_pca_whitening


def correlated(n=2000, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(1, -1, d, dtype=torch.float64)                 # variances over 4 decades
    mixing = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    return ((torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ mixing + 3.0).float()


def test_whitened_output_has_identity_covariance_before_l2():
    x = correlated()
    pca = fit_pca_whitening(x, dim=8, eps=0.0)
    out = pca.apply(x, normalize=False).double()                          # (N, 8)
    assert out.shape == (2000, 8)
    assert torch.allclose(out.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(torch.cov(out.T), torch.eye(8, dtype=torch.float64), atol=1e-3)


def test_apply_l2_normalises_rows_and_keeps_top_directions():
    x = correlated()
    pca = fit_pca_whitening(x, dim=5)
    out = pca.apply(x)
    assert out.shape == (2000, 5) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(2000), atol=1e-5)
    want = np.sort(np.linalg.eigvalsh(np.cov(x.double().numpy().T)))[::-1][:5]
    assert np.allclose(pca.eigenvalues.numpy(), want, rtol=1e-4)
    assert (pca.eigenvalues[:-1] >= pca.eigenvalues[1:]).all()


def test_eps_shrinks_each_direction_relative_to_the_largest():
    x = correlated()
    eps = 1e-2
    pca = fit_pca_whitening(x, dim=12, eps=eps)
    variances = torch.cov(pca.apply(x, normalize=False).double().T).diagonal()
    lam = pca.eigenvalues.double()
    assert torch.allclose(variances, lam / (lam + eps * lam[0]), atol=1e-3)


def test_output_is_invariant_to_feature_scale_and_accepts_numpy():
    x = correlated(n=500)
    a = fit_pca_whitening(x, dim=6).apply(x)
    b = fit_pca_whitening((x * 1000).numpy(), dim=6).apply((x * 1000).numpy())
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("n,d,dim,out_dim", [(100, 12, 256, 12), (5, 12, 256, 4), (100, 12, 3, 3), (2, 3, 8, 1)])
def test_out_dim_is_min_of_dim_features_and_samples_minus_one(n, d, dim, out_dim):
    x = correlated(n=n, d=d)
    pca = fit_pca_whitening(x, dim=dim)
    assert pca.out_dim == out_dim and pca.in_dim == d
    assert pca.apply(x).shape == (n, out_dim)


def test_fit_is_deterministic():
    x = correlated(n=300)
    a, b = fit_pca_whitening(x, dim=4), fit_pca_whitening(x.clone(), dim=4)
    assert torch.equal(a.projection, b.projection)


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        fit_pca_whitening(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_pca_whitening(torch.zeros(10))
    with pytest.raises(ValueError, match="dim must be"):
        fit_pca_whitening(torch.randn(10, 3), dim=0)
    with pytest.raises(ValueError, match="zero variance"):
        fit_pca_whitening(torch.ones(10, 3), dim=2)
    with pytest.raises(ValueError, match="NaN"):
        fit_pca_whitening(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    pca = fit_pca_whitening(torch.randn(10, 3), dim=2)
    with pytest.raises(ValueError, match="fitted on 3-D"):
        pca.apply(torch.randn(4, 5))
