"""Fine-tuning the whole backbone with a linear head (thesis Table 5.7).

The backbone (a copy: the evaluated model is never modified) and a zero-initialised
linear head on its output ([CLS] token / pooled last stage) are trained with AdamW on
random-resized-crop (scale (0.08, 1)) + horizontal-flip views, with a linear warm-up
over the first 10% of the steps followed by a cosine decay to 0. Weight decay applies
to matrices and convolutions only (no biases, norms, [CLS] or position embeddings).
``layer_decay`` (ViT only; BEiT-style, e.g. 0.65-0.75) multiplies the learning rate of
block ``i`` of ``depth`` by ``layer_decay ** (depth - i)``, of the patch embedding,
[CLS] and positions by ``layer_decay ** (depth + 1)``; the final norm and the head keep
the full rate. Off by default.

Default schedule, sized to the labelled images and for a CPU (a smoke-level fine-tune,
not the paper's): batches of 32 images, lr 5e-4, weight decay 0.05, and
:func:`planned_steps` = ``EPOCHS`` (10) passes over the labelled images, at least
``MIN_STEPS`` (10, so that warm-up and decay keep their shape) and at most
``STEP_BUDGET`` (40) steps. So the 1% subset of the demo's 4,000 images (40 images)
gets 13 steps, its 10% subset and the full set 40 each, where every fine-tune used to
take 40 whatever its data. On a GPU ask for more, e.g. ``--steps 5000 --batch-size 256``.
The test set is scored on centre crops.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.evaluate.linear import accuracy
from nolabel.ops.schedules import warmup_cosine
from nolabel.views import normalize

BATCH_SIZE, LR, WEIGHT_DECAY, WARMUP = 32, 5e-4, 0.05, 0.1
EPOCHS, MIN_STEPS, STEP_BUDGET = 10, 10, 40


def planned_steps(n_labelled: int, batch_size: int = BATCH_SIZE) -> int:
    """Default optimizer steps: ``EPOCHS`` passes over ``n_labelled`` images in batches of
    ``batch_size``, clamped to [``MIN_STEPS``, ``STEP_BUDGET``] (module docstring)."""
    return max(MIN_STEPS, min(STEP_BUDGET, math.ceil(EPOCHS * n_labelled / batch_size)))


def vit_layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for ``blocks.i``, depth + 1 for the final norm."""
    if name.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(network: nn.Module, head: nn.Module, weight_decay: float,
                 layer_decay: float | None = None) -> list[dict]:
    """AdamW groups with ``lr_scale`` (layer-wise decay) and ``weight_decay`` (0 for 1-D
    parameters, [CLS] and position embeddings)."""
    depth = getattr(network, "depth", None)
    if layer_decay is not None and depth is None:
        raise EvalError("--layer-decay applies to ViT backbones (it scales the rate per transformer block); "
                        "drop it for this model")
    groups: dict[tuple[float, float], list] = {}
    named = [(n, p, True) for n, p in network.named_parameters()] + [(n, p, False) for n, p in head.named_parameters()]
    for name, p, in_backbone in named:
        scale = 1.0
        if in_backbone and layer_decay is not None:
            scale = layer_decay ** (depth + 1 - vit_layer_id(name, depth))
        decay = 0.0 if p.ndim < 2 or name in ("cls_token", "pos_embed") else weight_decay
        groups.setdefault((scale, decay), []).append(p)
    return [{"params": ps, "lr_scale": s, "weight_decay": d} for (s, d), ps in groups.items()]


def trainable_copy(ctx: EvalContext) -> tuple[nn.Module, nn.Linear]:
    """A copy of the evaluated network in training mode on ``ctx.device`` (the model itself
    is never modified) and a zero-initialised linear head on its features."""
    network = copy.deepcopy(ctx.model.network).to(ctx.device).train()
    head = nn.Linear(network.num_features, ctx.num_classes("train", "test")).to(ctx.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return network, head


def train_views(ctx: EvalContext):
    """Random-resized-crop (scale (0.08, 1)) + horizontal flip at the model's size."""
    from nolabel.views import MultiCrop, ViewSpec

    return MultiCrop([ViewSpec(ctx.image_size, (0.08, 1.0), flip=0.5, jitter=0.0, grayscale=0.0)])


def _stream(ctx: EvalContext, indices: Tensor | None, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless shuffled (uint8 images, labels) batches of the training set or of its ``indices``."""
    data = ctx.dataset("train", "finetune")
    if indices is None:
        drop = len(data) > batch_size
        epoch = 0
        while True:
            for batch in data.batches(batch_size, shuffle=True, seed=seed, epoch=epoch, drop_last=drop):
                yield batch.images, batch.labels
            epoch += 1
    images, _ = ctx.gather("train", indices, "finetune")
    labels = data.labels_tensor()[indices]
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(labels), generator=gen)
        for i in range(0, len(order), batch_size):
            take = order[i : i + batch_size]
            yield images[take], labels[take]


@torch.no_grad()
def _score(ctx: EvalContext, model: nn.Module) -> tuple[float, float]:
    """(top-1, top-5) percent of ``model`` on the test set's centre crops."""
    hits1 = hits5 = n = 0
    for batch in ctx.dataset("test", "finetune").batches(ctx.batch_size, shuffle=False, drop_last=False):
        x, y = normalize(batch.images.to(ctx.device)), batch.labels.to(ctx.device)
        t1, t5 = accuracy(model, x, y, chunk_size=x.shape[0])
        hits1, hits5, n = hits1 + round(t1 * len(y) / 100), hits5 + round(t5 * len(y) / 100), n + len(y)
    return 100.0 * hits1 / n, 100.0 * hits5 / n


def finetune_protocol(ctx: EvalContext, indices: Tensor | None = None, steps: int | None = None,
                      batch_size: int = BATCH_SIZE, lr: float = LR, weight_decay: float = WEIGHT_DECAY,
                      layer_decay: float | None = None, seed: int = 0, desc: str = "fine-tune") -> dict:
    """Fine-tune on the training set (or its ``indices``), score on the test set;
    ``steps=None``: :func:`planned_steps` of the labelled images.

    Returns ``{"top1", "top5", "steps", "batch_size", "lr", "weight_decay", "layer_decay",
    "n_train", "epochs" (images seen / n_train), "train_loss" (mean of the last 10%), "seconds"}``.
    """
    ctx.require_weights("finetune")
    ctx.require_labels("finetune", "train", "test")
    train_labels = ctx.dataset("train", "finetune").labels_tensor()
    n_train = len(train_labels) if indices is None else int(len(indices))
    if steps is None and batch_size >= 1:
        steps = planned_steps(n_train, batch_size)
    if steps is None or steps < 1 or batch_size < 1 or not lr > 0:
        raise EvalError(f"fine-tuning needs --steps >= 1, --batch-size >= 1 and --lr > 0; got {steps}, "
                        f"{batch_size}, {lr}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise EvalError(f"--layer-decay {layer_decay}: must be in (0, 1]")
    t0 = time.time()
    torch.manual_seed(seed)
    network, head = trainable_copy(ctx)
    groups = param_groups(network, head, weight_decay, layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    views = train_views(ctx)
    warmup = int(WARMUP * steps)
    stream = _stream(ctx, indices, batch_size, seed)
    bar = None
    if ctx.progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True)
    losses = []
    for step in range(steps):
        images, labels = next(stream)
        rate = warmup_cosine(step, steps, warmup, lr, 0.0)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["lr_scale"]
        x = views(images.to(ctx.device))[0]
        loss = F.cross_entropy(head(network(x)), labels.to(ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"loss {losses[-1]:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    model = nn.Sequential(network, head).eval()
    top1, top5 = _score(ctx, model)
    tail = losses[-max(1, steps // 10):]
    return {"top1": top1, "top5": top5, "steps": steps, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "layer_decay": layer_decay, "warmup_steps": warmup, "n_train": n_train,
            "epochs": round(steps * batch_size / n_train, 3), "train_loss": sum(tail) / len(tail),
            "views": "random-resized-crop (0.08, 1) + horizontal flip", "seconds": round(time.time() - t0, 2)}
