"""metrics.png as a new user reads it (issue 17, "Figures and progress"): labelled
y-axes, log K on the teacher-entropy panel, epochs from 1, a one-epoch run drawn by
step, and a flat curve shown flat."""
import json
import math

import matplotlib.pyplot as plt
import pytest

from nolabel.runlog import metrics_figure, plot_metrics


def write_run(tmp_path, n_epochs, steps_per_epoch=5, entropy=lambda s: 6.9 + 1e-4 * (s % 3)):
    records = []
    step = 0
    for epoch in range(n_epochs):
        for _ in range(steps_per_epoch):
            records.append({"type": "step", "epoch": epoch, "step": step, "loss": 6.93 - 1e-4 * (step % 2),
                            "lr": 1e-3, "teacher_entropy": entropy(step), "kl": 0.01})
            step += 1
        records.append({"type": "epoch", "epoch": epoch, "step": step - 1, "loss": 6.93,
                        "teacher_entropy": entropy(step), "kl": 0.01})
        records.append({"type": "knn", "epoch": epoch, "step": step - 1, "knn_top1_k20": 20.0 + epoch,
                        "knn_top1_k200": 19.0 + epoch})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "config.yaml").write_text("method: dino\ndino:\n  out_dim: 1024\n")
    return tmp_path


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_every_panel_has_a_y_label_and_log_k_is_drawn(tmp_path):
    fig = metrics_figure(write_run(tmp_path, n_epochs=4))
    axes = fig.axes
    assert all(ax.get_ylabel() for ax in axes), [ax.get_title() for ax in axes if not ax.get_ylabel()]
    entropy_ax = next(ax for ax in axes if ax.get_title() == "teacher_entropy")
    levels = [line.get_ydata()[0] for line in entropy_ax.get_lines() if len(set(line.get_ydata())) == 1]
    assert any(abs(y - math.log(1024)) < 1e-9 for y in levels)


def test_epochs_are_numbered_from_one(tmp_path):
    fig = metrics_figure(write_run(tmp_path, n_epochs=4))
    knn_ax = next(ax for ax in fig.axes if ax.get_title() == "k-NN top-1")
    assert knn_ax.get_xlabel() == "epoch"
    assert list(knn_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    kl_ax = next(ax for ax in fig.axes if ax.get_title() == "kl")
    assert list(kl_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]


def test_a_one_epoch_run_is_drawn_by_step(tmp_path):
    fig = metrics_figure(write_run(tmp_path, n_epochs=1))
    kl_ax = next(ax for ax in fig.axes if ax.get_title() == "kl")
    assert kl_ax.get_xlabel() == "step" and len(kl_ax.get_lines()[0].get_xdata()) == 5


def test_a_flat_curve_is_not_stretched_to_its_fourth_digit(tmp_path):
    fig = metrics_figure(write_run(tmp_path, n_epochs=4))
    loss_ax = next(ax for ax in fig.axes if ax.get_title() == "loss")
    lo, hi = loss_ax.get_ylim()
    assert hi - lo >= 0.02 * 6.93 * 0.99            # noise of 1e-4 drawn inside a 2% band
    fig.canvas.draw()
    assert loss_ax.yaxis.get_offset_text().get_text() == ""


def test_plot_metrics_writes_a_png(tmp_path):
    out = plot_metrics(write_run(tmp_path, n_epochs=2))
    assert out.read_bytes()[:4] == b"\x89PNG"
