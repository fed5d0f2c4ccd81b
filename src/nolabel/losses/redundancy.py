"""Redundancy-reduction losses on the batch statistics of two views' embeddings.

- :func:`barlow_twins_loss`: Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins:
  Self-Supervised Learning via Redundancy Reduction", ICML 2021 (Eqs. 1-2).
- :func:`vicreg_loss`: Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance
  Regularization for Self-Supervised Learning", ICLR 2022 (Eqs. 1-6, Algorithm 1).

Both depend on statistics over the batch, so under a process group every process
gathers the whole batch with gradient (:func:`nolabel.ops.dist.all_gather_with_grad`)
and computes the same loss as one process over the global batch. The input gradient
on each process is then ``world_size`` times the single-process gradient of its rows,
which DDP's averaging turns into exactly the single-process parameter gradients.
Computed in float32 whatever the input precision (float16/bfloat16 are upcast;
float64 stays float64).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.dist import all_gather_with_grad
from nolabel.ops.precision import float32_region


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 -> float32; float32 and float64 unchanged (float64 keeps gradcheck exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _gather_pair(name: str, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check two (N, D) views and gather both over processes in one collective.
    Returns two (N_global, D) tensors, at least float32; raises if N_global < 2."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"{name} expects two (N, D) tensors of the same shape, "
                         f"got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[1] == 0:
        raise ValueError(f"{name} needs D >= 1, got {tuple(z1.shape)}")
    dim = z1.shape[1]
    both = all_gather_with_grad(_upcast(torch.cat([z1, z2], dim=1)))     # (N_global, 2D)
    if both.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples in the (global) batch to compute "
                         f"batch statistics, got {both.shape[0]}")
    return both[:, :dim], both[:, dim:]


def _off_diagonal_square_sum(m: torch.Tensor) -> torch.Tensor:
    """``sum_{i != j} m_ij^2`` of a square (D, D) matrix."""
    return m.pow(2).sum() - torch.diagonal(m).pow(2).sum()


@float32_region
def barlow_twins_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sums of :func:`barlow_twins_loss`, ``(sum_i (1 - C_ii)^2, sum_{i != j} C_ij^2)``,
    from one cross-correlation (a method that logs both needs no second one)."""
    a, b = _gather_pair("barlow_twins_loss", z1, z2)                    # (N, D) each, global
    n = a.shape[0]
    a = (a - a.mean(dim=0)) / torch.sqrt(a.var(dim=0, unbiased=False) + eps)
    b = (b - b.mean(dim=0)) / torch.sqrt(b.var(dim=0, unbiased=False) + eps)
    c = a.T @ b / n                                                      # (D, D) cross-correlation
    return (1.0 - torch.diagonal(c)).pow(2).sum(), _off_diagonal_square_sum(c)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3,
                      eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins: drive the cross-correlation of the two views' embeddings to identity.

    ``L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2`` (Eq. 1), with
    ``C_ij = sum_b za_bi zb_bj / (sqrt(sum_b za_bi^2) sqrt(sum_b zb_bj^2))`` over the
    embeddings centred along the batch (Eq. 2): each dimension is standardised with the
    batch mean and the (biased) batch std, ``sqrt(var + eps)``, and ``C = za^T zb / N``.

    z1, z2: (N, D) projector outputs of the two views, row b of both from image b.
    lambd: weight of the redundancy-reduction term, 5e-3 (the paper's "Implementation
    details", tuned for D = 8192). eps: added to the variance so a constant dimension
    gives C = 0 instead of NaN. Returns a scalar float32. Statistics are over the global
    batch (gathered across processes); it needs at least 2 samples.
    """
    invariance, redundancy = barlow_twins_terms(z1, z2, eps)
    return invariance + lambd * redundancy


def _variance_hinge(z: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """Eqs. 1-2: ``mean_j max(0, gamma - sqrt(Var(z_:j) + eps))``, unbiased variance."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance_penalty(z: torch.Tensor) -> torch.Tensor:
    """Eqs. 3-4: ``sum_{i != j} Cov(z)_ij^2 / D``, Cov with the 1 / (N - 1) normalisation."""
    n, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)                                  # (D, D)
    return _off_diagonal_square_sum(cov) / dim


@float32_region
def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0,
                var_weight: float = 25.0, cov_weight: float = 1.0, eps: float = 1e-4,
                gamma: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg: ``sim_weight * s + var_weight * (v(Z1) + v(Z2)) + cov_weight * (c(Z1) + c(Z2))`` (Eq. 6).

    - invariance ``s``: mean squared error over all N*D entries, ``mean_{b,j} (z1_bj - z2_bj)^2``
      as in the paper's Algorithm 1 (Eq. 5 writes ``(1/N) sum_b ||z1_b - z2_b||^2``, which
      is D times larger; the weights 25/25/1 go with Algorithm 1);
    - variance ``v``: hinge on the regularised std of every dimension,
      ``mean_j max(0, gamma - sqrt(Var_b(z_bj) + eps))`` (Eqs. 1-2, unbiased variance);
    - covariance ``c``: ``sum_{i != j} C(Z)_ij^2 / D``, C the (N-1)-normalised covariance
      (Eqs. 3-4).

    z1, z2: (N, D) expander outputs of the two views, row b of both from image b.
    Defaults lambda = mu = 25, nu = 1, eps = 1e-4, gamma = 1: the paper's ImageNet
    setting (Section 4 and Algorithm 1). Statistics are over the global batch (gathered across processes); it
    needs at least 2 samples.

    Returns ``(loss, terms)``: the scalar float32 loss and the unweighted terms
    ``{"invariance": s, "variance": v(Z1) + v(Z2), "covariance": c(Z1) + c(Z2)}`` as
    detached scalars for logging.
    """
    a, b = _gather_pair("vicreg_loss", z1, z2)                          # (N, D) each, global
    invariance = F.mse_loss(a, b)
    variance = _variance_hinge(a, gamma, eps) + _variance_hinge(b, gamma, eps)
    covariance = _covariance_penalty(a) + _covariance_penalty(b)
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    terms = {"invariance": invariance.detach(), "variance": variance.detach(),
             "covariance": covariance.detach()}
    return loss, terms
