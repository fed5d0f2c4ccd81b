"""SwAV (thesis 4.2) through the one training loop on a tiny CPU config, plus its pieces:
frozen and unit-norm prototypes, the queue and its per-process split, health, LARS."""
import math
import shutil

import pytest
import torch

from nolabel.backbones import build_backbone
from nolabel.checkpoint import load_checkpoint
from nolabel.config import apply_overrides, load_yaml, new_config
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.methods.swav import Swav, SwavConfig
from nolabel.monitor import code_usage, swav_collapse_warnings
from nolabel.ops.lars import LARS
from nolabel.ops.sinkhorn import sinkhorn_knopp
from nolabel.optim import build_optimizer, set_schedule_values
from nolabel.presets import backbone_kwargs
from nolabel.runlog import MetricsLog
from nolabel.train import train
from tests.train.conftest import TINY

K = 32
# TINY's 64 images, batch 16 (4 steps an epoch), 2 epochs; a small head; a 32-row queue from epoch 1
# (full after 2 steps of epoch 1, so the default queue_use="full" uses it in the last 2).
SWAV = [a for a in TINY if not a.startswith("--dino.")] + [
    "--swav.hidden_dim=64", "--swav.out_dim=16", f"--swav.n_prototypes={K}", "--swav.n_local_views=2",
    "--swav.queue_size=32", "--swav.queue_start_epoch=1"]
PROTOTYPES = "network.prototypes.weight"


def swav_config(out, extra=()):
    cfg = new_config("swav")
    apply_overrides(cfg, SWAV + [f"--run.out={out}", *extra])
    return cfg


def initial_state(out):
    """The method's state before the first step, rebuilt as train() builds it."""
    cfg = load_yaml(out / "config.yaml")
    torch.manual_seed(cfg.run.seed)
    backbone = build_backbone(cfg.model.backbone, image_size=cfg.data.image_size, **backbone_kwargs(cfg))
    shape = RunShape(cfg.data.image_size, cfg.run.epochs, 64)
    return get_method("swav")(cfg.method_config, backbone, shape).state_dict()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-epoch run; the checkpoint written at the end of epoch 1 is kept aside."""
    out = tmp_path_factory.mktemp("swav") / "run"

    def keep_first_epoch(step, logs):
        if step == 4:    # the end-of-epoch-1 checkpoint is written before step 4
            shutil.copy(out / "checkpoint.pt", out.parent / "after_epoch1.pt")

    train(swav_config(out), on_step=keep_first_epoch)
    steps = [r for r in MetricsLog(out).read() if r["type"] == "step"]
    return {"out": out, "steps": steps, "init": initial_state(out),
            "epoch1": load_checkpoint(out.parent / "after_epoch1.pt")["method"],
            "final": load_checkpoint(out / "checkpoint.pt")["method"]}


def test_defaults_follow_the_thesis():
    c = SwavConfig()
    assert (c.n_prototypes, c.temperature, c.sinkhorn_eps, c.sinkhorn_iters) == (3000, 0.1, 0.05, 3)
    assert (c.hidden_dim, c.out_dim, c.queue_size, c.freeze_prototypes_epochs) == (2048, 128, 3840, 1.0)
    assert Swav.default_optim["optimizer"] == "lars"
    assert Swav.default_optim["lr"] * 4096 / 256 == pytest.approx(4.8)
    method = Swav(c, build_backbone("resnet18", image_size=224, width=0.25), RunShape(224, 200, 1000))
    specs = method.view_specs()
    assert [(s.size, s.scale, s.count, s.is_global) for s in specs] == [
        (224, (0.14, 1.0), 2, True), (96, (0.05, 0.14), 6, False)]
    assert method.queue_start_epoch == 15        # 15 of 200 epochs


def test_losses_finite_and_lars_used(run):
    assert len(run["steps"]) == 8
    assert all(math.isfinite(r["loss"]) for r in run["steps"])
    assert load_yaml(run["out"] / "config.yaml").optim.optimizer == "lars"     # LARS through the loop
    assert all(1 <= r["prototypes_used"] <= K and 0 < r["code_usage_entropy"] <= 1 for r in run["steps"])


def test_prototypes_frozen_in_first_epoch_then_move(run):
    init, epoch1, final = run["init"][PROTOTYPES], run["epoch1"][PROTOTYPES], run["final"][PROTOTYPES]
    assert torch.allclose(epoch1, init, atol=1e-6)
    assert torch.allclose(init.norm(dim=1), torch.ones(K), atol=1e-6)
    assert not torch.allclose(final, epoch1, atol=1e-6)


def test_gradients_reach_the_backbone(run):
    key = "network.backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(run["epoch1"][key], run["init"][key])
    assert not torch.equal(run["final"][key], run["epoch1"][key])


def test_queue_fills_from_its_start_epoch_and_is_checkpointed(run):
    # rows joined to Sinkhorn at each step: none in epoch 0; in epoch 1 16 rows are pushed after
    # each step, and the queue joins (all 32 rows) only once full (queue_use="full", the default)
    assert [r["queue_rows"] for r in run["steps"]] == [0, 0, 0, 0, 0, 0, 32, 32]
    for v in range(2):
        assert int(run["epoch1"][f"queues.{v}.filled"]) == 0
        assert int(run["final"][f"queues.{v}.filled"]) == 32
        rows = run["final"][f"queues.{v}.queue"]
        assert torch.allclose(rows.norm(dim=1), torch.ones(32), atol=1e-5)   # l2-normalised projections


def tiny_method(**overrides):
    cfg = SwavConfig(hidden_dim=32, out_dim=8, n_prototypes=K, n_local_views=1, **overrides)
    backbone = build_backbone("vit_tiny", image_size=16, patch_size=8, depth=1, embed_dim=16, num_heads=2)
    return Swav(cfg, backbone, RunShape(16, 2, 64))


def views(batch=4):
    return [torch.randn(batch, 3, 16, 16), torch.randn(batch, 3, 16, 16), torch.randn(batch, 3, 8, 8)]


def test_step_normalises_prototypes_and_sends_gradients_everywhere():
    torch.manual_seed(0)
    method = tiny_method()
    with torch.no_grad():
        method.network.prototypes.weight.mul_(3.0)
    loss, logs = method.training_step(views(), StepInfo(0, 0, 10, 5))
    assert torch.allclose(method.network.prototypes.weight.norm(dim=1), torch.ones(K), atol=1e-6)
    loss.backward()
    assert method.network.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert method.network.prototypes.weight.grad.abs().sum() > 0
    assert method.frozen_parameters(StepInfo(4, 0, 10, 5)) == [method.network.prototypes.weight]
    assert method.frozen_parameters(StepInfo(5, 1, 10, 5)) == []


def test_queue_only_for_batches_smaller_than_the_queue():
    torch.manual_seed(0)
    method = tiny_method(queue_size=4, queue_start_epoch=0)   # batch 4 is not smaller than 4
    _, logs = method.training_step(views(4), StepInfo(0, 0, 10, 5))
    assert len(method.queues[0]) == 0 and logs["queue_rows"] == 0
    method = tiny_method(queue_size=8, queue_start_epoch=1)
    method.training_step(views(4), StepInfo(0, 0, 10, 5))
    assert len(method.queues[0]) == 0                      # before its start epoch
    method.training_step(views(4), StepInfo(5, 1, 10, 5))
    assert len(method.queues[0]) == len(method.queues[1]) == 4


def test_each_process_passes_its_share_of_the_queue(monkeypatch):
    """The queue is the same on every process: process r of W adds only its r-th share
    to Sinkhorn, so the queue counts once over the global batch (ops/sinkhorn.py)."""
    torch.manual_seed(0)
    method = tiny_method(queue_size=10)                 # filled by the 10 rows: used (queue_use="full")
    queued = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    for q in method.queues:
        q.push(queued)
    z = torch.nn.functional.normalize(torch.randn(2 * 3, 8), dim=1)
    scores = (z @ method.network.prototypes.weight.T).view(2, 3, K)
    from nolabel.ops import dist
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    codes, used = method._codes(z, scores, 2, use_queue=True)
    assert used == 10
    share = (queued @ method.network.prototypes.weight.T)[5:]           # rows 5..9: rank 1 of 2
    expected = sinkhorn_knopp(torch.cat([scores[0], share]), 0.05, 3)[:3]
    assert torch.allclose(codes[0], expected, atol=1e-6)


def test_health_warnings():
    log_k = math.log(K)
    assert swav_collapse_warnings(log_k * (1 + 1e-4), log_k, 0.9)         # loss sits at log K
    assert swav_collapse_warnings(log_k + 1.0, log_k, 0.01)               # usage collapsed
    assert swav_collapse_warnings(log_k + 1.0, log_k, 0.9) == []
    same = torch.zeros(6, K)
    same[:, 3] = 1
    assert code_usage(same) == (1, 0.0)
    assert code_usage(torch.eye(6, K)) == (6, pytest.approx(1.0))


def test_lars_groups_from_build_optimizer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer("lars", model, lr=0.1, weight_decay=1e-6)
    assert isinstance(opt, LARS)
    weights, plain = opt.param_groups
    assert weights["lars"] and not weights["no_decay"] and len(weights["params"]) == 1
    assert not plain["lars"] and plain["no_decay"] and len(plain["params"]) == 3
    set_schedule_values(opt, 0.5, 1e-4)
    assert (weights["weight_decay"], plain["weight_decay"], plain["lr"]) == (1e-4, 0.0, 0.5)


def sinkhorn_inputs(monkeypatch, queue_use, steps=5):
    """Run ``steps`` training steps (batch 4, a 12-row queue from epoch 0) and return, per step,
    the rows of the first view's Sinkhorn input and the queue's content before that step."""
    import nolabel.methods.swav as swav_module
    torch.manual_seed(0)
    method = tiny_method(queue_size=12, queue_start_epoch=0, queue_use=queue_use)
    seen = []
    monkeypatch.setattr(swav_module, "sinkhorn_knopp", lambda s, eps, iters, **kw: seen.append(s.clone())
                        or sinkhorn_knopp(s, eps, iters, **kw))
    out = []
    for step in range(steps):
        queued = method.queues[0].features().clone()
        prototypes = method.network.prototypes.weight.detach().clone()
        seen.clear()
        method.training_step(views(4), StepInfo(step, 0, 10, 5))
        out.append((seen[0], queued, prototypes))
    return out


def test_queue_joins_sinkhorn_only_once_full_by_default(monkeypatch):
    """The reference rule (queue_use="full"): no queue rows in Sinkhorn while the queue is
    filling (0, 4, 8 of 12 rows held), all 12 from the step it is full."""
    assert SwavConfig().queue_use == "full"
    steps = sinkhorn_inputs(monkeypatch, "full")
    assert [s.shape[0] for s, _, _ in steps] == [4, 4, 4, 4 + 12, 4 + 12]
    assert [q.shape[0] for _, q, _ in steps] == [0, 4, 8, 12, 12]
    for s, queued, prototypes in steps[3:]:
        torch.testing.assert_close(s[4:], queued @ prototypes.T)   # every queue row, as scored now


def test_queue_filled_rows_option_keeps_the_old_rule(monkeypatch):
    steps = sinkhorn_inputs(monkeypatch, "filled_rows")
    assert [s.shape[0] for s, _, _ in steps] == [4, 4 + 4, 4 + 8, 4 + 12, 4 + 12]
    with pytest.raises(ValueError, match=r"--swav\.queue_use='always': choose from full, filled_rows"):
        tiny_method(queue_use="always")
