"""The attention overlays (issue 17): one colour bar, and every overlay drawn on its scale."""
import matplotlib.pyplot as plt
import torch

from nolabel.evaluate.attention import overlay_figure


def test_overlays_have_a_colour_bar_matching_every_map():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    maps = torch.rand(2, 3, 2, 2) * torch.tensor([1.0, 0.01, 0.3]).view(1, 3, 1, 1)   # (n, heads, h, w)
    fig = overlay_figure(images, maps, None, 8, 0.6, None)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1
    overlays = [im for ax in fig.axes if ax not in bars for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(overlays) == 2 * (3 + 1)                      # heads and their mean, per image
    for im in overlays:                                      # each on the bar's scale, reaching its top
        assert im.get_clim() == (0.0, 1.0)
        assert abs(float(im.get_array().max()) - 1.0) < 1e-6
    plt.close(fig)
