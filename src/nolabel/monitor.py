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
KL_SMALL = 0.02              # KL below this fraction of the teacher entropy: the student has (almost)
                             # nothing left to learn from the teacher (learning DINO runs measured here:
                             # KL 0.5-1.1 nats at entropies of 6.6-7.1, fractions 0.07-0.16)
# Fig. 5.8 of the thesis: a collapsed teacher's entropy sits at 0 (one dimension dominates) or at
# log K (uniform output), with the KL at 0. The bounds below are this project's choice, set from
# the curves of runs that learned (the DINO runs of BENCHMARKS.md: 0.25-0.88 of log K).
ENTROPY_LOW = 0.05           # fraction of log K
ENTROPY_HIGH = 0.95          # fraction of log K
ENTROPY_PLATEAU = 0.97       # fraction of log K: the uniform plateau (the demo's 6.922 of 6.931, KL 0.010)
EMB_STD_LOW = 0.05           # fraction of the healthy value 1/sqrt(D) (SimSiam, Chen and He 2021, Fig. 2:
                             # ~1/sqrt(D) when healthy, 0 when collapsed); 5% is this project's margin
LOSS_AT_LOG_K = 1e-3         # SwAV: |loss - log K| below this fraction of log K (uniform predictions)
CODE_USAGE_LOW = 0.1         # SwAV: normalised entropy of the codes' argmax histogram


def embedding_std(features: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the batch standard deviation of l2-normalised features.
    features (B, D). About 1/sqrt(D) when embeddings spread over the sphere, 0 when
    every image maps to the same point. A 0-dim float32 tensor on the features' device
    (nan for fewer than 2 rows): the training loop reads logs every ``run.log_every``
    steps, not at every step."""
    if features.shape[0] < 2:
        return torch.full((), math.nan, device=features.device)
    return F.normalize(features.detach().float(), dim=1).std(dim=0).mean()


def dino_collapse_warnings(entropy: float | None, kl: float | None, log_k: float) -> list[str]:
    """The two collapses of thesis Fig. 5.8 read from one epoch's mean teacher entropy and
    teacher-student KL: uniform output (entropy near log K) or one dominant dimension
    (entropy near 0), each with a KL that is ~0 or small next to the entropy; and a KL
    ~0 at any entropy. The uniform plateau of short CPU runs (entropy 6.922 of 6.931,
    KL 0.010 on the demo) sits above the absolute KL bound, hence the relative one."""
    if entropy is None or kl is None or not math.isfinite(entropy) or not math.isfinite(kl):
        return []
    small_kl = kl <= max(KL_COLLAPSED, KL_SMALL * entropy)
    if entropy < ENTROPY_LOW * log_k and small_kl:
        return [f"collapse: teacher-student KL {kl:.2e} ~ 0 and teacher entropy {entropy:.3f} ~ 0: one output "
                "dimension dominates (thesis Fig. 5.8; is centering on? is the center momentum below 0.999?)"]
    if (entropy > ENTROPY_PLATEAU * log_k and small_kl) or (entropy > ENTROPY_HIGH * log_k and kl <= KL_COLLAPSED):
        return [f"collapse: teacher-student KL {kl:.2e} ~ 0 and teacher entropy {entropy:.3f} ~ log K = "
                f"{log_k:.3f}: uniform output (thesis Fig. 5.8; is the teacher temperature low enough? 0.04-0.07; "
                "a short run may sit on this plateau before it learns: watch the k-NN curve)"]
    if kl <= KL_COLLAPSED:
        return [f"possible collapse: teacher-student KL {kl:.2e} ~ 0"]
    return []


def embedding_collapse_warning(emb_std: float | None, dim: int) -> str | None:
    if emb_std is None or not math.isfinite(emb_std):
        return None
    healthy = 1.0 / math.sqrt(dim)
    if emb_std < EMB_STD_LOW * healthy:
        return (f"collapse: l2-normalised embeddings have std {emb_std:.2e}, far below the {healthy:.2e} "
                "of features spread over the sphere: every image maps to nearly the same point")
    return None


def code_usage(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How a batch spreads over prototypes (SwAV, SeLa: thesis 4.2.2). codes: (..., K)
    soft assignments (or scores: only the argmax counts). Returns the number of distinct
    argmax prototypes and the entropy of their histogram divided by its largest possible
    value ``log(min(K, rows))``: 1 when every row picks its own prototype (or rows spread
    evenly over all K), 0 when all rows pick the same one (nan for a single row). Both
    are 0-dim tensors on the codes' device (no host synchronisation)."""
    picks = codes.reshape(-1, codes.shape[-1]).argmax(dim=1)
    counts = torch.bincount(picks, minlength=codes.shape[-1]).float()
    p = counts / picks.numel()
    most = math.log(min(codes.shape[-1], picks.numel()))
    entropy = -torch.special.xlogy(p, p).sum()                     # 0 log 0 = 0
    return (counts > 0).sum().float(), entropy / most if most > 0 else torch.full_like(entropy, math.nan)


def swav_collapse_warnings(loss: float | None, log_k: float, usage_entropy: float | None) -> list[str]:
    """Collapse signs of prototype methods (SwAV, SeLa-v2) from epoch means: the loss at
    log K (the cross-entropy of any target against a uniform prediction: the features no
    longer tell images apart) and code usage concentrated on a few prototypes
    (``usage_entropy`` from :func:`code_usage`)."""
    warnings = []
    if loss is not None and math.isfinite(loss) and abs(loss - log_k) < LOSS_AT_LOG_K * log_k:
        warnings.append(f"collapse: loss {loss:.4f} ~ log K = {log_k:.4f}: codes and predictions are uniform, "
                        "the features no longer tell images apart (SwAV: is sinkhorn_eps small enough? 0.05)")
    if usage_entropy is not None and math.isfinite(usage_entropy) and usage_entropy < CODE_USAGE_LOW:
        warnings.append(f"collapse: code usage entropy {usage_entropy:.3f} of its maximum: the batch's codes "
                        "fall on a few prototypes (are features l2-normalised? is the queue too stale?)")
    return warnings


def pretext_health(epoch_means: dict[str, float], factor: float = 1.5) -> list[str]:
    """Warn when the epoch's pretext accuracy is no better than ``factor`` x chance."""
    acc, chance = epoch_means.get("pretext_acc"), epoch_means.get("chance")
    if acc is None or chance is None or acc > factor * chance:
        return []
    return [f"pretext accuracy {acc:.3f} is near chance ({chance:.3f}): the task is not being learned yet"]
