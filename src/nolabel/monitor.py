"""Collapse and health metrics computed during training.

DINO's two collapse modes (thesis 5.6.3, Eq. 5.5, Fig. 5.8): the KL between teacher
and student goes to 0 while the teacher entropy goes to 0 (one dimension dominates,
no centering) or to log K (uniform output, no sharpening). A representation that
collapsed to a point also shows as a vanishing spread of l2-normalised embeddings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KL_COLLAPSED = 1e-3          # nats: the student reproduces the teacher exactly
ENTROPY_LOW = 0.05           # fraction of log K
ENTROPY_HIGH = 0.95          # fraction of log K
EMB_STD_LOW = 0.05           # fraction of the healthy value 1/sqrt(D)


def embedding_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the batch standard deviation of l2-normalised features.
    features (B, D). About 1/sqrt(D) when embeddings spread over the sphere, 0 when
    every image maps to the same point."""
    if features.shape[0] < 2:
        return float("nan")
    return float(F.normalize(features, dim=1).std(dim=0).mean())


def dino_collapse_warnings(entropy: float | None, kl: float | None, log_k: float) -> list[str]:
    if entropy is None or kl is None or not math.isfinite(entropy) or not math.isfinite(kl):
        return []
    if kl > KL_COLLAPSED:
        return []
    if entropy < ENTROPY_LOW * log_k:
        return [f"collapse: teacher-student KL {kl:.2e} ~ 0 and teacher entropy {entropy:.3f} ~ 0: one output "
                "dimension dominates (is centering on? is the center momentum below 0.999?)"]
    if entropy > ENTROPY_HIGH * log_k:
        return [f"collapse: teacher-student KL {kl:.2e} ~ 0 and teacher entropy {entropy:.3f} ~ log K = "
                f"{log_k:.3f}: uniform output (is the teacher temperature low enough? 0.04-0.07)"]
    return [f"possible collapse: teacher-student KL {kl:.2e} ~ 0"]


def embedding_collapse_warning(emb_std: float | None, dim: int) -> str | None:
    if emb_std is None or not math.isfinite(emb_std):
        return None
    healthy = 1.0 / math.sqrt(dim)
    if emb_std < EMB_STD_LOW * healthy:
        return (f"collapse: l2-normalised embeddings have std {emb_std:.2e}, far below the {healthy:.2e} "
                "of features spread over the sphere: every image maps to nearly the same point")
    return None
