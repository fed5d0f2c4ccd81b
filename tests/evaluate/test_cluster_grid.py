"""The cluster grid of `nolabel cluster` and `eval clustering` (issue 17): one function, a
title per row with the cluster's id, size and, with labels, its majority class."""
import numpy as np
import torch

from nolabel.evaluate.grid import CAPTION_HEIGHT, cluster_grid, cluster_titles


def test_titles_name_id_size_and_majority_class():
    assignments = np.array([2, 2, 2, 0, 2, 0, 2])
    labels = np.array([1, 1, 0, 0, 1, 0, 1])
    assert cluster_titles([2, 0], assignments, labels, ["cat", "dog"]) == [
        "cluster 2: 5 images, 80% dog", "cluster 0: 2 images, 100% cat"]
    assert cluster_titles([0], assignments, labels, None) == ["cluster 0: 2 images, 100% class 0"]
    assert cluster_titles([2, 0], assignments, None, None) == ["cluster 2: 5 images", "cluster 0: 2 images"]


def test_grid_draws_each_title_above_its_row():
    images = torch.full((3, 3, 8, 8), 255, dtype=torch.uint8)      # white images: only the text is dark
    picks = [np.array([0, 1]), np.array([2])]
    canvas = np.asarray(cluster_grid(images, picks, ["cluster 0: 2 images", "cluster 1: 1 images"], tile=32))
    row_height = CAPTION_HEIGHT + 32 + 2
    assert canvas.shape[0] == 2 * row_height
    for r in range(2):
        strip = canvas[r * row_height: r * row_height + CAPTION_HEIGHT]
        assert (strip < 128).any()                                # the row's title is written there
        assert (canvas[r * row_height + CAPTION_HEIGHT: (r + 1) * row_height] > 128).all()
