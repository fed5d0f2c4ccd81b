"""LARS: SGD with momentum and a layer-wise trust ratio (thesis section 4.2.5; You et al.
2017, "Large batch training of convolutional networks").

SwAV trains with LARS, a cosine learning rate of base 4.8 for batches of 4096 and weight
decay 1e-6 (section 4.2.5). For an adapted parameter w with gradient g and weight decay
wd, one step is::

    ratio = eta * ||w|| / (||g|| + wd * ||w|| + eps)     (1 when ||w|| or ||g|| is 0)
    d     = ratio * (g + wd * w)
    buf   = momentum * buf + d                           (buf = d at the first step)
    w     = w - lr * buf

``eta`` (the trust coefficient) defaults to 0.001, the value of You et al. and of the
SwAV code linked in section 4.2.5 (apex ``LARC(trust_coefficient=0.001, clip=False)``
around SGD with momentum 0.9). The learning rate multiplies the buffer, as in PyTorch
SGD, so a new ``group["lr"]`` acts at once on the accumulated velocity.

Parameter groups carry two flags: ``lars`` (default True) turns the trust ratio on and
``no_decay`` (default False) pins the weight decay to 0 whatever ``group["weight_decay"]``
says. :func:`lars_groups` clears ``lars`` for the groups flagged ``no_decay``: the biases and
normalisation parameters (ndim < 2) of ``nolabel.optim.param_groups``, as SimCLR's LARS does: they then take plain SGD
steps ``buf = momentum * buf + g``. (SwAV's code adapts and decays every parameter; we
follow SimCLR, whose improvements section 4.2.5 says SwAV adopts.) Groups are ordinary
``torch.optim`` groups: the loop may rewrite ``lr`` and ``weight_decay`` before every
step (``nolabel.optim.set_schedule_values`` keeps 0 in ``no_decay`` groups), and
``state_dict`` / ``load_state_dict`` carry the momentum buffers and the flags for an
exact resume.
"""
from __future__ import annotations

import torch


def lars_groups(groups: list[dict], weight_decay: float) -> list[dict]:
    """``groups`` (e.g. ``nolabel.optim.param_groups``: weights, and biases and
    normalisation parameters flagged ``no_decay``) with LARS' flags: a ``no_decay`` group
    gets ``lars=False`` and ``weight_decay=0``, the others ``lars=True`` and ``weight_decay``.
    Other keys of a group are kept."""
    return [{**g, "lars": not g.get("no_decay", False), "no_decay": bool(g.get("no_decay", False)),
             "weight_decay": 0.0 if g.get("no_decay") else weight_decay} for g in groups]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and the layer-wise trust ratio of You et al. (module docstring).

    params: parameters or groups, e.g. from :func:`lars_groups`. lr: learning rate
    (section 4.2.5: 4.8 for batch 4096, warmed up then cosine). momentum: heavy-ball
    coefficient in [0, 1). weight_decay: L2 coefficient added to the gradient (1e-6 in
    section 4.2.5). eta: trust coefficient. eps: guards the ratio's denominator.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, eps: float = 1e-8):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not eta > 0:
            raise ValueError(f"trust coefficient eta must be > 0, got {eta}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "eps": eps,
                    "lars": True, "no_decay": False}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            weight_decay = 0.0 if group["no_decay"] else group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("LARS does not support sparse gradients")
                grad = p.grad
                d = grad.add(p, alpha=weight_decay) if weight_decay else grad.clone()
                if group["lars"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    ratio = group["eta"] * w_norm / (g_norm + weight_decay * w_norm + group["eps"])
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    d.mul_(ratio)
                if group["momentum"]:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        state["momentum_buffer"] = buf = d
                    else:
                        buf.mul_(group["momentum"]).add_(d)
                    d = buf
                p.add_(d, alpha=-group["lr"])
        return loss
