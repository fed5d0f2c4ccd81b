"""``nolabel eval all`` end to end and ``nolabel eval <protocol>`` from the command line."""
from __future__ import annotations

import json

import pytest

from nolabel.cli import main
from nolabel.evaluate.suite import PROTOCOLS
from tests.evaluate.conftest import TEST, TRAIN


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_all_on_a_vit_writes_every_protocol(tiny_vit, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run(["eval", "all", tiny_vit, "--train", TRAIN, "--test", TEST, "--out", str(out),
                             "--fast", "--steps", "2", "--finetune-batch-size", "8"], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert set(report["protocols"]) == set(PROTOCOLS) and report["skipped"] == {}
    p = report["protocols"]
    assert {"top1", "top5", "k"} <= set(p["knn"]) and {"top1", "top5", "lr", "runs"} <= set(p["linear"])
    assert {"top1", "top5", "l2"} <= set(p["logistic"])
    assert {"knn", "logistic", "finetune", "subset"} <= set(p["fewshot"]["1%"]) and "10%" in p["fewshot"]
    assert p["finetune"]["steps"] == 2 and p["fewshot"]["1%"]["finetune"]["steps"] == 2
    assert {"nmi", "ami", "ari", "purity"} <= set(p["clustering"]["k=1x"]) and "k=10x" in p["clustering"]
    assert {"map", "recall@1", "recall@5", "recall@10"} <= set(p["retrieval"])
    assert {"map", "map_whitened"} <= set(p["copydetect"])
    assert {"best_head", "per_head", "head_mean", "oracle"} <= set(p["attention"])
    assert {"png", "perplexity", "pca_dim"} <= set(p["tsne"])
    assert report["fast"] and not report["features"]["train"]["from_cache"]
    for png in ("attention.png", "tsne.png", "clustering_grid.png", "copydetect_examples.png"):
        assert (out / png).stat().st_size > 0
    assert len(list((out / "subsets").glob("*.json"))) == 2
    md = (out / "eval.md").read_text()
    for title in ("k-NN", "linear probe", "logistic regression", "few labels", "fine-tuning", "clustering",
                  "retrieval", "copy detection", "attention maps", "t-SNE"):
        assert f"| {title}" in md
    assert "report:" in stdout
    # a second protocol on the same features starts from the cache
    code, stdout, err = run(["eval", "logistic", tiny_vit, "--train", TRAIN, "--test", TEST, "--out", str(out),
                             "--l2", "1e-4"], capsys)
    assert code == 0, err
    result = json.loads((out / "logistic.json").read_text())
    assert result["top1"] == p["logistic"]["top1"] and "top-1 / top-5" in stdout


def test_eval_all_skips_what_does_not_apply(tiny_resnet, flat_folder, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run(["eval", "all", tiny_resnet, "--train", flat_folder, "--test", TEST, "--out", str(out),
                             "--fast", "--skip", "tsne", "clustering"], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert set(report["protocols"]) == {"copydetect"}
    skipped = report["skipped"]
    assert skipped["tsne"] == skipped["clustering"] == "--skip"
    assert "needs a ViT" in skipped["attention"] and "needs labels" in skipped["linear"]
    assert "attention maps" in (out / "eval.md").read_text() and "skipped: needs a ViT" in stdout


def test_eval_all_on_pixels_skips_finetuning(tmp_path, capsys):
    out = tmp_path / "eval"
    code, _, err = run(["eval", "all", "pixels", "--train", TRAIN, "--test", TEST, "--out", str(out), "--fast",
                        "--skip", "linear", "logistic", "fewshot", "clustering", "copydetect", "tsne"], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert set(report["protocols"]) == {"knn", "retrieval"}
    assert "no weights" in report["skipped"]["finetune"] and "needs a ViT" in report["skipped"]["attention"]


@pytest.mark.parametrize("argv,message", [
    (["eval", "linear", "MODEL", "--train", "FLAT", "--test", TEST], "--train FLAT has no labels"),
    (["eval", "attention", "RESNET", "--test", TEST], "give a ViT model"),
    (["eval", "finetune", "pixels", "--train", TRAIN, "--test", TEST], "pixels has none"),
    (["eval", "linear", "RESNET", "--train", TRAIN, "--test", TEST, "--patch-tokens", "gem"], "--patch-tokens gem"),
    (["eval", "finetune", "RESNET", "--train", TRAIN, "--test", TEST, "--layer-decay", "0.7"], "--layer-decay"),
    (["eval", "all", "RESNET", "--train", TRAIN, "--test", TEST, "--skip", "nosuch"], "--skip nosuch"),
    (["eval", "clustering", "random:vgg", "--test", TEST], "unknown backbone 'vgg'"),
])
def test_wrong_combinations_exit_2_with_the_option(argv, message, tiny_resnet, tiny_vit, flat_folder, tmp_path,
                                                   capsys):
    names = {"MODEL": tiny_vit, "RESNET": tiny_resnet, "FLAT": flat_folder}
    argv = [names.get(a, a) for a in argv] + ["--out", str(tmp_path)]
    message = message.replace("FLAT", flat_folder)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and "nolabel eval: error:" in err
