"""open_source: folders, archives, cifar10 python format, spec errors."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nolabel.data import DataError, open_images, open_source
from nolabel.data import cifar10 as cifar_module


def test_labelled_folder_layout(labelled_folder: Path) -> None:
    source = open_source(str(labelled_folder))
    assert source.classes == ["cat", "dog", "emu"]
    assert source.keys == sorted(source.keys)
    assert len(source) == 12 + 3  # good images + bad files with image extensions
    assert not any(".hidden" in key or key.endswith(".txt") for key in source.keys)
    assert source.labels[source.keys.index("dog/01.png")] == 1
    assert source.read(source.keys.index("cat/zero.jpg")) == b""


def test_flat_folder_and_forced_flat(flat_folder: Path, labelled_folder: Path) -> None:
    source = open_source(str(flat_folder))
    assert source.classes is None and set(source.labels) == {-1}
    assert "sub/b.JPG" in source.keys and "sub/deeper/c.png" in source.keys
    assert not any(key.startswith(".cache") for key in source.keys)
    forced = open_source(f"flat:{labelled_folder}")
    assert forced.classes is None and set(forced.labels) == {-1}
    assert forced.keys == open_source(str(labelled_folder)).keys


def _archive(folder: Path, target: Path, mode: str) -> Path:
    with tarfile.open(target, mode) as tar:
        tar.add(folder, arcname="train")
    return target


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_archive_matches_folder(labelled_folder: Path, tmp_path: Path, suffix: str,
                                mode: str) -> None:
    archive = _archive(labelled_folder, tmp_path / f"data{suffix}", mode)
    from_folder = open_source(str(labelled_folder))
    from_archive = open_source(str(archive))
    assert from_archive.keys == from_folder.keys
    assert from_archive.labels == from_folder.labels
    assert from_archive.classes == from_folder.classes
    for i in range(len(from_folder)):
        assert from_archive.read(i) == from_folder.read(i)
    images_folder = open_images(str(labelled_folder), image_size=24, progress=False)
    images_archive = open_images(str(archive), image_size=24, progress=False)
    batch_f = next(images_folder.batches(100, shuffle=False, drop_last=False))
    batch_a = next(images_archive.batches(100, shuffle=False, drop_last=False))
    assert torch.equal(batch_f.images, batch_a.images)
    assert torch.equal(batch_f.labels, batch_a.labels)
    assert sorted(key.rsplit("/", 1)[1] for key, _ in images_archive.bad) == [
        "text.jpg", "truncated.jpg", "zero.jpg"]


def test_tar_source_is_picklable_and_reopens(labelled_folder: Path, tmp_path: Path) -> None:
    archive = _archive(labelled_folder, tmp_path / "data.tar", "w")
    source = open_source(str(archive))
    first = source.read(0)
    clone = pickle.loads(pickle.dumps(source))
    assert clone.read(0) == first and clone._handle is not None


def test_tar_streams_with_worker_processes(labelled_folder: Path, tmp_path: Path) -> None:
    archive = _archive(labelled_folder, tmp_path / "data.tar", "w")
    image_set = open_images(str(archive), image_size=16, in_memory=False, num_workers=2)
    batches = list(image_set.batches(4, shuffle=True, drop_last=False))
    assert sum(len(b) for b in batches) == 12 and len(image_set.bad) == 3


def _fake_cifar(folder: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, handle)
        batches[name] = (data, labels)
    names = [f"class{i}".encode() for i in range(10)]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names}, handle)
    return batches


@pytest.mark.parametrize("nested", [True, False])
def test_fake_cifar10(tmp_path: Path, monkeypatch, nested: bool) -> None:
    monkeypatch.setattr(cifar_module, "fetch_url", _no_network)
    folder = tmp_path / "cifar" / "cifar-10-batches-py" if nested else tmp_path / "cifar"
    batches = _fake_cifar(folder)
    train = open_source(f"cifar10:{tmp_path / 'cifar'}")
    test = open_source(f"cifar10:{tmp_path / 'cifar'}:test")
    assert len(train) == 20 and len(test) == 4
    assert train.classes == [f"class{i}" for i in range(10)]
    data, labels = batches["data_batch_2"]
    assert train.labels[4:8] == labels
    assert torch.equal(train.images[4:8], torch.from_numpy(data).view(4, 3, 32, 32))
    assert test.images.dtype == torch.uint8 and test.images.shape == (4, 3, 32, 32)
    image_set = open_images(f"cifar10:{tmp_path / 'cifar'}:test", image_size=16, progress=False)
    assert image_set.image_size == 16 and image_set.in_memory


def _no_network(url: str, destination: Path, timeout: float = 60.0) -> None:
    raise OSError("[Errno 101] Network is unreachable")


def test_cifar10_offline_raises_data_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cifar_module, "fetch_url", _no_network)
    spec = f"cifar10:{tmp_path / 'nothing'}"
    with pytest.raises(DataError) as info:
        open_source(spec)
    message = str(info.value)
    assert spec in message and "offline" in message and "cifar-10-python.tar.gz" in message


@pytest.mark.parametrize("make_spec, words", [
    (lambda tmp: str(tmp / "missing"), "does not exist"),
    (lambda tmp: str(tmp / "empty"), "no image files"),
    (lambda tmp: "s3x:bucket/images", "unknown scheme"),
    (lambda tmp: str(tmp / "empty.tar"), "no image files"),
    (lambda tmp: str(tmp / "file.bin"), "not a .tar"),
    (lambda tmp: str(tmp / "file.txt"), "none of the 1 files listed in"),
    (lambda tmp: "demo:valid", "demo split"),
    (lambda tmp: "demo?n=abc", "bad demo option"),
    (lambda tmp: "flat:", "needs a folder"),
    (lambda tmp: "cifar10:", "needs a directory"),
])
def test_bad_specs_raise_data_error(tmp_path: Path, make_spec, words: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with tarfile.open(tmp_path / "empty.tar", "w") as tar:
        tar.add(tmp_path / "empty", arcname="top")
    (tmp_path / "file.txt").write_text("hello")
    (tmp_path / "file.bin").write_text("hello")
    spec = make_spec(tmp_path)
    with pytest.raises(DataError) as info:
        open_images(spec, progress=False)
    assert repr(spec) in str(info.value) and words in str(info.value)
    assert "accepted data specs" in str(info.value)
