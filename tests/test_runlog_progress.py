"""The training progress bar (issue 17): a slow run's rate is readable, not "0 img/s"."""
from nolabel.runlog import Progress


def postfix_after(images_per_s):
    progress = Progress(enabled=True, total_steps=10)
    progress.start_epoch(0, 1, 10, 0)
    progress.update(1, 1.0, 1e-3, images_per_s)
    text = progress.bar.postfix
    progress.close()
    return text


def test_rate_has_one_decimal_below_ten_images_per_second():
    assert "0.3 img/s" in postfix_after(0.3)
    assert "9.5 img/s" in postfix_after(9.46)
    assert "123 img/s" in postfix_after(123.4)
