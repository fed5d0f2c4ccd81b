"""How learnable is the built-in demo set in a few hundred steps? (diagnostic, prints JSON)

The demo must show a trained backbone beating a random one and raw pixels by a wide
margin after ~5 minutes on 2 CPU cores. This script separates the data from the
method: it trains the demo backbone for ``--steps`` steps either *supervised*
(cross-entropy on the labels: the ceiling at this budget) or with SimCLR's NT-Xent
(the simplest self-supervised signal), and reports the k-NN top-1 (k=20, T=0.07) on
``demo:test`` beside raw pixels and the random initialisation, measured in the same run.

Data knobs (``--bg-contrast``, ``--textures``, ``--object-min/max``) regenerate the
demo set with other generator constants (module attributes of
``nolabel.data.demo``, patched for this process only), so a candidate design can be
measured before it becomes the default.

    python benchmarks/demo_learnability.py --loss supervised --steps 300
    python benchmarks/demo_learnability.py --loss simclr --steps 600 --hue 0.5 --bg-contrast 0.3
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

import nolabel.data.demo as demo
from nolabel.backbones import build_backbone
from nolabel.data import open_images
from nolabel.evaluate.features import extract_features
from nolabel.evaluate.knn import knn_classify
from nolabel.evaluate.models import FeatureModel
from nolabel.heads import mlp
from nolabel.losses.contrastive import nt_xent
from nolabel.views import MultiCrop, ViewSpec


@contextlib.contextmanager
def patched_demo(bg_contrast: float, textures: int, object_min: float, object_max: float, bg_noise: float = 0.0):
    """Generate ``demo`` with other constants inside the ``with`` block. ``bg_noise`` > 0
    replaces each background by its mean colour plus per-pixel Gaussian noise of that
    standard deviation (a background no two crops of an image share)."""
    background = demo._background
    saved = (demo._background, demo._N_TEXTURES, demo._MIN_FRACTION, demo._MAX_FRACTION)

    def scaled(rng, canvas, pool):
        texture = background(rng, canvas, pool)
        mean = texture.mean(axis=(0, 1), keepdims=True)
        if bg_noise > 0:
            return mean + rng.normal(0.0, bg_noise, size=texture.shape)
        return mean + bg_contrast * (texture - mean)

    demo._background = scaled
    demo._N_TEXTURES = textures
    demo._MIN_FRACTION, demo._MAX_FRACTION = object_min, object_max
    try:
        yield
    finally:
        demo._background, demo._N_TEXTURES, demo._MIN_FRACTION, demo._MAX_FRACTION = saved


def knn_top1(network, train, test) -> float:
    model = FeatureModel("probe", network, None)
    train_x, train_y = extract_features(model, train)
    test_x, test_y = extract_features(model, test)
    return knn_classify(train_x, train_y, test_x, test_y, k=20, temperature=0.07)["top1"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loss", choices=("supervised", "simclr"), default="simclr")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    p.add_argument("--width", type=float, default=0.5, help="ResNet-18 width (the demo preset's)")
    p.add_argument("--small-stem", action="store_true")
    p.add_argument("--scale-min", type=float, default=0.32, help="crop area range (s, 1)")
    p.add_argument("--hue", type=float, default=0.1, help="colour-jitter hue strength (BYOL: 0.1)")
    p.add_argument("--bg-contrast", type=float, default=1.0, help="background texture contrast (1: as shipped)")
    p.add_argument("--textures", type=int, default=demo._N_TEXTURES)
    p.add_argument("--object-min", type=float, default=demo._MIN_FRACTION)
    p.add_argument("--object-max", type=float, default=demo._MAX_FRACTION)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    with patched_demo(a.bg_contrast, a.textures, a.object_min, a.object_max):
        train = open_images(f"demo?n={a.n_train}", in_memory=True)
        test = open_images(f"demo:test?n={a.n_test}", image_size=train.image_size, in_memory=True)
    size = train.image_size
    backbone = build_backbone("resnet18", width=a.width, small_stem=a.small_stem)
    d = backbone.num_features
    head = (nn.Linear(d, len(train.classes)) if a.loss == "supervised"
            else mlp(d, 512, 128, n_layers=2, norm="bn"))
    views = MultiCrop([ViewSpec(size, (a.scale_min, 1.0), count=2, jitter_strength=(0.4, 0.4, 0.2, a.hue))])
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=a.lr, weight_decay=1e-4)

    pixels = knn_top1(None, train, test)
    random_init = knn_top1(backbone, train, test)
    backbone.train()
    t0, step, epoch, losses = time.time(), 0, 0, []
    while step < a.steps:
        for batch in train.batches(a.batch_size, shuffle=True, seed=a.seed, epoch=epoch):
            v1, v2 = views(batch.images)
            if a.loss == "supervised":
                loss = F.cross_entropy(head(backbone(v1)), batch.labels)
            else:
                z = head(backbone(torch.cat([v1, v2])))
                loss = nt_xent(z[:len(v1)], z[len(v1):], a.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step >= a.steps:
                break
        epoch += 1
    seconds = time.time() - t0
    result = {"args": vars(a), "knn_top1": {"trained": knn_top1(backbone, train, test),
                                            "random_init": random_init, "pixels": pixels},
              "loss_first_last": [round(losses[0], 4), round(sum(losses[-20:]) / len(losses[-20:]), 4)],
              "train_seconds": round(seconds, 1), "machine_threads": torch.get_num_threads()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
