"""Self-attention maps of a ViT (thesis 5.5.2; Figs. 5.3, 5.4, 5.5).

The map of head h is the last block's softmax attention of the [CLS] query to the
patch tokens, ``attn[:, h, 0, 1:]`` reshaped to the patch grid (h x w). A mask keeps
60% of a map's mass (:func:`nolabel.metrics.attention_mass_mask`) and is
upsampled to pixels by repeating each patch (nearest), as in DINO.

Heads. When the data has object masks (the ``demo`` set does), each head's mask is
compared with the ground truth by the Jaccard index, per image. Reported:

* ``per_head``: the mean Jaccard of each head over the images;
* ``best_head`` / ``best_head_index``: the head with the highest mean (one head chosen
  for the whole dataset, the "best head" of Fig. 5.5; the headline number);
* ``head_mean``: the mask of the heads' averaged map, a choice-free reference;
* ``oracle``: the mean over images of the best head of each image (an upper bound).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.metrics import attention_mass_mask, jaccard
from nolabel.views import normalize

MASS, MAX_IMAGES, N_SHOW = 0.6, 500, 6


@torch.no_grad()
def cls_attention(vit, x: Tensor) -> Tensor:
    """[CLS] attention of the last block: normalised images (B, 3, H, W) -> (B, heads, H/p, W/p)."""
    attn = vit.get_last_selfattention(x)  # (B, heads, 1 + N, 1 + N)
    p = vit.patch_size
    return attn[:, :, 0, 1:].reshape(x.shape[0], attn.shape[1], x.shape[-2] // p, x.shape[-1] // p)


def pixel_masks(maps: Tensor, patch_size: int, mass: float = MASS) -> Tensor:
    """60%-mass masks of maps (B, heads, h, w), upsampled -> bool (B, heads, h*p, w*p)."""
    b, heads, h, w = maps.shape
    masks = torch.stack([attention_mass_mask(m, mass) for m in maps])  # (B, heads, h, w)
    return masks.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)


def jaccard_table(masks: Tensor, truth: Tensor) -> Tensor:
    """Jaccard of every (image, head) mask (B, heads, S, S) with the truth (B, S, S) -> (B, heads) float64."""
    return torch.tensor([[jaccard(m, t) for m in per_image] for per_image, t in zip(masks, truth)],
                        dtype=torch.float64)


def summarize(table: Tensor, mean_table: Tensor) -> dict:
    """Head combination of per-image Jaccards (B, heads) and the head-mean ones (B,)."""
    per_head = table.mean(0)
    best = int(per_head.argmax())
    return {"best_head": float(per_head[best]), "best_head_index": best, "per_head": per_head.tolist(),
            "head_mean": float(mean_table.mean()), "oracle": float(table.max(1).values.mean())}


def attention_protocol(ctx: EvalContext, max_images: int = MAX_IMAGES, n_show: int = N_SHOW, mass: float = MASS,
                       role: str = "test") -> dict:
    """Attention PNGs and, with ground-truth masks, Jaccard scores (module docstring)."""
    ctx.require_vit("attention")
    if not 0 < mass <= 1 or max_images < 1:
        raise EvalError(f"attention needs 0 < --mass <= 1 and --max-images >= 1; got {mass}, {max_images}")
    t0 = time.time()
    data = ctx.dataset(role, "attention")
    vit = ctx.model.network.to(ctx.device).eval()
    p = vit.patch_size
    tables, mean_tables, shown = [], [], None
    seen = 0
    for batch in data.batches(min(ctx.batch_size, 128), shuffle=False, drop_last=False):
        images = batch.images[: max_images - seen]
        maps = cls_attention(vit, normalize(images.to(ctx.device))).cpu().double()  # (B, heads, h, w)
        if shown is None:
            shown = (images[:n_show], maps[:n_show], None if batch.masks is None else batch.masks[:n_show])
        if batch.masks is not None:
            truth = batch.masks[: images.shape[0]]
            tables.append(jaccard_table(pixel_masks(maps, p, mass), truth))
            mean_masks = pixel_masks(maps.mean(1, keepdim=True), p, mass)  # (B, 1, S, S)
            mean_tables.append(jaccard_table(mean_masks, truth)[:, 0])
        seen += images.shape[0]
        if seen >= max_images:
            break
    result: dict = {"heads": int(vit.num_heads), "patch_size": p, "mass": mass, "n_images": seen,
                    "head_combination": "best_head = head with the highest mean Jaccard over the images"}
    if tables:
        result.update(summarize(torch.cat(tables), torch.cat(mean_tables)))
    else:
        result["jaccard"] = f"not computed: {ctx.specs[role]} has no object masks"
    result["png"] = str(_overlays(ctx, *shown, p, mass, result.get("best_head_index")))
    result["seconds"] = round(time.time() - t0, 2)
    return result


def _overlays(ctx: EvalContext, images: Tensor, maps: Tensor, truth: Tensor | None, p: int, mass: float,
              best: int | None):
    """Save :func:`overlay_figure` as ``attention.png``."""
    import matplotlib.pyplot as plt

    fig = overlay_figure(images, maps, truth, p, mass, best)
    path = ctx.path("attention.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _to_unit(maps: Tensor) -> Tensor:
    """Each map (..., S, S) divided by its maximum: 0..1, so that one colour bar reads them all."""
    return maps / maps.amax((-2, -1), keepdim=True).clamp_min(1e-12)


def overlay_figure(images: Tensor, maps: Tensor, truth: Tensor | None, p: int, mass: float, best: int | None):
    """Per image (uint8 (n, 3, S, S); maps (n, heads, h, w)): the image, its ground truth,
    each head's map over it, the heads' mean, and the 60%-mass mask of the best head (or
    of the mean without ground truth). Each map is drawn relative to its own maximum, and
    a colour bar gives that scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, heads = maps.shape[:2]
    size = images.shape[-1]
    up = F.interpolate(maps.float(), size=(size, size), mode="nearest")  # (n, heads, S, S)
    mean_up = _to_unit(up.mean(1))
    up = _to_unit(up)
    chosen = maps[:, best] if best is not None else maps.mean(1)
    chosen_mask = pixel_masks(chosen[:, None], p, mass)[:, 0]
    cols = 1 + (truth is not None) + heads + 2
    fig, axes = plt.subplots(n, cols, figsize=(cols * 1.1 + 0.6, n * 1.15), squeeze=False)
    overlay = None
    for i in range(n):
        img = images[i].permute(1, 2, 0).numpy()
        panels = [("image", img, None)]
        if truth is not None:
            panels.append(("truth", truth[i].numpy(), "gray"))
        panels += [(f"head {h}", up[i, h].numpy(), "inferno") for h in range(heads)]
        panels.append(("mean", mean_up[i].numpy(), "inferno"))
        panels.append((f"{mass:.0%} {'head ' + str(best) if best is not None else 'mean'}",
                       chosen_mask[i].numpy(), "gray"))
        for j, (title, panel, cmap) in enumerate(panels):
            ax = axes[i, j]
            if cmap == "inferno":
                ax.imshow(img)
                overlay = ax.imshow(panel, cmap=cmap, alpha=0.6, vmin=0.0, vmax=1.0)
            else:
                ax.imshow(panel, cmap=cmap)
            ax.axis("off")
            if i == 0:
                ax.set_title(title, fontsize=6)
    fig.tight_layout()
    bar = fig.colorbar(overlay, ax=axes, fraction=0.02, pad=0.01)
    bar.set_label("attention / the map's maximum", fontsize=6)
    bar.ax.tick_params(labelsize=6)
    return fig
