"""List files (.txt / .csv of image paths) as data specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from nolabel.data import DataError, generate_demo, open_images, open_source


@pytest.fixture
def demo_pngs(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    """Six 16x16 demo images saved as PNG (lossless) in tmp_path/imgs/00.png ..."""
    images = generate_demo("test", n=6, size=16)["images"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").save(folder / f"{i:02d}.png")
    return folder, images


def test_txt_list_keeps_order_resolves_paths_and_skips_missing(demo_pngs, tmp_path: Path) -> None:
    folder, images = demo_pngs
    lists = tmp_path / "lists"
    lists.mkdir()
    listing = lists / "train.txt"
    listing.write_text("# my picks\n../imgs/03.png\n\n../imgs/gone.png\n"
                       f"{folder / '01.png'}\n../imgs/05.png\n")
    source = open_source(str(listing))
    assert source.keys == ["../imgs/03.png", "../imgs/gone.png", str(folder / "01.png"),
                           "../imgs/05.png"]
    assert source.labels == [-1] * 4 and source.classes is None
    for in_memory in (True, False):
        image_set = open_images(str(listing), image_size=16, in_memory=in_memory, progress=False)
        batches = list(image_set.batches(8, shuffle=False, drop_last=False))
        got = torch.cat([batch.images for batch in batches])
        assert torch.equal(got, images[[3, 1, 5]])
        bad = [location for location, _ in image_set.bad]
        assert bad == [str(lists / "../imgs/gone.png")]


def test_csv_list_labels_and_flat(demo_pngs, tmp_path: Path) -> None:
    folder, images = demo_pngs
    listing = folder / "labels.csv"
    listing.write_text("label,path\n10,00.png\n2,01.png\n10,02.png\n2,03.png\n")
    source = open_source(str(listing))
    assert source.classes == ["2", "10"]  # integer names sort as numbers
    assert source.labels == [1, 0, 1, 0]
    image_set = open_images(f"{listing}?subset=2", image_size=16, progress=False)
    batch = next(image_set.batches(8, shuffle=False, drop_last=False))
    assert sorted(batch.labels.tolist()) == [0, 1]  # stratified over the list's classes
    flat = open_source(f"flat:{listing}")
    assert flat.classes is None and flat.labels == [-1] * 4
    unlabelled = folder / "paths.csv"
    unlabelled.write_text("path\n04.png\n")
    only = open_images(str(unlabelled), image_size=16, progress=False)
    assert not only.has_labels
    assert torch.equal(next(only.batches(8, shuffle=False, drop_last=False)).images, images[[4]])


@pytest.mark.parametrize("name, text, needle", [
    ("all_missing.txt", "a.png\nsub/b.png\n", "none of the 2 files listed in"),
    ("empty.txt", "# nothing\n\n", "lists no image paths"),
    ("no_path.csv", "file,label\n00.png,a\n", "no 'path' column"),
    ("mixed.csv", "path,label\n00.png,a\n01.png,\n", "row 2 (01.png) has no label"),
])
def test_bad_lists_name_the_list_file(demo_pngs, name: str, text: str, needle: str) -> None:
    folder, _ = demo_pngs
    listing = folder / name
    listing.write_text(text)
    with pytest.raises(DataError) as caught:
        open_source(str(listing))
    assert needle in str(caught.value) and str(listing) in str(caught.value)
