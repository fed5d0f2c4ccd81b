"""PCA whitening before clustering (thesis section 3.2.1; DeeperCluster, section 3.3.1).

DeepCluster clusters features that are "PCA-reduced to 256 dimensions, whitened and
l2-normalized". :func:`fit_pca_whitening` estimates the mean and the whitening
projection once; :meth:`PCAWhitening.apply` maps any batch of features with them.

Output size rule: the sample covariance of N points in D dimensions has rank at most
``min(D, N - 1)``, so the output has ``out_dim = min(dim, D, N - 1)`` columns; asking
for more is not an error, the extra directions simply do not exist. ``out_dim`` is
stored on the result so callers can size their heads from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PCAWhitening", "fit_pca_whitening"]

_CHUNK = 65536  # rows per float64 chunk when accumulating the covariance


def _as_float_matrix(x, name: str = "x") -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.dim() != 2:
        raise ValueError(f"{name} must be a (N, D) matrix, got shape {tuple(x.shape)}")
    return x.detach().cpu()


@dataclass
class PCAWhitening:
    """A fitted whitening map ``x -> l2_normalize((x - mean) @ projection)``.

    mean: (D,) float32. projection: (D, out_dim) float32, the top principal directions
    (eigenvectors of the covariance, largest eigenvalue first) each divided by
    ``sqrt(eigenvalue + eps * largest_eigenvalue)``. eigenvalues: (out_dim,) float32,
    the covariance eigenvalues kept (covariance normalised by N - 1).
    """

    mean: torch.Tensor
    projection: torch.Tensor
    eigenvalues: torch.Tensor

    @property
    def in_dim(self) -> int:
        return self.projection.shape[0]

    @property
    def out_dim(self) -> int:
        return self.projection.shape[1]

    def apply(self, x, normalize: bool = True) -> torch.Tensor:
        """Whitened PCA of x (N, D) -> (N, out_dim) float32 on the CPU.

        With ``normalize`` (the thesis recipe) each output row is l2-normalised; with
        ``normalize=False`` the whitened coordinates are returned, whose covariance over
        the fitting data is the identity (up to ``eps``).
        """
        x = _as_float_matrix(x)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"PCAWhitening was fitted on {self.in_dim}-D features, got {x.shape[1]}-D")
        out = (x.float() - self.mean) @ self.projection                   # (N, out_dim)
        return F.normalize(out, dim=1) if normalize else out


@torch.no_grad()
def fit_pca_whitening(x, dim: int = 256, eps: float = 1e-5) -> PCAWhitening:
    """Fit PCA whitening on features x (N, D), float or double, tensor or array.

    dim: requested output size (thesis 3.2.1: 256); the output has
    ``min(dim, D, N - 1)`` columns (see the module docstring). eps: regulariser added
    to every kept eigenvalue before the inverse square root, as a fraction of the
    largest eigenvalue, so the map is invariant to rescaling the features and
    near-zero-variance directions are not blown up; ``eps=0`` whitens exactly.
    The covariance is accumulated in float64 over row chunks. Each eigenvector's sign
    is fixed (its largest-magnitude entry is positive) so the fit is deterministic.
    """
    x = _as_float_matrix(x)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    out_dim = min(dim, d, n - 1)
    total = torch.zeros(d, dtype=torch.float64)
    for chunk in x.split(_CHUNK):
        total += chunk.double().sum(0)
    mean = total / n                                                      # (D,)
    if not torch.isfinite(mean).all():
        raise ValueError("x contains NaN or infinite values")
    cov = torch.zeros(d, d, dtype=torch.float64)
    for chunk in x.split(_CHUNK):
        centred = chunk.double() - mean                                   # (n_chunk, D)
        cov += centred.T @ centred
    cov /= n - 1                                                          # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)                    # ascending
    eigenvalues = eigenvalues.flip(0)[:out_dim].clamp_min(0.0)            # (out_dim,)
    eigenvectors = eigenvectors.flip(1)[:, :out_dim]                      # (D, out_dim)
    top = eigenvectors.abs().argmax(0)                                    # (out_dim,)
    signs = torch.sign(eigenvectors[top, torch.arange(out_dim)])
    eigenvectors = eigenvectors * torch.where(signs == 0, 1.0, signs)
    floor = eps * float(eigenvalues[0])
    scale = (eigenvalues + floor).rsqrt()
    if not torch.isfinite(scale).all():
        raise ValueError("a kept PCA direction has zero variance (all samples identical, or eps=0 with "
                         "fewer independent directions than out_dim); use eps > 0 or a smaller dim")
    return PCAWhitening(mean=mean.float(), projection=(eigenvectors * scale).float(),
                        eigenvalues=eigenvalues.float())
