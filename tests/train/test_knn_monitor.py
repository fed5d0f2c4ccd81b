"""k-NN learning curves during training (--eval.*): the logged values are those of
`nolabel eval knn` on the same weights and data; the default held-out slice; off
switches; unlabelled data; exact resume with the curves on."""
import json
import logging
from collections import Counter

import pytest
from PIL import Image

from nolabel.cli import main
from nolabel.config import ConfigError, apply_overrides, new_config
from nolabel.data import generate_demo, open_images
from nolabel.data.subset import heldout_split
from nolabel.knn_monitor import KnnMonitor, check_eval_config, heldout_sizes
from nolabel.runlog import MetricsLog
from nolabel.train import train

BANK, TEST = "demo:train?n=60", "demo:test?n=30"   # the bank capped to 40 images: demo:train?n=60?subset=40


def knn_records(run_dir):
    return [r for r in MetricsLog(run_dir).read() if r["type"] == "knn"]


def test_logged_knn_equals_nolabel_eval_knn(tiny_config, tmp_path, capsys):
    out = train(tiny_config(extra=["--run.epochs=1", f"--eval.knn_train={BANK}", f"--eval.knn_test={TEST}",
                                   "--eval.bank_size=40"]))
    (record,) = knn_records(out)
    assert record["epoch"] == 0 and record["step"] == 3 and (record["n_bank"], record["n_test"]) == (40, 30)
    for protocol, k in (("thesis", 20), ("lightly", 200)):
        result = tmp_path / f"{protocol}.json"
        assert main(["eval", "knn", str(out), "--train", f"{BANK}?subset=40", "--test", TEST, "--protocol", protocol,
                     "--device", "cpu", "--json", str(result)]) == 0
        expected = json.loads(result.read_text())
        assert record[f"knn_top1_k{k}"] == pytest.approx(expected["top1"], abs=1e-9), protocol
        assert record[f"knn_top5_k{k}"] == pytest.approx(expected["top5"], abs=1e-9), protocol
    log = (out / "train.log").read_text()
    assert "40 bank and 30 test images at 32 px" in log and "epoch 1: k-NN top-1" in log
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()


def test_default_heldout_slice_is_stratified_seeded_and_disjoint():
    labels = generate_demo("train", n=500)["labels"].tolist()
    n_bank, n_test = heldout_sizes(len(labels), 5000, 1000)
    assert (n_bank, n_test) == (200, 50)             # at most 40% and 10% of the training images
    assert heldout_sizes(50_000, 5000, 1000) == (5000, 1000)
    bank, test = heldout_split(labels, n_bank, n_test)
    assert (len(bank), len(test)) == (200, 50) and not set(bank) & set(test)
    assert heldout_split(labels, n_bank, n_test) == (bank, test)               # seeded
    assert heldout_split(labels, n_bank, n_test, seed=1) != (bank, test)
    whole = Counter(labels)
    for part, n in ((bank, n_bank), (test, n_test)):                          # class proportions kept
        counts = Counter(labels[i] for i in part)
        for c, total in whole.items():
            assert abs(counts[c] - total * n / len(labels)) <= 1, (c, counts[c])
    # what a run gets: those two slices of its own training images, decoded once
    data = open_images("demo?n=500", progress=False)
    cfg = apply_overrides(new_config(), ["--data.train=demo?n=500"])
    monitor = KnnMonitor.create(cfg, data, logging.getLogger("test"), main=True)
    assert monitor.enabled and monitor.bank.in_memory and monitor.test.in_memory
    assert monitor.test.keys == [data.keys[i] for i in test] and monitor.bank.keys == [data.keys[i] for i in bank]


def test_when_due():
    monitor = KnnMonitor(every=2, batch_size=8, main=True)
    assert [e for e in range(1, 6) if monitor.due(e, 5)] == [2, 4, 5]       # and always after the last epoch
    assert not any(KnnMonitor(every=0, batch_size=8, main=True).due(e, 5) for e in range(1, 6))


def test_every_zero_disables(tiny_config):
    out = train(tiny_config(extra=["--run.epochs=1", "--eval.every=0"]))
    assert knn_records(out) == []
    assert "k-NN curves off (--eval.every=0)" in (out / "train.log").read_text()


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """32 unlabelled 32-px PNGs."""
    folder = tmp_path_factory.mktemp("flat")
    for i, image in enumerate(generate_demo("train", n=32)["images"]):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


def test_unlabelled_data_logs_no_knn(tiny_config, flat_folder):
    out = train(tiny_config(extra=["--run.epochs=1", f"--data.train=flat:{flat_folder}"]))
    assert knn_records(out) == []
    assert (out / "train.log").read_text().count("no k-NN curves: ") == 1


@pytest.mark.parametrize("overrides,message", [
    (["--eval.every=-1"], "--eval.every=-1: must be >= 0"),
    (["--eval.bank_size=0"], "--eval.bank_size=0"),
    (["--eval.knn_train=demo"], "--eval.knn_train is set but --eval.knn_test is not"),
])
def test_bad_values_are_refused_before_anything_is_opened(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_eval_config(apply_overrides(new_config(), overrides))


def test_missing_or_unlabelled_spec_is_refused_naming_the_option(tiny_config, tmp_path, flat_folder):
    with pytest.raises(ConfigError, match=r"--eval.knn_test=/no/such/dir: .*does not exist"):
        train(tiny_config(extra=["--eval.knn_train=demo:test?n=20", "--eval.knn_test=/no/such/dir"]))
    with pytest.raises(ConfigError, match=r"--eval.knn_train=flat:.*: k-NN needs labelled data"):
        train(tiny_config(extra=[f"--eval.knn_train=flat:{flat_folder}", "--eval.knn_test=demo:test?n=20"]))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_config_section_round_trip(tmp_path):
    from nolabel.config import load_yaml, save_yaml
    cfg = apply_overrides(new_config(), ["--eval.every=2", "--eval.knn_train=demo", "--eval.knn_test=demo:test"])
    save_yaml(cfg, tmp_path / "c.yaml")
    again = load_yaml(tmp_path / "c.yaml")
    assert (again.eval.every, again.eval.knn_train, again.eval.knn_test) == (2, "demo", "demo:test")
