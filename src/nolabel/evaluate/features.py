"""Feature extraction on frozen models: no augmentation, images at the model's base
size (shorter side resized, centre crop: see ``nolabel.data``), batched. The batched
pass is :func:`nolabel.knn_monitor.dataset_features`, shared with the k-NN curves
logged during training."""
from __future__ import annotations

import torch

from nolabel.data import ImageSet
from nolabel.evaluate.models import FeatureModel
from nolabel.knn_monitor import dataset_features


@torch.no_grad()
def extract_features(model: FeatureModel, data: ImageSet, batch_size: int = 256,
                     device: str | torch.device = "cpu", progress: bool = False,
                     desc: str = "features", patch_tokens: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (features float32 (N, D), labels int64 (N,)) in dataset order, on CPU, of the
    feature kind ``patch_tokens``. Unreadable files are skipped (they are listed in ``data.bad``)."""
    model.to(device)
    return dataset_features(lambda images: model.features(images, patch_tokens), data, batch_size, device,
                            progress, desc)
