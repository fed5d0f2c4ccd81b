"""Per-method parameter groups (issue 13, part 3): a method gives parts of its network their
own optimizer rule (SimSiam's predictor keeps the base lr, its paper's rule), and a part a
method re-initialises starts with a fresh optimizer state (DeepCluster's classifier, as
the original code rebuilt its optimizer)."""
import pytest
import torch
from torch import nn

from nolabel.config import apply_overrides, new_config
from nolabel.optim import build_optimizer, param_groups, set_schedule_values
from nolabel.train import run_epoch
from nolabel.train_setup import build_run
from nolabel.runlog import Progress
from tests.train.conftest import TINY

GENERAL = [o for o in TINY if not o.startswith("--dino.")]   # 64 demo images, batch 16: 4 steps an epoch


class _NoStop:
    signal = None


def _run(tmp_path, method, extra=()):
    cfg = apply_overrides(new_config(method), [*GENERAL, f"--run.out={tmp_path / method}", *extra])
    return build_run(cfg, resume=False)


def test_groups_follow_the_rules_by_name_prefix():
    net = nn.ModuleDict({"backbone": nn.Linear(3, 4), "predictor": nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))})
    groups = param_groups(net.named_parameters(), {"predictor": {"fixed_lr": True}})
    names = {id(p): n for n, p in net.named_parameters()}
    assert [[names[id(p)] for p in g["params"]] for g in groups] == [
        ["backbone.weight"], ["backbone.bias"], ["predictor.0.weight"], ["predictor.0.bias", "predictor.1.weight",
                                                                          "predictor.1.bias"]]
    assert [bool(g.get("fixed_lr")) for g in groups] == [False, False, True, True]
    assert [bool(g.get("no_decay")) for g in groups] == [False, True, False, True]
    # without rules: the two groups of before, in the same order (old checkpoints still load)
    plain = param_groups(net.named_parameters())
    assert len(plain) == 2 and len(plain[0]["params"]) == 2 and len(plain[1]["params"]) == 4 and plain[1]["no_decay"]
    with pytest.raises(ValueError, match="unknown parameter-group option.*fixed_lr"):
        param_groups(net.named_parameters(), {"predictor": {"fixed_learning_rate": True}})


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "lars"])
def test_a_fixed_lr_group_keeps_the_base_lr(optimizer):
    net = nn.ModuleDict({"backbone": nn.Linear(3, 4), "predictor": nn.Linear(4, 4)})
    net.param_group_rules = lambda: {"predictor": {"fixed_lr": True}}
    opt = build_optimizer(optimizer, net, lr=0.1, weight_decay=1e-4)
    set_schedule_values(opt, lr=0.003, weight_decay=1e-4)
    assert [g["lr"] for g in opt.param_groups] == [0.003, 0.003, 0.1, 0.1]


def test_simsiam_predictor_lr_is_not_decayed(tmp_path):
    run = _run(tmp_path, "simsiam", ["--simsiam.proj_hidden_dim=64", "--simsiam.out_dim=16",
                                     "--simsiam.pred_hidden_dim=8"])
    predictor = {id(p) for p in run.method.predictor.parameters()}
    seen = []

    def on_step(step, record):
        for g in run.optimizer.param_groups:
            in_predictor = {id(p) for p in g["params"]} <= predictor and len(g["params"]) > 0
            seen.append((step, in_predictor, g["lr"], record["lr"]))

    progress = Progress(False, run.total_steps)
    while run.epoch < run.cfg.run.epochs:
        run_epoch(run, progress, _NoStop(), on_step)
    base = run.cfg.optim.lr * run.cfg.run.batch_size / 256
    assert {lr for _, pred, lr, _ in seen if pred} == {base}
    scheduled = [(lr, sched) for _, pred, lr, sched in seen if not pred]
    assert all(lr == sched for lr, sched in scheduled) and scheduled[-1][0] < base   # cosine decayed


def test_deepcluster_classifier_starts_each_clustering_with_a_fresh_optimizer_state(tmp_path):
    run = _run(tmp_path, "deepcluster", ["--deepcluster.n_clusters=4", "--optim.weight_decay=0",
                                         "--optim.weight_decay_end=0"])
    weight = run.method.classifier.weight
    checks = []

    def on_step(step, record):
        if step == run.steps_per_epoch:          # the first step after the second clustering
            buffer = run.optimizer.state[weight]["momentum_buffer"]
            # SGD's first step from an empty state: the buffer is the gradient itself; with the
            # previous classifier's momentum kept it would be 0.9 * old buffer + gradient
            checks.append(torch.equal(buffer, weight.grad))

    progress = Progress(False, run.total_steps)
    run_epoch(run, progress, _NoStop(), on_step)
    assert len(run.optimizer.state[weight]["momentum_buffer"]) > 0 and weight.grad is not None
    assert not torch.equal(run.optimizer.state[weight]["momentum_buffer"], weight.grad)   # momentum built up
    run_epoch(run, progress, _NoStop(), on_step)
    assert checks == [True]
