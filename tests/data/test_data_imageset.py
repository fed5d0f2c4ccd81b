"""ImageSet: bad files never crash, preload vs streaming, epoch order, resume, sharding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nolabel.data import DataError, ImageSet, open_images, probe_image_size

BAD_NAMES = ["text.jpg", "truncated.jpg", "zero.jpg"]


def _bad_names(image_set: ImageSet) -> list[str]:
    return sorted(location.rsplit("/", 1)[1] for location, _ in image_set.bad)


def _all_batches(image_set: ImageSet, **kwargs) -> list:
    return list(image_set.batches(5, shuffle=False, drop_last=False, **kwargs))


def test_preload_skips_bad_files(labelled_folder: Path) -> None:
    image_set = open_images(str(labelled_folder), image_size=24, progress=False)
    assert image_set.in_memory and len(image_set) == 12
    assert _bad_names(image_set) == BAD_NAMES
    reasons = " ".join(reason for _, reason in image_set.bad)
    assert "empty" in reasons and "truncated" in reasons and "not an image" in reasons
    assert image_set.has_labels and image_set.classes == ["cat", "dog", "emu"]
    assert image_set.labels_tensor().tolist() == [0] * 4 + [1] * 4 + [2] * 4
    batches = _all_batches(image_set)
    assert sum(len(b) for b in batches) == 12 and all(b.bad == [] for b in batches)
    assert batches[0].images.shape == (5, 3, 24, 24) and batches[0].images.dtype == torch.uint8


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_skips_bad_files(labelled_folder: Path, workers: int) -> None:
    image_set = open_images(str(labelled_folder), image_size=24, in_memory=False,
                            num_workers=workers)
    assert not image_set.in_memory and len(image_set) == 15 and image_set.bad == []
    batches = _all_batches(image_set)
    assert sum(len(b) for b in batches) == 12
    assert sorted(name.rsplit("/", 1)[1] for b in batches for name, _ in b.bad) == BAD_NAMES
    assert _bad_names(image_set) == BAD_NAMES
    _all_batches(image_set)  # a second epoch adds no duplicates
    assert len(image_set.bad) == 3
    good = torch.cat([b.index for b in batches])
    assert len(set(good.tolist())) == 12
    preloaded = open_images(str(labelled_folder), image_size=24, progress=False)
    assert torch.equal(torch.cat([b.images for b in batches]),
                       torch.cat([b.images for b in _all_batches(preloaded)]))


def test_streaming_never_yields_empty_batches(labelled_folder: Path) -> None:
    image_set = open_images(str(labelled_folder), image_size=16, in_memory=False)
    batches = list(image_set.batches(1, shuffle=False))
    assert len(batches) == 12 and all(len(b) == 1 for b in batches)
    assert sorted(name.rsplit("/", 1)[1] for b in batches for name, _ in b.bad) == BAD_NAMES


@pytest.mark.parametrize("in_memory", [True, False])
def test_flat_folder_unlabelled(flat_folder: Path, in_memory: bool) -> None:
    image_set = open_images(str(flat_folder), in_memory=in_memory, progress=False)
    assert image_set.classes is None and not image_set.has_labels
    assert image_set.image_size == 32  # median shorter side 36 -> multiple of 8
    batches = _all_batches(image_set)
    assert sum(len(b) for b in batches) == 5
    assert all((b.labels == -1).all() for b in batches)
    assert _bad_names(image_set) == BAD_NAMES


def test_every_file_bad_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken"):
        open_images(str(folder), image_size=16, progress=False)
    with pytest.raises(DataError, match="broken"):
        open_images(str(folder), progress=False)


def test_probe_image_size(labelled_folder: Path) -> None:
    assert probe_image_size(str(labelled_folder)) == 40
    assert probe_image_size("demo:test?n=10&size=40") == 40


@pytest.fixture(scope="module")
def demo_set() -> ImageSet:
    return open_images("demo:test?n=103", progress=False)


def test_shuffled_epochs_are_permutations(demo_set: ImageSet) -> None:
    def order(seed: int, epoch: int) -> list[int]:
        batches = demo_set.batches(10, shuffle=True, seed=seed, epoch=epoch, drop_last=False)
        return torch.cat([b.index for b in batches]).tolist()

    first = order(0, 0)
    assert sorted(first) == list(range(103))
    torch.manual_seed(123)  # global RNG must not matter
    assert order(0, 0) == first
    assert order(0, 1) != first and order(1, 0) != first
    plain = torch.cat([b.index for b in demo_set.batches(10, shuffle=False, drop_last=False)])
    assert plain.tolist() == list(range(103))


@pytest.mark.parametrize("drop_last", [True, False])
def test_start_step_yields_tail(demo_set: ImageSet, drop_last: bool) -> None:
    full = list(demo_set.batches(16, shuffle=True, seed=3, epoch=2, drop_last=drop_last))
    assert len(full) == demo_set.steps_per_epoch(16, drop_last=drop_last)
    tail = list(demo_set.batches(16, shuffle=True, seed=3, epoch=2, start_step=4,
                                 drop_last=drop_last))
    assert len(tail) == len(full) - 4
    for expected, got in zip(full[4:], tail, strict=True):
        assert torch.equal(expected.index, got.index)
        assert torch.equal(expected.images, got.images)
        assert torch.equal(expected.masks, got.masks)


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_are_disjoint_and_equal(demo_set: ImageSet, drop_last: bool) -> None:
    shards = []
    for rank in range(2):
        batches = list(demo_set.batches(8, shuffle=True, seed=1, rank=rank, world_size=2,
                                        drop_last=drop_last))
        assert len(batches) == demo_set.steps_per_epoch(8, drop_last=drop_last, world_size=2)
        shards.append(torch.cat([b.index for b in batches]).tolist())
    assert len(shards[0]) == len(shards[1])
    if drop_last:
        assert not set(shards[0]) & set(shards[1])
    else:  # padded by wrapping around: everything covered, one item repeated
        assert set(shards[0]) | set(shards[1]) == set(range(103))


def test_streaming_start_step_and_sharding(labelled_folder: Path) -> None:
    image_set = open_images(str(labelled_folder), image_size=16, in_memory=False)
    full = list(image_set.batches(4, shuffle=True, seed=5, drop_last=True))
    assert len(full) == image_set.steps_per_epoch(4) == 3
    tail = list(image_set.batches(4, shuffle=True, seed=5, start_step=1, drop_last=True))
    assert [b.index.tolist() for b in tail] == [b.index.tolist() for b in full[1:]]
    ranks = [torch.cat([b.index for b in image_set.batches(3, shuffle=True, rank=r,
                                                             world_size=2)]) for r in (0, 1)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_in_memory_resize_and_masks() -> None:
    image_set = open_images("demo:test?n=20", image_size=48, progress=False)
    batch = next(image_set.batches(20, shuffle=False))
    assert batch.images.shape == (20, 3, 48, 48) and batch.masks.shape == (20, 48, 48)
    assert image_set.has_masks and batch.masks.flatten(1).any(1).all()


def test_streaming_every_file_truncated_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "cut"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        noise = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), "RGB")
        buffer = io.BytesIO()
        noise.save(buffer, "JPEG", quality=95)
        (folder / name).write_bytes(buffer.getvalue()[: buffer.tell() // 2])  # header intact
    image_set = open_images(str(folder), in_memory=False)
    assert image_set.image_size == 40
    with pytest.raises(DataError, match="cut"):
        list(image_set.batches(1, shuffle=False))
