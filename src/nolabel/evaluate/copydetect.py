"""Copy detection (thesis 5.5.1, Table 5.4: Copydays "strong" among 10k distractors, whitening
learned on 20k other images).

Construction, all seeded:

* **originals**: ``n_originals`` images drawn from the test set (held out from training);
* **queries**: ``copies`` strongly distorted copies of each original (:func:`distort`):
  a random crop keeping 30-60% of the area resized back, a colour change (saturation
  0.2-1.8, brightness and contrast 0.6-1.4), a Gaussian blur (radius 0.3-1 px per 32 px
  of image side), an overlay (random text or a random-coloured rectangle over 10-25% of
  the image, one or the other with p 0.5) and JPEG re-encoding at quality 10-30, in that
  order, with Pillow;
* **database**: the originals hidden among ``n_distractors`` training images;
* **whitening** (optional): PCA whitening (:func:`nolabel.ops.pca.fit_pca_whitening`,
  all dimensions) fitted on ``n_whiten`` further training images, disjoint from the
  distractors, applied to l2-normalised queries and database.

When ``--train`` and ``--test`` are the same spec, the originals are kept out of the
distractors and of the whitening set.

A query's only positive is its original. Features are compared by cosine similarity;
mAP uses the Holidays/Copydays AP convention (:func:`nolabel.metrics.copy_detection_map`).
Both the raw and the whitened mAP are reported.
"""
from __future__ import annotations

import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from nolabel.evaluate.context import EvalContext, EvalError
from nolabel.metrics import copy_detection_map

N_ORIGINALS, COPIES, N_DISTRACTORS, N_WHITEN = 100, 2, 10_000, 20_000
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


def distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strongly distorted copy of one uint8 (S, S, 3) image, same shape (module docstring)."""
    size = image.shape[0]
    img = Image.fromarray(image)
    area = rng.uniform(0.3, 0.6) * size * size
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = int(min(size, max(1, round(np.sqrt(area * ratio)))))
    h = int(min(size, max(1, round(np.sqrt(area / ratio)))))
    left, top = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BICUBIC)
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.2, 1.8))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.6, 1.4))
    img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.0) * max(1.0, size / 32)))
    draw = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
        text = "".join(rng.choice(_LETTERS, size=int(rng.integers(3, 8))))
        font = ImageFont.load_default(size=max(6, size // 4))
        draw.text((int(rng.integers(0, size // 2 + 1)), int(rng.integers(0, size * 3 // 4 + 1))), text,
                  fill=colour, font=font)
    else:
        side = np.sqrt(rng.uniform(0.1, 0.25)) * size
        pw, ph = max(1, int(side * rng.uniform(0.7, 1.3))), max(1, int(side))
        x0, y0 = int(rng.integers(0, max(1, size - pw))), int(rng.integers(0, max(1, size - ph)))
        draw.rectangle((x0, y0, x0 + pw, y0 + ph), fill=colour)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(10, 31)))
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def make_copies(images: torch.Tensor, copies: int = COPIES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distorted copies of uint8 (n, 3, S, S) images -> (uint8 (n * copies, 3, S, S), source row (n * copies,))."""
    out, source = [], []
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        for c in range(copies):
            out.append(torch.from_numpy(distort(image, np.random.default_rng([seed, i, c]))).permute(2, 0, 1))
            source.append(i)
    return torch.stack(out), torch.tensor(source)


def copy_detection_scores(queries, database, positives, whiten_set=None) -> dict:
    """``{"map", "map_whitened"?}`` of queries (Q, D) against database (N, D) features.

    positives: (Q,) database row of each query's original. whiten_set: (M, D) features to
    fit the whitening on (l2-normalised first, like queries and database).
    """
    q, db = F.normalize(torch.as_tensor(queries).float(), dim=1), F.normalize(torch.as_tensor(database).float(), dim=1)
    pos = [[int(p)] for p in torch.as_tensor(positives).tolist()]
    out = {"map": copy_detection_map(q @ db.T, pos)}
    if whiten_set is not None:
        from nolabel.ops.pca import fit_pca_whitening

        w = F.normalize(torch.as_tensor(whiten_set).float(), dim=1)
        pca = fit_pca_whitening(w, dim=w.shape[1])
        out["map_whitened"] = copy_detection_map(pca.apply(q) @ pca.apply(db).T, pos)
        out["whiten_dim"] = pca.out_dim
    return out


def copydetect_protocol(ctx: EvalContext, n_originals: int = N_ORIGINALS, copies: int = COPIES,
                        n_distractors: int = N_DISTRACTORS, n_whiten: int = N_WHITEN, whiten: bool = True,
                        seed: int = 0) -> dict:
    """Copy detection of distorted test images among training images (module docstring)."""
    if min(n_originals, copies) < 1 or n_distractors < 0 or n_whiten < 0:
        raise EvalError("copy detection needs --originals >= 1, --copies >= 1, --distractors >= 0, --whiten >= 0")
    t0 = time.time()
    test, train = ctx.features("test", "copydetect"), ctx.features("train", "copydetect")
    gen = torch.Generator().manual_seed(seed)
    originals = torch.randperm(test.x.shape[0], generator=gen)[:n_originals].sort().values
    pool = torch.randperm(train.x.shape[0], generator=gen)
    if ctx.specs["train"] == ctx.specs["test"]:  # one set for both: an original must not be its own distractor
        pool = pool[~torch.isin(pool, originals)]
    n_w = min(n_whiten, train.x.shape[0] // 2) if whiten else 0
    if whiten and n_w < 2:
        raise EvalError("copy detection: whitening needs at least 4 training images; pass --no-whiten")
    whiten_rows, distractors = pool[:n_w], pool[n_w : n_w + n_distractors]
    images, _ = ctx.gather("test", originals, "copydetect")
    query_images, source = make_copies(images, copies, seed)
    queries = ctx.embed(query_images)
    database = torch.cat([test.x[originals], train.x[distractors]])
    result = copy_detection_scores(queries, database, source, train.x[whiten_rows] if whiten else None)
    result.update(n_queries=int(queries.shape[0]), n_originals=int(originals.numel()),
                  n_distractors=int(distractors.numel()), n_whiten=int(n_w), copies=copies,
                  seconds=round(time.time() - t0, 2))
    n_show = min(8, len(images))
    grid = torch.cat([images[:n_show], query_images[: n_show * copies : copies]])
    result["examples"] = str(_save_examples(ctx, grid, n_show))
    return result


def _save_examples(ctx: EvalContext, grid: torch.Tensor, n: int):
    """PNG: originals (top row) above one distorted copy of each (bottom row)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, n, figsize=(n * 1.1, 2.4), squeeze=False)
    for j in range(n):
        for r in range(2):
            axes[r, j].imshow(grid[r * n + j].permute(1, 2, 0).numpy())
            axes[r, j].axis("off")
    axes[0, 0].set_title("originals / copies", loc="left", fontsize=7)
    fig.tight_layout()
    path = ctx.path("copydetect_examples.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
