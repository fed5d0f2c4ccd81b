"""Every registered method through the real training loop on a tiny CPU config, plus
the peer methods' (SimCLR, MoCo v2, BYOL, SimSiam, Barlow Twins, VICReg) own checks.

The sweep runs each method once (2 epochs of 4 steps, 64 demo images, a 1-block ViT)
and checks: finite losses in metrics.jsonl, gradients in the backbone and its weights
changed after the first steps, EMA teachers moved, and that k-NN evaluation loads the
run folder's encoder. A method this file does not know gets its ``*_dim`` fields
shrunk and 2 local views, so a new method is covered without editing this file.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import nolabel.train as train_module
import nolabel.train_setup as train_setup
from nolabel.backbones import build_backbone
from nolabel.checkpoint import CHECKPOINT, load_checkpoint
from nolabel.config import apply_overrides, new_config
from nolabel.evaluate.context import EvalContext
from nolabel.evaluate.knn import knn_protocol
from nolabel.evaluate.models import FeatureModel
from nolabel.losses.contrastive import info_nce, nt_xent
from nolabel.losses.regression import negative_cosine, normalized_mse
from nolabel.methods import RunShape, StepInfo, get_method, method_names
from nolabel.methods._siamese import view_pairs
from nolabel.methods.base import per_view
from nolabel.view_presets import LOCAL_SCALE
from nolabel.ops.knn import knn_classify
from nolabel.runlog import MetricsLog
from nolabel.views import MultiCrop, local_size
from tests.train.conftest import TINY

PEERS = ("simclr", "mocov2", "byol", "simsiam", "barlowtwins", "vicreg")
GENERAL = [o for o in TINY if not o.startswith("--dino.")]
# Tiny heads for the method under test only (sections of other methods do not exist).
SECTIONS = {
    "dino": [o[len("--dino."):] for o in TINY if o.startswith("--dino.")],
    "simclr": ["hidden_dim=64", "out_dim=16", "n_local_views=2"],
    "mocov2": ["hidden_dim=64", "out_dim=16", "queue_size=32", "n_local_views=2", "symmetric=true"],
    "byol": ["proj_hidden_dim=64", "out_dim=16", "pred_hidden_dim=64", "n_local_views=2"],
    "simsiam": ["proj_hidden_dim=64", "out_dim=16", "pred_hidden_dim=8", "n_local_views=2"],
    "barlowtwins": ["proj_dim=64", "n_local_views=2"],
    "vicreg": ["proj_dim=64", "n_local_views=2"],
}


def section(name: str) -> list[str]:
    if name in SECTIONS:
        return SECTIONS[name]
    out = []
    for f in dataclasses.fields(get_method(name).Config):
        if f.name.endswith("_dim"):
            out.append(f"{f.name}=32")
        elif f.name in ("n_prototypes", "n_local_views"):
            out.append(f"{f.name}={16 if f.name == 'n_prototypes' else 2}")
    return out


def tiny_backbone():
    return build_backbone("vit_tiny", image_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)


def build(name: str, **overrides):
    cls = get_method(name)
    cfg = new_config(name)
    apply_overrides(cfg, [f"--{name}.{o}" for o in section(name)] +
                    [f"--{name}.{k}={v}" for k, v in overrides.items()])
    return cls(cfg.method_config, tiny_backbone(), RunShape(image_size=32, epochs=2, n_images=64))


@dataclasses.dataclass
class Run:
    out: Path
    steps: list[dict]
    grad_norms: dict[int, float]          # step -> summed |grad| over the backbone
    backbone_changed: dict[int, bool]     # step -> backbone weights differ from their init
    teachers_moved: bool | None           # None: the method has no EMA pair
    encoder: torch.nn.Module              # copy of method.encoder() after training (the loop's k-NN monitor's)
    encoder_init: dict                    # its state dict before the first step


@pytest.fixture(scope="module")
def run_method(tmp_path_factory):
    """Train ``name`` on the tiny config once per module; keep what the checks need."""
    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name in runs:
            return runs[name]
        seen: dict = {}
        original_backbone, original_optimizer = train_setup.build_backbone, train_setup.build_optimizer

        def spy_backbone(*args, **kwargs):
            seen["built"] = original_backbone(*args, **kwargs)
            return seen["built"]

        def spy_optimizer(opt_name, method, *args, **kwargs):
            # the backbone the method trains: the loop's, unless the method replaced it
            # (DeepCluster rebuilds it with a Sobel input; then the encoder is the trained one)
            kept = any(m is seen["built"] for m in method.modules())
            seen["backbone"] = seen["built"] if kept else method.encoder()
            seen["init"] = {k: v.clone() for k, v in seen["backbone"].state_dict().items()}
            seen["teachers"] = [(t, [p.detach().clone() for p in t.parameters()]) for _, t in method.ema_pairs()]
            seen["method"] = method
            seen["encoder_init"] = {k: v.clone() for k, v in method.encoder().state_dict().items()}
            return original_optimizer(opt_name, method, *args, **kwargs)

        grad_norms, changed = {}, {}

        def on_step(step, record):
            if step > 1:
                return
            params = list(seen["backbone"].parameters())
            grad_norms[step] = sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
            changed[step] = any(not torch.equal(v, seen["init"][k])
                                for k, v in seen["backbone"].state_dict().items() if v.is_floating_point())

        cfg = new_config(name)
        out = tmp_path_factory.mktemp(name) / "run"
        apply_overrides(cfg, GENERAL + [f"--run.out={out}"] + [f"--{name}.{o}" for o in section(name)])
        train_setup.build_backbone, train_setup.build_optimizer = spy_backbone, spy_optimizer
        try:
            train_module.train(cfg, on_step=on_step)
        finally:
            train_setup.build_backbone, train_setup.build_optimizer = original_backbone, original_optimizer
        moved = None
        if seen["teachers"]:
            moved = all(any(not torch.equal(p, p0) for p, p0 in zip(t.parameters(), init))
                        for t, init in seen["teachers"])
        steps = [r for r in MetricsLog(out).read() if r["type"] == "step"]
        # taken now, through the class's encoder_prefix as the loop saw it (a test may patch it later)
        encoder = copy.deepcopy(seen["method"].encoder()).eval()
        runs[name] = Run(out, steps, grad_norms, changed, moved, encoder, seen["encoder_init"])
        return runs[name]

    return run


# ----------------------------------------------------------------------------- registry sweep


@pytest.mark.parametrize("name", method_names())
def test_method_trains_through_the_loop(name, run_method):
    run = run_method(name)
    assert len(run.steps) == 8                                       # 2 epochs x 4 steps, log_every 1
    assert all(math.isfinite(r["loss"]) for r in run.steps)
    # gradients reach the backbone: some within the first two steps (MoCo's first step has
    # an empty queue and a loss of 0), and its weights have moved by then
    assert max(run.grad_norms.values()) > 0
    assert run.backbone_changed[1]
    if run.teachers_moved is not None:
        assert run.teachers_moved
    saved = yaml.safe_load((run.out / "config.yaml").read_text())
    assert saved["method"] == name and name in saved
    # every value the method derived from the data (K, cluster counts, temperatures...) is saved
    assert [k for k, v in saved[name].items() if v is None] == []


@pytest.mark.parametrize("name", method_names())
def test_knn_evaluation_loads_the_run_encoder(name, run_method):
    run = run_method(name)
    result = knn_protocol(str(run.out), "demo?n=64", "demo:test?n=32", device="cpu", progress=False)
    assert result["feature_dim"] == 32 and result["n_test"] == 32
    assert 0.0 <= result["top1"] <= 100.0
    # The features k-NN classifies (the run folder's encoder, loaded from the checkpoint under
    # the method's encoder_prefix) are those of the encoder the loop trained: method.encoder()
    # at the end of training, computed here directly on the same images; and not those of its
    # initial weights (a prefix naming an untrained part of the method would give those).
    ctx = EvalContext(str(run.out), "demo?n=64", "demo:test?n=32", out=None, device="cpu", progress=False)
    trained = FeatureModel("trained", run.encoder, ctx.image_size)
    initial = FeatureModel("initial", copy.deepcopy(run.encoder), ctx.image_size)
    initial.network.load_state_dict(run.encoder_init)
    for role in ("train", "test"):
        evaluated = ctx.features(role, "knn")
        images, _ = ctx.gather(role, range(len(evaluated.x)))          # dataset order, as extracted
        want = trained.features(images)
        assert evaluated.x.shape == want.shape
        assert torch.allclose(evaluated.x, want, rtol=1e-4, atol=1e-5), \
            f"{role}: max difference {(evaluated.x - want).abs().max():.3g}"
        # (DINO's teacher at momentum 0.996 moves little in 8 steps: its features differ from
        # the initial ones by about 6e-4, far more than from the trained encoder's)
        off_trained = float((evaluated.x - want).abs().max())
        off_initial = float((evaluated.x - initial.features(images)).abs().max())
        assert off_initial > max(10 * off_trained, 1e-4), (role, off_initial, off_trained)
    # and the reported accuracy is the k-NN of those features
    train, test = ctx.features("train", "knn"), ctx.features("test", "knn")
    again = knn_classify(trained.features(ctx.gather("train", range(len(train.x)))[0]), train.y,
                         trained.features(ctx.gather("test", range(len(test.x)))[0]), test.y,
                         k=20, temperature=0.07, num_classes=ctx.num_classes("train", "test"))
    assert (again["top1"], again["top5"]) == (result["top1"], result["top5"])


@pytest.mark.parametrize("name", PEERS)
def test_peer_logs_loss_terms_and_embedding_spread(name, run_method):
    run = run_method(name)
    expected = {"simclr": {"positive_cos"}, "mocov2": {"negatives"}, "byol": {"cos", "teacher_momentum"},
                "simsiam": set(), "barlowtwins": {"on_diag", "off_diag"},
                "vicreg": {"invariance", "variance", "covariance"}}[name]
    for record in run.steps:
        assert expected | {"emb_std", "z_std"} <= set(record)
        assert 0.0 < record["emb_std"] < 1.0 and 0.0 < record["z_std"] < 1.0
    assert (run.teachers_moved is not None) == (name in ("mocov2", "byol"))


# ----------------------------------------------------------------------------- method specifics


def test_mocov2_queue_fills_and_is_checkpointed(run_method):
    run = run_method("mocov2")                                      # queue of 32, batch 16
    assert [r["negatives"] for r in run.steps[:4]] == [0, 16, 32, 32]
    assert run.steps[0]["loss"] == 0.0                              # no negatives yet
    state = load_checkpoint(run.out / CHECKPOINT)["method"]
    assert state["queue.queue"].shape == (32, 16)
    assert int(state["queue.filled"]) == 32
    assert bool((state["queue.queue"].norm(dim=1) > 0).all())
    assert all(r["teacher_momentum"] == 0.999 for r in run.steps)


def test_mocov2_default_queue_size():
    from nolabel.methods.mocov2 import default_queue_size
    assert [default_queue_size(n) for n in (1_281_167, 50_000, 4000, 64, 5)] == [65536, 4096, 256, 4, 1]
    assert len(build("mocov2", queue_size="null").queue.queue) == 4          # 64 images


def test_byol_momentum_schedule_boundaries(run_method):
    schedule = build("byol").schedules(total_steps=100, steps_per_epoch=10)["teacher_momentum"]
    assert schedule(0) == pytest.approx(0.996)
    assert schedule(50) == pytest.approx(0.998)
    assert schedule(100) == 1.0 and schedule(500) == 1.0
    values = [schedule(s) for s in range(101)]
    assert values == sorted(values)
    logged = [r["teacher_momentum"] for r in run_method("byol").steps]
    assert logged[0] == pytest.approx(0.996) and logged == sorted(logged) and logged[-1] < 1.0


def test_peers_are_registered():
    assert set(PEERS) <= set(method_names())


def test_view_pairs():
    assert view_pairs(2, ordered=True) == [(0, 1), (1, 0)]
    assert view_pairs(2, ordered=False) == [(0, 1)]
    assert view_pairs(4, ordered=True) == [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    assert view_pairs(4, ordered=False) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert view_pairs(3, ordered=True, n_targets=1) == [(0, 1), (0, 2)]
    with pytest.raises(ValueError):
        view_pairs(1, ordered=True)


@pytest.mark.parametrize("name", PEERS)
def test_view_presets(name):
    specs = build(name, n_local_views=0).view_specs()
    assert [s.is_global for s in specs] == [True, True] and all(s.size == 32 for s in specs)
    specs = build(name, n_local_views=3).view_specs()
    assert [(s.is_global, s.count, s.size) for s in specs] == [(True, 1, 32), (True, 1, 32), (False, 3, local_size(32))]
    assert specs[2].scale == LOCAL_SCALE and specs[2].solarize == 0.0
    assert MultiCrop(specs).n_views == 5
    big = get_method(name)(build(name).cfg, tiny_backbone(), RunShape(image_size=64, epochs=1, n_images=64))
    g1, g2 = big.view_specs()[:2]
    if name in ("simclr", "mocov2", "simsiam"):                     # symmetric blur, no solarisation
        assert (g1.blur, g2.blur, g1.solarize, g2.solarize) == (0.5, 0.5, 0.0, 0.0)
    else:                                                           # BYOL's asymmetric views
        assert (g1.blur, g2.blur, g1.solarize, g2.solarize) == (1.0, 0.1, 0.0, 0.2)
    if name == "simclr":                                            # colour strength 0.5 below 96 px
        assert g1.jitter_strength == pytest.approx((0.4, 0.4, 0.4, 0.1))


def _two_view_formula(name, m, views):
    """The paper's two-view loss, written from the method's submodules."""
    feats, z = m.student(views)
    if name == "simclr":
        return nt_xent(z[0], z[1], m.temperature)
    p = per_view(m.predictor, z, 2)
    if name == "simsiam":
        return 0.5 * negative_cosine(p[0], z[1]) + 0.5 * negative_cosine(p[1], z[0])
    if name == "byol":
        t = m.teacher(views)[1]
        return normalized_mse(p[0], t[1]) + normalized_mse(p[1], t[0])
    return None


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam"])
def test_two_view_loss_is_the_papers(name):
    torch.manual_seed(0)
    m = build(name, n_local_views=0)
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    loss, _ = m.training_step(views, StepInfo(0, 0, 10, 5, {"teacher_momentum": 0.99}))
    assert loss.item() == pytest.approx(_two_view_formula(name, m, views).item(), rel=1e-5)


@pytest.mark.parametrize("symmetric", [False, True])
def test_mocov2_loss_is_infonce_against_the_queue(symmetric):
    torch.manual_seed(0)
    m = build("mocov2", n_local_views=0, symmetric=symmetric)
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)]
    m.queue.push(torch.randn(5, m.cfg.out_dim))
    negatives = m.queue.features().clone()
    loss, logs = m.training_step(views, StepInfo(0, 0, 10, 5, {"teacher_momentum": 0.999}))
    with torch.no_grad():
        k = m.teacher(views)[1]
        q = m.student(views)[1]
    want = info_nce(q[1], k[0], negatives, 0.2)
    if symmetric:
        want = 0.5 * (want + info_nce(q[0], k[1], negatives, 0.2))
    assert logs["negatives"] == 5
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(m.queue.features()[5:], k[0])          # the first view's keys were enqueued


def test_simsiam_without_stop_gradient_collapses(tmp_path):
    """Chen and He 2021, Fig. 2: without the stop-gradient the loss falls toward -1 and the
    std of the l2-normalised projections toward 0; with it, the std stays near 1/sqrt(d).
    On the textured demo design: on the flat-background one the collapse takes longer than
    these 24 steps (z std 0.120 without the stop-gradient against 0.122 with it)."""
    final = {}
    for stop in ("true", "false"):
        cfg = new_config("simsiam")
        apply_overrides(cfg, GENERAL + [
            f"--run.out={tmp_path / stop}", "--data.train=demo?n=128&design=textured", "--run.batch_size=32", "--run.epochs=6",
            "--run.log_every=1000", "--optim.lr=4.0", f"--simsiam.stop_gradient={stop}",
            "--simsiam.proj_hidden_dim=64", "--simsiam.out_dim=64", "--simsiam.pred_hidden_dim=16"])
        out = train_module.train(cfg)
        final[stop] = [r for r in MetricsLog(out).read() if r["type"] == "epoch"][-1]
    healthy = 1 / math.sqrt(64)
    assert final["true"]["z_std"] > 0.9 * healthy
    assert final["false"]["z_std"] < 0.8 * final["true"]["z_std"]
    assert final["false"]["loss"] < final["true"]["loss"] - 0.2


def test_health_warns_on_collapse():
    for name in PEERS:
        m = build(name)
        assert m.health({"emb_std": 0.03, "z_std": 0.1}) == []
        assert any("collapse" in w for w in m.health({"emb_std": 1e-5, "z_std": 1e-6}))
    assert any("variance" in w for w in build("vicreg").health({"variance": 1.95}))


def test_cli_trains_simclr(tmp_path):
    exe = shutil.which("nolabel") or str(Path(sys.executable).parent / "nolabel")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "train", "--method", "simclr", "--data", "demo?n=64", "--out", "X",
                           "--run.epochs=1", "--run.batch_size=32", "--run.progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "X" / CHECKPOINT).is_file()
    saved = yaml.safe_load((tmp_path / "X" / "config.yaml").read_text())
    assert saved["method"] == "simclr" and saved["simclr"]["n_local_views"] == 0
    assert saved["optim"]["optimizer"] == "adamw"


def test_resolve_writes_the_chosen_default_back_and_keeps_a_users_value():
    from nolabel.backbones import build_backbone
    from nolabel.methods import RunShape, get_method
    cls = get_method("deepcluster")
    backbone = lambda: build_backbone("resnet18", image_size=32, width=0.125, small_stem=True)  # noqa: E731
    unset = cls.Config(sobel=False)
    assert cls(unset, backbone(), RunShape(image_size=32, epochs=1, n_images=500)).n_clusters == 50
    assert unset.n_clusters == 50                       # min(10000, 500 // 10), now in the config
    chosen = cls.Config(sobel=False, n_clusters=7)
    assert cls(chosen, backbone(), RunShape(image_size=32, epochs=1, n_images=500)).n_clusters == 7
    assert chosen.n_clusters == 7


def test_simclr_hue_defaults_to_the_papers_and_reaches_the_views():
    from nolabel.backbones import build_backbone
    from nolabel.methods import RunShape, get_method
    cls = get_method("simclr")
    shape = RunShape(image_size=32, epochs=1, n_images=100)
    default = cls(cls.Config(), build_backbone("resnet18", image_size=32, width=0.125, small_stem=True), shape)
    assert default.cfg.hue == pytest.approx(0.2 * 0.5)              # 0.2 s, s = 0.5 below 96 px
    assert [v.jitter_strength for v in default.view_specs()] == [(0.4, 0.4, 0.4, pytest.approx(0.1))] * 2
    turned = cls(cls.Config(hue=0.5), build_backbone("resnet18", image_size=32, width=0.125, small_stem=True), shape)
    assert all(v.jitter_strength[3] == 0.5 for v in turned.view_specs())
