import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nolabel.cli import main
from tests.train.conftest import TINY


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "demo", "--out", "X", "--method", "nosuch"], "valid methods: barlowtwins, byol, deepcluster"),
    (["train", "--data", "demo", "--out", "X", "--backbone", "vgg"], "vgg"),
    (["train", "--data", "/no/such/dir", "--out", "X"], "/no/such/dir"),
    (["train", "--out", "X"], "needs --data"),
    (["train", "--data", "demo", "--out", "X", "--run.nosuch=1"], "valid keys of 'run'"),
    (["train", "--out", "X", "--resume"], "no checkpoint to continue"),
    (["train", "--data", "demo", "--out", "X", "--eval.every=-1"], "--eval.every=-1: must be >= 0"),
    (["train", "--data", "demo?n=20", "--out", "X", "--eval.knn_train=demo", "--eval.knn_test=/no/such"],
     "--eval.knn_test=/no/such"),
    (["eval", "knn", "nothing-here", "--train", "demo", "--test", "demo:test"], "random:<backbone>"),
    (["eval", "knn", "random:vgg", "--train", "demo", "--test", "demo:test"], "unknown backbone 'vgg'"),
    (["eval", "attention", "random:resnet18", "--test", "demo:test?n=8"], "give a ViT model"),
    (["eval", "all", "pixels", "--train", "demo?n=8", "--test", "demo:test?n=8", "--skip", "knn", "nosuch"],
     "--skip nosuch: unknown protocol"),
    (["cluster", "random:resnet18", "--data", "demo?n=8", "--k", "50", "--out", "C"], "--k 50"),
])
def test_errors_name_the_option(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err


def test_unknown_flag_is_rejected(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["train", "--data", "demo", "--out", "X", "--epoch", "3"])
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_train_resume_export_and_knn(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--out", str(out), "--method", "dino"] + TINY
    code, _, err = run(base + ["--run.epochs=1"], capsys)
    assert code == 0, err
    # refuses to overwrite a run
    code, _, err = run(base, capsys)
    assert code == 2 and "--resume" in err
    # resume must not silently change the config
    code, _, err = run(["train", "--out", str(out), "--resume", "--epochs", "5"], capsys)
    assert code == 2 and "run.epochs" in err
    code, _, err = run(["train", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    code, _, err = run(["export", str(out), str(tmp_path / "exp")], capsys)
    assert code == 0, err
    import nolabel
    backbone = nolabel.load_backbone(tmp_path / "exp")
    assert backbone.num_features == 32
    result_file = tmp_path / "knn.json"
    for model in (str(out), str(tmp_path / "exp")):
        code, stdout, err = run(["eval", "knn", model, "--train", "demo?n=100", "--test", "demo:test?n=50",
                                 "--json", str(result_file)], capsys)
        assert code == 0, err
        result = json.loads(result_file.read_text())
        assert {"top1", "top5", "k", "temperature", "n_train", "n_test"} <= set(result)
        assert result["n_train"] == 100 and result["n_test"] == 50 and result["k"] == 20
    # the run folder and its export give the same features, hence the same result
    code, stdout2, _ = run(["eval", "knn", str(out), "--train", "demo?n=100", "--test", "demo:test?n=50"], capsys)
    assert f"top-1 {result['top1']:.2f}%" in stdout2
    code, stdout, _ = run(["eval", "knn", "pixels", "--train", "demo?n=100", "--test", "demo:test?n=50",
                           "--protocol", "lightly"], capsys)
    assert code == 0 and "k=200" in stdout


def test_random_backbone_by_name_is_built_for_the_data_size(capsys):
    code, stdout, err = run(["eval", "knn", "random:resnet18", "--train", "demo?n=40&size=24",
                             "--test", "demo:test?n=20&size=24"], capsys)
    assert code == 0, err
    assert "random:resnet18" in stdout and "(40 train, 20 test)" in stdout


def test_cluster_command_writes_its_files(capsys, tmp_path):
    code, out, _ = run(["cluster", "random:resnet18", "--data", "demo?n=40", "--k", "4",
                        "--out", str(tmp_path / "c")], capsys)
    assert code == 0 and "NMI with the labels" in out
    sizes = json.loads((tmp_path / "c" / "cluster_sizes.json").read_text())
    assert sum(sizes["sizes"]) == 40 and sizes["k"] == 4
    assert len((tmp_path / "c" / "assignments.csv").read_text().splitlines()) == 41   # header + one row an image
    assert (tmp_path / "c" / "clusters.png").is_file()


def test_version(capsys):
    import nolabel
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"nolabel {nolabel.__version__}"


_PROBE = """import sys
from nolabel.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "faiss", "sklearn", "kornia", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["eval", "--help"],
                                  ["eval", "all", "--help"], ["export", "--help"], ["demo", "--help"],
                                  ["report", "--help"]])
def test_help_and_version_answer_without_importing_torch(argv):
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout[-300:]
    assert "usage: nolabel" in done.stdout or done.stdout.startswith("nolabel ")
    assert time.time() - t0 < 30


def test_help_lists_methods_and_backbones_from_the_registries(capsys):
    from nolabel.backbones import backbone_names
    from nolabel.methods import method_names
    from nolabel.names import BACKBONES, METHODS
    assert list(METHODS) == method_names()                  # the static lists the help prints are complete
    assert sorted(BACKBONES) == sorted(backbone_names())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())        # argparse wraps lines
    for name in [*method_names(), *backbone_names()]:
        assert name in text, name


def test_every_option_of_train_export_demo_and_report_has_help():
    from nolabel.cli import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "export", "demo", "report"):
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"


def test_train_on_a_list_file_and_export_torchscript_or_refuse_timm(tmp_path, capsys):
    from PIL import Image

    from nolabel.data import generate_demo
    images = generate_demo("train", n=20, size=32)["images"]
    (tmp_path / "imgs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").save(tmp_path / "imgs" / f"{i}.png")
    listing = tmp_path / "train.csv"
    listing.write_text("path\n" + "".join(f"imgs/{i}.png\n" for i in range(20)) + "imgs/missing.png\n")
    out = tmp_path / "run"
    tiny = [arg for arg in TINY if not arg.startswith("--data.train=")]
    code, _, err = run(["train", "--out", str(out), "--method", "dino", "--data", str(listing),
                        "--run.epochs=1"] + tiny, capsys)
    assert code == 0, err
    from nolabel.runs import BAD_FILES
    assert (out / BAD_FILES).read_text().startswith(f"{tmp_path / 'imgs' / 'missing.png'}\tunreadable")
    code, _, err = run(["export", str(out), str(tmp_path / "timm"), "--format", "timm"], capsys)
    assert code == 2 and "patch_size=8 (timm's is 16)" in err and not (tmp_path / "timm").exists()
    code, stdout, err = run(["export", str(out), str(tmp_path / "ts"), "--format", "torchscript"], capsys)
    assert code == 0, err
    import torch

    import nolabel
    x = torch.randn(2, 3, 32, 32)
    traced = torch.jit.load(str(tmp_path / "ts" / "backbone.pt"))
    code, _, err = run(["export", str(out), str(tmp_path / "st")], capsys)   # default: safetensors
    assert code == 0, err
    with torch.no_grad():
        assert torch.allclose(traced(x), nolabel.load_backbone(tmp_path / "st")(x), atol=1e-5)


# --resume auto: the one command line every restart runs (torchrun --max-restarts N)
def _auto(out, *extra):
    return ["train", "--out", str(out), "--method", "dino", *TINY, "--eval.every=0", "--run.save_every_steps=2",
            *extra, "--resume", "auto"]


def test_resume_auto_is_in_the_help_and_python_m_nolabel_cli_runs(capsys):
    proc = subprocess.run([sys.executable, "-m", "nolabel.cli", "train", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--resume [auto]" in text and "--resume auto:" in text
    with pytest.raises(SystemExit):
        main(["train", "--out", "X", "--resume", "maybe"])
    assert "give --resume alone, or --resume auto" in capsys.readouterr().err


def test_resume_auto_starts_in_an_empty_folder_continues_and_refuses_other_options(tmp_path, capsys):
    from nolabel.checkpoint import load_checkpoint
    from tests.train.test_resume import step_losses

    out = tmp_path / "run"
    out.mkdir()                                               # empty: a new run
    code, _, err = run(_auto(out, "--run.epochs=1"), capsys)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4
    losses = step_losses(out)
    code, _, err = run(_auto(out, "--run.epochs=1"), capsys)   # finished: continued, nothing left to do
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4 and step_losses(out) == losses
    code, _, err = run(_auto(out, "--run.epochs=2", "--seed", "1"), capsys)     # other options: refused
    assert code == 2 and "--resume auto keeps the run's saved config" in err
    assert "these options differ from it: run.epochs, run.seed" in err
    simclr = _auto(out, "--run.epochs=1")
    simclr = [a for a in simclr if not a.startswith("--dino.")]
    simclr[simclr.index("dino")] = "simclr"
    code, _, err = run(simclr, capsys)
    assert code == 2 and f"--method simclr: the run in {out} trains dino" in err
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4 and step_losses(out) == losses   # untouched


def test_resume_may_change_how_a_run_proceeds_but_not_what_it_computes(tmp_path, capsys):
    from nolabel.config import load_yaml

    out = tmp_path / "run"
    code, _, err = run(_auto(out, "--run.epochs=1"), capsys)
    assert code == 0, err
    assert load_yaml(out / "config.yaml").run.threads == 1
    code, _, err = run(_auto(out, "--run.epochs=1", "--run.threads=2", "--run.log_every=3"), capsys)
    assert code == 0, err                                     # taken, and recorded
    saved = load_yaml(out / "config.yaml")
    assert (saved.run.threads, saved.run.log_every) == (2, 3)
    code, _, err = run(_auto(out, "--run.epochs=1", "--run.threads=2", "--optim.lr=1e-3"), capsys)
    assert code == 2 and "these options differ from it: optim.lr. Drop them" in err
    assert "may change only run.threads, run.progress" in err


KILLED_AT_STEP_3 = """
import os, signal, sys
from nolabel.methods.dino import Dino
real = Dino.training_step
def step(self, views, info):
    if info.step == 3:                     # 3 steps done, the checkpoint of step 2 written
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, views, info)
Dino.training_step = step
from nolabel.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_auto_continues_a_killed_run_exactly(tmp_path, capsys):
    from nolabel.checkpoint import load_checkpoint
    from tests.train.test_resume import step_losses

    full, cut = tmp_path / "full", tmp_path / "cut"
    code, _, err = run(_auto(full), capsys)                   # a missing folder: a new run
    assert code == 0, err
    proc = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_3, *_auto(cut)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(cut / "checkpoint.pt")["global_step"] == 2
    code, _, err = run(_auto(cut), capsys)                    # the restart: the same command line
    assert code == 0, err
    resumed, reference = step_losses(cut), step_losses(full)
    assert [s for s, _ in resumed] == [s for s, _ in reference] == list(range(8))
    for (_, a), (_, b) in zip(resumed, reference):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_resume_auto_compares_the_config_file_too(tmp_path, capsys):
    from nolabel.checkpoint import load_checkpoint

    config, out = tmp_path / "config.yaml", tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("--run.epochs=")]
    argv = ["train", "--out", str(out), "--config", str(config), *tiny, "--eval.every=0", "--resume", "auto"]
    config.write_text("run: {epochs: 1, seed: 3}\nmodel: {width: null}\n")   # null: left to the recipe
    for _ in range(2):                                        # starts, then continues the finished run
        code, _, err = run(argv, capsys)
        assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 4
    config.write_text("run: {epochs: 1, seed: 4}\n")
    code, _, err = run(argv, capsys)
    assert code == 2 and "these options differ from it: run.seed" in err
    config.write_text("method: simclr\nrun: {epochs: 1, seed: 3}\n")
    code, _, err = run(argv, capsys)
    assert code == 2 and f"--config {config} (method simclr): the run in {out} trains dino" in err
