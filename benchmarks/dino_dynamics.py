"""DINO's (or SwAV's) early dynamics in a bare loop: does the output sharpen or go uniform?

A diagnostic for the short-run plateau (BENCHMARKS.md, "What holds DINO on the uniform
plateau"): the method's own ``training_step``, AdamW at a constant learning rate, a
constant teacher momentum and temperature, no schedules, no clipping, on the first 256
demo images. ``--views same`` gives both branches the identical un-augmented image, so
every difference between images is view-invariant; ``--views method`` uses the
method's own two global views (DINO: ``view_presets.dino_views``; SwAV: ``view_presets.swav_views``).
Prints one JSON object with, every 20 steps, the loss and for DINO the teacher
entropy and the teacher-student KL (thesis Eq. 5.5); uniform output shows as a DINO
entropy or a SwAV loss at log K.

    python benchmarks/dino_dynamics.py --views same --lr 5e-3 --momentum 0.9
    python benchmarks/dino_dynamics.py --views method --hue 0.5 --lr 1e-3 --momentum 0.99
    python benchmarks/dino_dynamics.py --method swav --backbone vit --views same --out-dim 64 \
        --hidden-dim 64 --bottleneck-dim 16 --batch-size 64 --steps 200
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from nolabel.backbones import build_backbone
from nolabel.data import open_images
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.ops.ema import ema_update
from nolabel.views import MultiCrop, normalize


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=("dino", "swav"), default="dino")
    p.add_argument("--backbone", choices=("resnet", "vit"), default="resnet",
                   help="resnet: the demo's resnet18 x0.25 small stem; vit: a 1-block ViT of width 32")
    p.add_argument("--views", choices=("same", "method"), default="same")
    p.add_argument("--hue", type=float, default=0.1, help="DINO's colour-jitter hue strength")
    p.add_argument("--out-dim", type=int, default=1024, help="K: DINO outputs or SwAV prototypes")
    p.add_argument("--bottleneck-dim", type=int, default=256, help="DINO bottleneck or SwAV projection")
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-3, help="AdamW learning rate (not scaled by the batch)")
    p.add_argument("--momentum", type=float, default=0.9, help="teacher EMA momentum, constant")
    p.add_argument("--teacher-temp", type=float, default=0.04)
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    data = open_images("demo?n=256", in_memory=True, progress=False)
    raw = next(iter(data.batches(len(data), shuffle=False, drop_last=False))).images
    if args.backbone == "vit":
        backbone = build_backbone("vit_tiny", image_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    else:
        backbone = build_backbone("resnet18", image_size=32, width=0.25, small_stem=True)
    cls = get_method(args.method)
    if args.method == "dino":
        cfg = cls.Config(out_dim=args.out_dim, hidden_dim=args.hidden_dim, bottleneck_dim=args.bottleneck_dim,
                         n_local_views=0, freeze_last_layer_epochs=0, momentum_teacher=args.momentum, hue=args.hue)
    else:
        cfg = cls.Config(n_prototypes=args.out_dim, hidden_dim=args.hidden_dim, out_dim=args.bottleneck_dim,
                         n_local_views=0, queue_size=0, freeze_prototypes_epochs=0)
    method = cls(cfg, backbone, RunShape(32, 1, len(data)))
    views_of = MultiCrop(method.view_specs()) if args.views == "method" else None
    opt = torch.optim.AdamW([q for q in method.parameters() if q.requires_grad], lr=args.lr, weight_decay=0.04)
    trace = []
    for step in range(args.steps):
        idx = torch.randint(0, len(data), (args.batch_size,))
        views = views_of(raw[idx]) if views_of else [normalize(raw[idx])] * 2
        info = StepInfo(step, 0, args.steps, args.steps,
                        {"teacher_temp": args.teacher_temp, "teacher_momentum": args.momentum}, index=idx)
        loss, logs = method.training_step(views, info)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for student, teacher in method.ema_pairs():
            ema_update(teacher, student, args.momentum)
        if step % 20 == 0 or step == args.steps - 1:
            trace.append({"step": step, "loss": round(float(loss.detach()), 3),
                          **{k: round(float(logs[k]), 4) for k in ("teacher_entropy", "kl") if k in logs}})
    log_k = math.log(args.out_dim)
    last = trace[-1].get("teacher_entropy", trace[-1]["loss"])
    report = {**vars(args), "log_k": round(log_k, 3), "trace": trace, "last_over_log_k": round(last / log_k, 3)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
