"""The whole-dataset pass the loop offers to ``Method.on_epoch_start``: every image once,
un-augmented and normalised, in dataset order, without gradient, in eval mode."""
import contextlib
import logging

import torch
from torch import nn

from nolabel.data import open_images
from nolabel.train_setup import unique_first, whole_dataset_pass
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

    data_pass = whole_dataset_pass(method, data, 8, torch.device("cpu"), contextlib.nullcontext(),
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
    data_pass = whole_dataset_pass(nn.Identity(), data, 2, torch.device("cpu"), contextlib.nullcontext(),
                                    0, 1, logging.getLogger("test"))
    assert data_pass.labels is None


def test_unique_first_drops_the_padding_of_shards():
    index = torch.tensor([4, 0, 2, 4, 1, 3, 0])             # 5 images over 2 ranks, wrapped
    values, first = unique_first(index)
    assert values.tolist() == [0, 1, 2, 3, 4]
    assert index[first].tolist() == [0, 1, 2, 3, 4] and first.tolist() == [1, 4, 2, 5, 0]


def _sharded_pass(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as torch_dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        data = open_images("demo?n=21", in_memory=True, progress=False)
        data_pass = whole_dataset_pass(nn.Identity(), data, 4, torch.device("cpu"), contextlib.nullcontext(),
                                       rank, 2, logging.getLogger("test"))
        out, index = data_pass(lambda images: images.mean(dim=(2, 3)))
        torch.save({"out": out, "index": index}, f"{out_dir}/rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def test_two_processes_share_the_pass_and_both_get_every_row(tmp_path):
    """Under torchrun each process maps its shard (21 images over 2: one padded by wrapping
    around) and both end with the one-process result: every image once, in dataset order."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sharded_pass, args=(port, str(tmp_path)), nprocs=2, join=True)
    data = open_images("demo?n=21", in_memory=True, progress=False)
    alone = whole_dataset_pass(nn.Identity(), data, 4, torch.device("cpu"), contextlib.nullcontext(),
                               0, 1, logging.getLogger("test"))(lambda images: images.mean(dim=(2, 3)))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["index"], alone[1]) and torch.equal(got["index"], torch.arange(21))
        assert torch.equal(got["out"], alone[0]), rank
