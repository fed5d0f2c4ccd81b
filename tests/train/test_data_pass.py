"""The whole-dataset pass the loop offers to ``Method.on_epoch_start``: every image once,
un-augmented and normalised, in dataset order, without gradient, in eval mode."""
import contextlib
import logging

import torch
from torch import nn

from nolabel.data import open_images
from nolabel.train import _unique_first, _whole_dataset_pass
from nolabel.views import normalize


def test_pass_maps_every_image_in_dataset_order():
    data = open_images("demo?n=20", in_memory=True, progress=False)
    method = nn.Sequential(nn.BatchNorm1d(3))
    method.train()
    seen = {}

    def fn(images):
        seen["grad"] = torch.is_grad_enabled()
        seen["training"] = method.training
        return images.mean(dim=(2, 3))                        # (b, 3)

    data_pass = _whole_dataset_pass(method, data, 8, torch.device("cpu"), contextlib.nullcontext(),
                                    0, 1, logging.getLogger("test"))
    out, index = data_pass(fn)                                # 20 images in batches of 8, 8, 4
    images = next(iter(data.batches(20, shuffle=False, drop_last=False))).images
    assert torch.equal(index, torch.arange(20))
    assert torch.allclose(out, normalize(images).mean(dim=(2, 3)), atol=1e-6)
    assert seen == {"grad": False, "training": False} and method.training
    assert torch.equal(data_pass.labels, data.labels_tensor()) and int(data_pass.labels.min()) >= 0


def test_pass_has_no_labels_for_an_unlabelled_source(tmp_path):
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    data = open_images(str(tmp_path), in_memory=True, progress=False)
    data_pass = _whole_dataset_pass(nn.Identity(), data, 2, torch.device("cpu"), contextlib.nullcontext(),
                                    0, 1, logging.getLogger("test"))
    assert data_pass.labels is None


def test_unique_first_drops_the_padding_of_shards():
    index = torch.tensor([4, 0, 2, 4, 1, 3, 0])             # 5 images over 2 ranks, wrapped
    values, first = _unique_first(index)
    assert values.tolist() == [0, 1, 2, 3, 4]
    assert index[first].tolist() == [0, 1, 2, 3, 4] and first.tolist() == [1, 4, 2, 5, 0]
