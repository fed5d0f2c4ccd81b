"""How learnable is the built-in demo set in a few hundred steps? (diagnostic, prints JSON)

The demo must show a trained backbone beating a random one and raw pixels by a wide
margin after ~5 minutes on 2 CPU cores. This script separates the data from the
method: it trains the demo backbone for ``--steps`` steps either *supervised*
(cross-entropy on the labels: the ceiling at this budget) or with SimCLR's NT-Xent
(the simplest self-supervised signal), and reports the k-NN top-1 (k=20, T=0.07) on
``demo:test`` beside raw pixels and the random initialisation, measured in the same run.

Data knobs (``--design``, ``--bg-contrast``, ``--bg-noise``, ``--textures``,
``--object-min/max``, ``--rotation``) generate the demo set from another
``DemoDesign`` (registered in ``nolabel.data.demo.DESIGNS`` for this process only),
so a candidate design can be measured before it becomes the default. The rows of
BENCHMARKS.md measured before 2026-12-02 used ``--design textured``.

    python benchmarks/demo_learnability.py --loss supervised --steps 300
    python benchmarks/demo_learnability.py --loss simclr --steps 600 --hue 0.5 --design textured --bg-contrast 0.3
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
def demo_design(base: str = demo.DEFAULT_DESIGN, **changes):
    """Register ``demo.DESIGNS["bench"]``: design ``base`` with the ``DemoDesign`` fields in
    ``changes`` (``None`` values ignored), for the ``with`` block; yields its name, to use
    as ``demo?design=bench``."""
    name = "bench"
    demo.DESIGNS[name] = dataclasses.replace(demo.DESIGNS[base],
                                             **{k: v for k, v in changes.items() if v is not None})
    try:
        yield name
    finally:
        demo.DESIGNS.pop(name, None)


def design_options(p: argparse.ArgumentParser) -> None:
    """The data knobs shared with ``demo_dino.py``: unset ones keep the base design's value."""
    p.add_argument("--design", default=demo.DEFAULT_DESIGN, choices=sorted(demo.DESIGNS), help="base demo design")
    p.add_argument("--bg-contrast", type=float, help="texture background contrast (1: as designed)")
    p.add_argument("--bg-noise", type=float, help="largest std of the per-pixel background noise")
    p.add_argument("--textures", type=int, help="texture pool size")
    p.add_argument("--object-min", type=float, help="smallest object diameter, fraction of the side")
    p.add_argument("--object-max", type=float, help="largest object diameter, fraction of the side")
    p.add_argument("--rotation", type=float, help="objects turned uniformly in [-R, R] degrees")


def design_changes(a: argparse.Namespace) -> dict:
    return {"background_contrast": a.bg_contrast, "noise": a.bg_noise, "n_textures": a.textures,
            "object_min": a.object_min, "object_max": a.object_max,
            "rotation": None if a.rotation is None else (-a.rotation, a.rotation)}


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
    design_options(p)
    p.add_argument("--n-train", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    with demo_design(a.design, **design_changes(a)) as design:
        train = open_images(f"demo?n={a.n_train}&design={design}", in_memory=True)
        test = open_images(f"demo:test?n={a.n_test}&design={design}", image_size=train.image_size, in_memory=True)
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
