"""``nolabel eval all`` end to end and ``nolabel eval <protocol>`` from the command line.

``eval all`` must give each protocol's own result: every value it reports is checked
against the same protocol run alone (``nolabel eval <name>``) on the same model and data,
so an option lost or mixed up on the way (a --fast schedule, a seed, the wrong features)
fails here.
"""
from __future__ import annotations

import json

import pytest

from nolabel.cli import main
from nolabel.evaluate.protocols import protocol_names
from tests.evaluate.conftest import TEST, TRAIN


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def alone(argv, out, capsys) -> dict:
    """The result of ``nolabel eval <argv> --out out`` (read back from <out>/<name>.json)."""
    code, _, err = run(["eval", *argv, "--out", str(out)], capsys)
    assert code == 0, err
    return json.loads((out / f"{argv[0]}.json").read_text())


def test_eval_all_on_a_vit_equals_each_protocol_alone(tiny_vit, tmp_path, capsys, monkeypatch):
    from nolabel.evaluate import context

    extracted, real = [], context.extract_features
    monkeypatch.setattr(context, "extract_features", lambda model, data, *a, **k: extracted.append(data.spec)
                        or real(model, data, *a, **k))
    out = tmp_path / "eval"
    code, stdout, err = run(["eval", "all", tiny_vit, "--train", TRAIN, "--test", TEST, "--out", str(out),
                             "--fast", "--steps", "2", "--finetune-batch-size", "8"], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    assert list(report["protocols"]) == protocol_names() and report["skipped"] == {}
    p = report["protocols"]
    data = [tiny_vit, "--train", TRAIN, "--test", TEST]
    single = tmp_path / "single"      # same cache, another folder for the results
    cache = ["--cache", str(out / "cache")]

    knn = alone(["knn", *data, *cache], single, capsys)
    assert (p["knn"]["top1"], p["knn"]["top5"], p["knn"]["k"]) == (knn["top1"], knn["top5"], 20)
    linear = alone(["linear", *data, *cache, "--epochs", "20", "--lrs", "0.03", "0.3"], single, capsys)
    assert (p["linear"]["top1"], p["linear"]["lr"]) == (linear["top1"], linear["lr"])
    logistic = alone(["logistic", *data, *cache, "--l2", "1e-4"], single, capsys)
    assert p["logistic"]["top1"] == logistic["top1"]
    fewshot = alone(["fewshot", *data, *cache, "--subsets", str(out / "subsets"), "--steps", "2",
                     "--finetune-batch-size", "8"], single, capsys)
    for key in ("1%", "10%"):
        assert fewshot[key]["reused"] and fewshot[key]["n"] == p["fewshot"][key]["n"]
        for part in ("knn", "logistic", "finetune"):
            assert p["fewshot"][key][part]["top1"] == fewshot[key][part]["top1"], (key, part)
    finetune = alone(["finetune", *data, *cache, "--steps", "2", "--finetune-batch-size", "8"], single, capsys)
    assert p["finetune"]["steps"] == 2 and p["finetune"]["top1"] == finetune["top1"]
    clustering = alone(["clustering", *data, *cache], single, capsys)
    assert p["clustering"]["k=1x"] == clustering["k=1x"] and p["clustering"]["k=10x"] == clustering["k=10x"]
    retrieval = alone(["retrieval", *data, *cache], single, capsys)
    assert p["retrieval"]["map"] == retrieval["map"] and p["retrieval"]["recall@5"] == retrieval["recall@5"]
    copydetect = alone(["copydetect", *data, *cache, "--originals", "30", "--copies", "1", "--distractors", "2000",
                        "--whiten", "2000"], single, capsys)
    assert (p["copydetect"]["map"], p["copydetect"]["map_whitened"]) == (copydetect["map"], copydetect["map_whitened"])
    attention = alone(["attention", *data, *cache, "--max-images", "100"], single, capsys)
    assert p["attention"]["per_head"] == attention["per_head"] and p["attention"]["best_head"] == attention["best_head"]
    tsne = alone(["tsne", *data, *cache, "--iterations", "500"], single, capsys)
    assert p["tsne"]["perplexity"] == tsne["perplexity"] and p["tsne"]["classes"] == tsne["classes"]

    assert extracted == [TRAIN, TEST]     # features extracted once per split, for all and for every single run
    assert report["fast"] and not report["features"]["train"]["from_cache"]
    for png in ("attention.png", "tsne.png", "clustering_grid.png", "copydetect_examples.png"):
        assert (out / png).stat().st_size > 0
    assert len(list((out / "subsets").glob("*.json"))) == 2
    md = (out / "eval.md").read_text()
    assert f"| k-NN | k=20, T=0.07 | top-1 / top-5 | {knn['top1']:.2f} % / {knn['top5']:.2f} % |" in md
    for name in protocol_names():
        assert f"{p[name]['seconds']:.1f}" in md
    # the estimate printed first covers the protocols that train or embed images, and is kept
    assert "estimated time (the model): " in stdout and "fine-tuning ~" in stdout
    assert report["estimates"]["model"]["finetune"] > 0 and report["estimates"]["model"]["knn"] is None
    assert "report:" in stdout and f"{knn['top1']:.2f} %" in stdout


def test_eval_all_baselines_are_the_same_protocols_on_random_init_and_pixels(tiny_vit, tmp_path, capsys):
    out = tmp_path / "eval"
    skip = ["linear", "logistic", "fewshot", "clustering", "copydetect"]
    code, stdout, err = run(["eval", "all", tiny_vit, "--train", TRAIN, "--test", TEST, "--out", str(out), "--fast",
                             "--baselines", "--steps", "2", "--finetune-batch-size", "8", "--skip", *skip], capsys)
    assert code == 0, err
    report = json.loads((out / "eval.json").read_text())
    random, pixels = report["baselines"]["random"], report["baselines"]["pixels"]
    assert random["model"] == f"random:{tiny_vit}" and pixels["model"] == "pixels"
    assert set(random["protocols"]) == {"knn", "finetune", "retrieval", "attention"}   # no t-SNE figure
    assert set(pixels["protocols"]) == {"knn", "retrieval"}
    assert "no weights" in pixels["skipped"]["finetune"] and "needs a ViT" in pixels["skipped"]["attention"]
    assert pixels["features"]["train"]["dim"] == 3 * 32 * 32        # the model's image size
    for spec, section in ((f"random:{tiny_vit}", random), ("pixels", pixels)):
        knn = alone(["knn", spec, "--train", TRAIN, "--test", TEST], tmp_path / spec.split(":")[0], capsys)
        assert section["protocols"]["knn"]["top1"] == knn["top1"], spec
    assert random["features"]["train"]["cache_file"] != report["features"]["train"]["cache_file"]
    md = (out / "eval.md").read_text()
    assert "| protocol | setting | metric | value | random init | raw pixels | seconds |" in md
    assert "weights drawn with torch's seed 0" in md                 # which random network it was
    knn_row = next(line for line in md.splitlines() if line.startswith("| k-NN |"))
    cells = [c.strip() for c in knn_row.strip("|").split("|")]
    top = lambda r: f"{r['top1']:.2f} % / {r['top5']:.2f} %"    # noqa: E731
    assert cells[3:6] == [top(report["protocols"]["knn"]), top(random["protocols"]["knn"]),
                          top(pixels["protocols"]["knn"])]
    ft_row = next(line for line in md.splitlines() if line.startswith("| fine-tuning |"))
    assert "| n/a |" in ft_row
    assert (out / "baselines" / "random" / "attention.png").is_file() and "raw pixels:" in stdout


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


def test_eval_knn_without_out_writes_nothing(tiny_resnet, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(["eval", "knn", tiny_resnet, "--train", TRAIN, "--test", TEST, "--protocol", "lightly",
                             "--json", "r.json"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["k_asked"], result["k"], result["temperature"]) == (200, 64, 0.1)   # k <= training images
    assert "k=200 (64 used), T=0.1" in stdout
    assert "(64 train, 32 test)" in stdout


@pytest.mark.parametrize("argv,message", [
    (["eval", "linear", "MODEL", "--train", "FLAT", "--test", TEST], "--train FLAT has no labels"),
    (["eval", "attention", "RESNET", "--test", TEST], "give a ViT model"),
    (["eval", "finetune", "pixels", "--train", TRAIN, "--test", TEST], "pixels has none"),
    (["eval", "linear", "RESNET", "--train", TRAIN, "--test", TEST, "--patch-tokens", "gem"], "--patch-tokens gem"),
    (["eval", "finetune", "RESNET", "--train", TRAIN, "--test", TEST, "--layer-decay", "0.7"], "--layer-decay"),
    (["eval", "all", "RESNET", "--train", TRAIN, "--test", TEST, "--skip", "nosuch"], "--skip nosuch"),
    (["eval", "clustering", "random:vgg", "--test", TEST], "unknown backbone 'vgg'"),
    (["eval", "knn", "RESNET", "--train", TRAIN, "--test", TEST, "--k", "0"], "--k 0: the number of neighbours"),
    (["eval", "knn", "RESNET", "--train", TRAIN, "--test", TEST, "--temperature", "0"], "--temperature 0"),
])
def test_wrong_combinations_exit_2_with_the_option(argv, message, tiny_resnet, tiny_vit, flat_folder, tmp_path,
                                                   capsys):
    names = {"MODEL": tiny_vit, "RESNET": tiny_resnet, "FLAT": flat_folder}
    argv = [names.get(a, a) for a in argv] + ["--out", str(tmp_path)]
    message = message.replace("FLAT", flat_folder)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err and "nolabel eval: error:" in err
