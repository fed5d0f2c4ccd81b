"""Feature extraction on frozen models: no augmentation, images at the model's base
size (shorter side resized, centre crop: see ``nolabel.data``), batched."""
from __future__ import annotations

import torch

from nolabel.data import ImageSet
from nolabel.evaluate.models import FeatureModel


@torch.no_grad()
def extract_features(model: FeatureModel, data: ImageSet, batch_size: int = 256,
                     device: str | torch.device = "cpu", progress: bool = False,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (features float32 (N, D), labels int64 (N,)) in dataset order, on CPU.
    Unreadable files are skipped (they are listed in ``data.bad``)."""
    model.to(device)
    feats, labels = [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(data), desc=desc, leave=False, dynamic_ncols=True)
    for batch in data.batches(batch_size, shuffle=False, drop_last=False):
        feats.append(model.features(batch.images.to(device)).float().cpu())
        labels.append(batch.labels)
        if bar is not None:
            bar.update(len(batch.labels))
    if bar is not None:
        bar.close()
    if not feats:
        raise ValueError(f"{data.spec}: no readable images to extract features from")
    return torch.cat(feats), torch.cat(labels)
