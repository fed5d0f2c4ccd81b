"""The protocol registry: complete, consistent with the static names the help prints,
and open to a new protocol declared in one place."""
from __future__ import annotations

import json

import pytest

from nolabel.cli import build_parser, main
from nolabel.evaluate import protocols as registry
from nolabel.evaluate.finetune import EPOCHS, MIN_STEPS, STEP_BUDGET, planned_steps
from nolabel.evaluate.protocols import Protocol, get_protocol, protocol_names
from tests.evaluate.conftest import TEST, TRAIN


def test_static_names_match_the_registry():
    from nolabel.evaluate.protocols.knn import SETTINGS
    from nolabel.names import EVAL_PROTOCOLS
    from nolabel.ops.knn import KNN_PROTOCOLS

    assert list(EVAL_PROTOCOLS) == protocol_names()       # `eval all` order, help without torch
    assert list(SETTINGS) == list(KNN_PROTOCOLS)


def test_every_protocol_is_a_subcommand_whose_options_have_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    evals = next(a for a in commands["eval"]._actions if a.dest == "eval_command").choices
    assert set(evals) == {"all", *protocol_names()}
    for name, sub in evals.items():
        for action in sub._actions:
            assert action.help, f"eval {name} {action.option_strings or action.dest}: no help text"


def test_every_protocol_declares_what_the_report_needs():
    for name in protocol_names():
        p = get_protocol(name)
        assert p.title and p.help and set(p.data) == {"train", "test"}
        assert set(p.data.values()) <= {registry.LABELS, registry.IMAGES, registry.UNUSED}


@pytest.mark.parametrize("n,steps", [(1, MIN_STEPS), (40, 13), (4000, STEP_BUDGET)])
def test_finetuning_steps_follow_the_labelled_images(n, steps):
    assert planned_steps(n, 32) == steps
    assert planned_steps(32 * STEP_BUDGET // EPOCHS, 32) == STEP_BUDGET   # exactly the budget's epochs


def test_a_protocol_declared_in_one_place_runs_in_eval_all_and_alone(tiny_resnet, tmp_path, capsys, monkeypatch):
    class Mean(Protocol):
        name, order, title = "meanfeat", 95, "mean feature"
        help = "the mean of the test features"
        data = {"train": registry.UNUSED, "test": registry.IMAGES}
        seeded = False

        def add_options(self, p):
            p.add_argument("--scale", type=float, default=1.0, help="multiply by this")

        def options(self, args):
            return {"scale": args.scale}

        def run(self, ctx, scale: float = 1.0):
            return {"mean": scale * float(ctx.features("test").x.mean()), "seconds": 0.0}

        def rows(self, r):
            return [("", "mean", f"{r['mean']:.6f}")]

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(Mean)
    out = tmp_path / "eval"
    skip = [n for n in protocol_names() if n != "meanfeat"]
    code = main(["eval", "all", tiny_resnet, "--train", TRAIN, "--test", TEST, "--out", str(out), "--skip", *skip])
    assert code == 0, capsys.readouterr().err
    mean = json.loads((out / "eval.json").read_text())["protocols"]["meanfeat"]["mean"]
    assert f"| mean feature |  | mean | {mean:.6f} |" in (out / "eval.md").read_text()
    code = main(["eval", "meanfeat", tiny_resnet, "--test", TEST, "--out", str(out), "--scale", "2"])
    assert code == 0 and json.loads((out / "meanfeat.json").read_text())["mean"] == pytest.approx(2 * mean)


def test_declared_needs_give_the_reasons_to_skip(resnet_ctx, tiny_resnet, flat_folder, tmp_path):
    from nolabel.evaluate.context import EvalContext

    class NeedsMasks(Protocol):
        name, title = "needsmasks", "needs masks"
        data = {"train": registry.UNUSED, "test": registry.IMAGES}
        masks = "required"

    flat = EvalContext(tiny_resnet, None, flat_folder, out=tmp_path, progress=False)
    assert NeedsMasks().why_not(resnet_ctx) is None                  # demo images carry object masks
    assert NeedsMasks().why_not(flat) == f"needs object masks; --test {flat_folder} has none"
    assert get_protocol("knn").why_not(flat) == "needs --train"
    assert get_protocol("clustering").why_not(flat) == f"needs labels; --test {flat_folder} has none"
    assert get_protocol("copydetect").why_not(flat) == "needs --train"
    assert get_protocol("attention").why_not(resnet_ctx).startswith("needs a ViT")
    assert get_protocol("finetune").why_not(resnet_ctx) is None
