"""Tiny images (issue 17): a file upscaled more than 4x is kept and listed with its size."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nolabel.data import open_images
from nolabel.runs import BAD_FILES
from nolabel.train_setup import report_bad
from tests.data.conftest import random_rgb


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    random_rgb(rng, 32, 32).save(folder / "normal.png")
    random_rgb(rng, 8, 12).save(folder / "four_times.png")     # exactly 4x: not listed
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "dot.png")
    return folder


@pytest.mark.parametrize("in_memory", [True, False])
def test_tiny_image_is_used_and_listed_as_upscaled(tiny_folder: Path, in_memory: bool) -> None:
    data = open_images(str(tiny_folder), image_size=32, in_memory=in_memory)
    seen = sum(len(batch) for batch in data.batches(2, shuffle=False, drop_last=False))
    assert len(data) == 3 and seen == 3 and data.bad == []
    assert data.upscaled == [(str(tiny_folder / "dot.png"), "upscaled from 1x1 (used, not skipped)")]


def test_upscaled_files_go_to_the_list_with_a_reason(tmp_path: Path) -> None:
    log = logging.getLogger("test_upscaled")
    report_bad([("gone.jpg", "empty file")], tmp_path, log, True, upscaled=[("dot.png", "upscaled from 1x1")])
    report_bad([], tmp_path, log, True, upscaled=[("dot.png", "upscaled from 1x1")])      # no duplicate
    assert (tmp_path / BAD_FILES).read_text().splitlines() == ["gone.jpg\tempty file", "dot.png\tupscaled from 1x1"]
