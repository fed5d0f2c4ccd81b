"""lightly's own SimCLR, DINO and SwAV on CIFAR-10, for a wall-clock budget: the side of
``gpu_check.py`` that users compare nolabel with (issue 14, part 2).

Everything that makes them lightly's is lightly's: its transforms (``SimCLRTransform``,
``DINOTransform``, ``SwaVTransform``: per-image PIL augmentations in DataLoader workers),
heads (``SimCLRProjectionHead``, ``DINOProjectionHead``, ``SwaVProjectionHead`` +
``SwaVPrototypes``), losses (``NTXentLoss``, ``DINOLoss``, ``SwaVLoss``) and momentum
helpers, with the settings of lightly's CIFAR-10 benchmark (``benchmarks/imagenet``'s
CIFAR sibling as published: batch-size-scaled SGD 0.06 per 128 with momentum 0.9 and
weight decay 5e-4, cosine; colour jitter 0.5, no blur; DINO head 2048-256-2048 with
BatchNorm and teacher momentum 0.996 -> 1; SwAV 512 prototypes). The backbone is
torchvision's ResNet-18 with the CIFAR stem nolabel uses (3x3 stride-1 first conv, no
max-pool), under the same bf16 autocast. k-NN (k=200, T=0.1) runs on the pooled 512-d
features with nolabel's ``knn_classify``, from the training set onto the test set.

Imports lightly and torchvision only when called: ``available()`` says whether they
import here and why not.
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

METHODS = ("simclr", "dino", "swav")


def available() -> str | None:
    """None when lightly and torchvision import; else the reason, in one line."""
    try:
        import lightly.loss  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as e:                     # ImportError, or torchvision's operator errors
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def cifar_resnet18() -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem; ``fc`` dropped: (B, 512) features."""
    import torchvision
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


class _Images(torch.utils.data.Dataset):
    """uint8 (N, 3, S, S) images as PIL images through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy())), int(self.labels[i])


class _Method(nn.Module):
    """One of lightly's three methods: ``loss(views, progress)`` where progress is in [0, 1]."""

    def __init__(self, name: str, image_size: int, width: int):
        super().__init__()
        from lightly import loss as L
        from lightly.models import modules as M
        from lightly import transforms as T
        self.name, self.backbone = name, cifar_resnet18()
        if name == "simclr":
            self.head = M.SimCLRProjectionHead(width, width, 128)
            self.criterion = L.NTXentLoss()
            self.transform = T.SimCLRTransform(input_size=image_size, cj_strength=0.5, gaussian_blur=0.0)
        elif name == "dino":
            self.head = M.DINOProjectionHead(width, 2048, 256, 2048, batch_norm=True)
            # a new head loaded with the student's weights (deepcopy fails on its weight-normed layer)
            self.teacher_backbone = copy.deepcopy(self.backbone)
            self.teacher_head = M.DINOProjectionHead(width, 2048, 256, 2048, batch_norm=True)
            self.teacher_head.load_state_dict(self.head.state_dict())
            for p in [*self.teacher_backbone.parameters(), *self.teacher_head.parameters()]:
                p.requires_grad_(False)
            self.criterion = L.DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=0)
            self.transform = T.DINOTransform(global_crop_size=image_size, n_local_views=0, cj_strength=0.5,
                                             gaussian_blur=(0.0, 0.0, 0.0))
        elif name == "swav":
            self.head = M.SwaVProjectionHead(width, width, 128)
            self.prototypes = M.SwaVPrototypes(128, 512, 1)
            self.criterion = L.SwaVLoss()
            self.transform = T.SwaVTransform(crop_sizes=(image_size,), crop_counts=(2,), crop_min_scales=(0.14,),
                                             crop_max_scales=(1.0,),
                                             cj_strength=0.5, gaussian_blur=0.0)
        else:
            raise ValueError(f"lightly runs know {', '.join(METHODS)}, not {name!r}")

    def loss(self, views: list[torch.Tensor], progress: float, epoch: int) -> torch.Tensor:
        """The networks under the caller's autocast; lightly's loss in float32 (as nolabel's:
        SwaVLoss's Sinkhorn overflows in bf16)."""
        fp32 = torch.autocast(views[0].device.type, enabled=False)
        if self.name == "simclr":
            z = [self.head(self.backbone(v)).float() for v in views[:2]]
            with fp32:
                return self.criterion(z[0], z[1])
        if self.name == "dino":
            from lightly.models.utils import update_momentum
            from lightly.utils.scheduler import cosine_schedule
            m = cosine_schedule(int(progress * 1000), 1000, 0.996, 1.0)
            update_momentum(self.backbone, self.teacher_backbone, m)
            update_momentum(self.head, self.teacher_head, m)
            with torch.no_grad():
                teacher = [self.teacher_head(self.teacher_backbone(v)).float() for v in views[:2]]
            student = [self.head(self.backbone(v)).float() for v in views]
            with fp32:
                return self.criterion(teacher, student, epoch=epoch)
        self.prototypes.normalize()
        outs = [self.prototypes(nn.functional.normalize(self.head(self.backbone(v)), dim=1), epoch).float()
                for v in views]                       # unit projections, as lightly's SwaV example
        with fp32:
            return self.criterion(outs[:2], outs[2:])


def run(name: str, train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
        test_labels: torch.Tensor, budget_s: float, batch_size: int, device: torch.device,
        workers: int, max_steps: int | None = None) -> dict:
    """Train lightly's ``name`` for ``budget_s`` seconds of wall time (the cosine schedule
    planned from the first epoch's speed), then k-NN. Returns the figures gpu_check reports."""
    from nolabel.ops.knn import knn_classify
    torch.manual_seed(0)
    size = train_images.shape[-1]
    method = _Method(name, size, 512).to(device)
    loader = torch.utils.data.DataLoader(_Images(train_images, train_labels, method.transform), batch_size=batch_size,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    params = [p for p in method.parameters() if p.requires_grad]
    lr = 0.06 * batch_size / 128
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    steps_per_epoch = len(loader)
    planned, step, epoch, images = None, 0, 0, 0
    t0 = time.perf_counter()
    while True:
        for views, _ in loader:
            if planned is not None and step >= planned:
                break
            views = [v.to(device, non_blocking=True) for v in views]
            progress = step / planned if planned else 0.0
            for g in optimizer.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
            with autocast:
                loss = method.loss(views, progress, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            images += len(views[0])
            if planned is None and (step == steps_per_epoch or (max_steps and step >= max_steps)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                per_step = (time.perf_counter() - t0) / step     # the first epoch, workers' start included
                planned = max(step, int(budget_s / per_step))
                if max_steps:
                    planned = min(planned, max_steps)
        epoch += 1
        if planned is not None and step >= planned:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    if not math.isfinite(float(loss)):
        raise RuntimeError(f"lightly {name}: the loss is {float(loss)} at step {step}")

    from lightly.transforms.utils import IMAGENET_NORMALIZE
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_NORMALIZE["std"], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def features(images):
        method.backbone.eval()
        out = []
        for i in range(0, len(images), 1024):
            x = (images[i:i + 1024].to(device).float() / 255 - mean) / std
            with autocast:
                out.append(nn.functional.normalize(method.backbone(x).float(), dim=1).cpu())
        return torch.cat(out)

    t1 = time.perf_counter()
    knn = knn_classify(features(train_images), train_labels, features(test_images), test_labels, k=200,
                       temperature=0.1, num_classes=int(train_labels.max()) + 1)
    return {"method": name, "steps": step, "epochs": round(step / steps_per_epoch, 2), "train_seconds": round(train_s, 1),
            "images_per_s": round(images / train_s, 1), "knn_top1_k200": round(knn["top1"], 2),
            "final_loss": round(float(loss), 4), "knn_seconds": round(time.perf_counter() - t1, 1)}
