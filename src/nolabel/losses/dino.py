"""DINO self-distillation loss (thesis section 5.3.1, Eqs. 5.1-5.5).

Pure functions of tensors: temperatures and the center are arguments.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nolabel.ops.dist import all_reduce_mean
from nolabel.ops.precision import float32_region


@float32_region
def teacher_probs(teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((g_t(x) - c) / tau_t)``.

    teacher_out: (V_t, B, K) logits of the global views; center: (K,). Returns (V_t, B, K).
    Computed in float32 whatever the input precision.
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


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float) -> torch.Tensor:
    """Eq. 5.4: ``c <- m c + (1 - m) mean_i g_t(x_i)`` over every teacher output of the
    batch (all global views, all processes). teacher_out: (V_t, B, K). Returns (K,)."""
    batch_mean = teacher_out.detach().float().reshape(-1, teacher_out.shape[-1]).mean(dim=0)
    batch_mean = all_reduce_mean(batch_mean)
    return center * momentum + batch_mean * (1.0 - momentum)


@torch.no_grad()
def teacher_entropy(teacher_out: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> float:
    """Mean entropy h(P_t) in nats of the centred, sharpened teacher outputs (V_t, B, K)."""
    q = teacher_probs(teacher_out, center, teacher_temp)
    return float(-(q * torch.log(q.clamp_min(1e-12))).sum(-1).mean())


@torch.no_grad()
def entropy_and_kl(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
                   teacher_temp: float, student_temp: float) -> tuple[float, float]:
    """Eq. 5.5 decomposition ``H(P_t, P_s) = h(P_t) + KL(P_t || P_s)`` over the same
    view pairs as :func:`dino_loss`. Returns (mean teacher entropy h, mean KL) in nats.

    Collapse shows as KL -> 0 (Fig. 5.8); h -> 0 without centering, h -> log K
    without sharpening.
    """
    h = teacher_entropy(teacher_out, center, teacher_temp)
    cross = dino_loss(student_out, teacher_out, center, teacher_temp, student_temp)
    return h, float(cross) - h
