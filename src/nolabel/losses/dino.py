"""DINO self-distillation loss (thesis section 5.3.1, Eqs. 5.1-5.5), and iBOT's masked-patch
form of it (Zhou et al. 2022, sec. 3.1).

Pure functions of tensors: temperatures and the center are arguments. The teacher's
distribution (:func:`teacher_probs`), the centering (:func:`updated_center`) and the entropy
(:func:`teacher_entropy`) take logits of any leading shape (..., K): views and batch for
[CLS] outputs, views, batch and patches for iBOT's patch outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.dist import all_reduce_mean
from nolabel.ops.precision import float32_region


@float32_region
def teacher_probs(teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((g_t(x) - c) / tau_t)``.

    teacher_out: (V_t, B, K) logits of the global views (any (..., K)); center: (K,). Returns
    the same shape. Computed in float32 whatever the input precision.
    """
    return F.softmax((teacher_out.float() - center.float()) / teacher_temp, dim=-1)


@float32_region
def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
              teacher_temp: float, student_temp: float = 0.1) -> torch.Tensor:
    """Eq. 5.3: mean over pairs (teacher global view t, student view s != t) of
    ``H(P_t, P_s) = -sum_k P_t^(k) log P_s^(k)``, averaged over the batch.

    student_out: (V_s, B, K) logits of every view, the V_t global views first, in the
    same order as ``teacher_out``: (V_t, B, K) logits of the global views (no gradient
    flows to the teacher). center: (K,). With V_s == V_t == 1 there is no pair and the
    loss compares the view with itself (a degenerate case kept for tests).
    Returns a scalar.
    """
    if student_out.dim() != 3 or teacher_out.dim() != 3:
        raise ValueError("dino_loss expects (views, batch, K) tensors")
    n_student, n_teacher = student_out.shape[0], teacher_out.shape[0]
    if n_teacher > n_student:
        raise ValueError(f"{n_teacher} teacher views but only {n_student} student views")
    q = teacher_probs(teacher_out.detach(), center, teacher_temp)          # (V_t, B, K)
    log_p = F.log_softmax(student_out.float() / student_temp, dim=-1)     # (V_s, B, K)
    # cross[t, s] = mean_b sum_k q[t,b,k] * log_p[s,b,k]
    cross = torch.einsum("tbk,sbk->ts", q, log_p) / q.shape[1]            # (V_t, V_s)
    mask = torch.ones_like(cross, dtype=torch.bool)
    if n_student > 1:
        idx = torch.arange(n_teacher, device=cross.device)
        mask[idx, idx] = False                                            # skip x' == x
    return -cross[mask].mean()


@float32_region
def masked_patch_loss(student_masked: torch.Tensor, teacher_patches: torch.Tensor, mask: torch.Tensor,
                      center: torch.Tensor, teacher_temp: float, student_temp: float = 0.1) -> torch.Tensor:
    """iBOT's L_MIM (Zhou et al. 2022, sec. 3.1): for every global view, the cross-entropy
    ``-P_t(u_i)^T log P_s(u^_i)`` between the teacher's centred, sharpened distribution of patch i
    of the view u (unmasked) and the student's of the same patch of the masked view u^, summed
    over the masked patches (``m_i = 1``). Normalisation: the mean over an image's masked
    patches, then the mean over images (an image with no masked patch counts as 0: iBOT masks
    only half of them) and over views.

    student_masked: (M, K) logits of the masked patches only, in ``mask``'s row-major order
    (``full[mask]``: the student's head never runs on the others); teacher_patches: (V, B, N, K)
    logits of every patch of the unmasked views (no gradient); mask: bool (V, B, N) with M
    True entries; center: (K,), the patch center (iBOT keeps one apart from the [CLS] one).
    Returns a scalar; 0 (in the graph) when nothing is masked.
    """
    if teacher_patches.dim() != 4 or mask.shape != teacher_patches.shape[:3]:
        raise ValueError(f"teacher_patches {tuple(teacher_patches.shape)} must be (V, B, N, K) and mask "
                         f"{tuple(mask.shape)} (V, B, N)")
    if student_masked.shape != (int(mask.sum()), teacher_patches.shape[-1]):
        raise ValueError(f"student_masked {tuple(student_masked.shape)} must hold one row of K="
                         f"{teacher_patches.shape[-1]} logits per masked patch ({int(mask.sum())})")
    q = teacher_probs(teacher_patches.detach()[mask], center, teacher_temp)     # (M, K)
    log_p = F.log_softmax(student_masked.float() / student_temp, dim=-1)        # (M, K)
    cross = -(q * log_p).sum(dim=-1)                                            # (M,)
    per_image = mask.sum(dim=-1, keepdim=True).clamp_min(1).float()             # (V, B, 1) masked count
    weight = (1.0 / per_image).expand(mask.shape)[mask]                         # (M,) 1 / count of its image
    return (cross * weight).sum() / (mask.shape[0] * mask.shape[1])


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float) -> torch.Tensor:
    """Eq. 5.4: ``c <- m c + (1 - m) mean_i g_t(x_i)`` over every teacher output of the
    batch (all global views, all processes). teacher_out: (V_t, B, K), or any (..., K) (every
    row counts once, e.g. iBOT's patch outputs (V_t, B, N, K)). Returns (K,)."""
    batch_mean = teacher_out.detach().float().reshape(-1, teacher_out.shape[-1]).mean(dim=0)
    batch_mean = all_reduce_mean(batch_mean)
    return center * momentum + batch_mean * (1.0 - momentum)


@torch.no_grad()
def teacher_entropy(teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Mean entropy h(P_t) in nats of the centred, sharpened teacher outputs (V_t, B, K) (or
    any (..., K)); a 0-dim tensor on their device (logs are read every ``run.log_every`` steps)."""
    q = teacher_probs(teacher_out, center, teacher_temp)
    return -(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean()


@torch.no_grad()
def entropy_and_kl(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
                   teacher_temp: float, student_temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5.5 decomposition ``H(P_t, P_s) = h(P_t) + KL(P_t || P_s)`` over the same
    view pairs as :func:`dino_loss`. Returns (mean teacher entropy h, mean KL) in nats.

    Collapse shows as KL -> 0 (Fig. 5.8); h -> 0 without centering, h -> log K
    without sharpening.
    """
    h = teacher_entropy(teacher_out, center, teacher_temp)
    cross = dino_loss(student_out, teacher_out, center, teacher_temp, student_temp)
    return h, cross - h
