"""DeepCluster, RotNet, DeeperCluster and DeepCluster-v2 (thesis 2.2.3, 3.2-3.3, 4.4): a few
CPU steps through the one training loop, pseudo-labels on every image, gradients into the
backbone, the classifier reset, exact resume, and the Sobel input layer."""
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from nolabel.backbones import build_backbone
from nolabel.backbones.sobel import Sobel
from nolabel.checkpoint import load_checkpoint
from nolabel.config import apply_overrides, new_config
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.methods._clustering import cluster, default_k
from nolabel.methods.rotnet import rotate4
from nolabel.runlog import MetricsLog
from nolabel.train import TrainingInterrupted, train
from tests.train.conftest import TINY

N = 64
BASE = [a for a in TINY if not a.startswith("--dino.")]      # 64 demo images, 2 epochs of 4 steps
EXTRA = {
    "deepcluster": ["--deepcluster.n_clusters=4"],
    "rotnet": [],
    "deepercluster": ["--deepercluster.n_super=2", "--deepercluster.n_sub=3", "--deepercluster.reassign_every=1"],
    "deepclusterv2": ["--deepclusterv2.hidden_dim=32", "--deepclusterv2.out_dim=16",
                      "--deepclusterv2.n_prototypes=4", "--deepclusterv2.n_heads=2",
                      "--deepclusterv2.n_local_views=1"],
}


def config(name, out, extra=()):
    cfg = new_config(name)
    apply_overrides(cfg, BASE + EXTRA[name] + [f"--run.out={out}", *extra])
    return cfg


def step_records(out):
    return [r for r in MetricsLog(out).read() if r["type"] == "step"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clustering")
    return {name: train(config(name, root / name)) for name in EXTRA}


@pytest.mark.parametrize("name", list(EXTRA))
def test_loop_runs_with_finite_loss(runs, name):
    records = step_records(runs[name])
    assert len(records) == 8 and all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.parametrize("name,buffers", [("deepcluster", ["labels"]), ("deepercluster", ["super_labels", "sub_labels"]),
                                          ("deepclusterv2", ["labels"])])
def test_pseudo_labels_cover_every_image(runs, name, buffers):
    state = load_checkpoint(runs[name] / "checkpoint.pt")["method"]
    for key in buffers:
        assert state[key].shape[-1] == N and int(state[key].min()) >= 0, key
    assert int(state["label_epoch"]) == 1
    records = step_records(runs[name])
    if name != "deepclusterv2":
        assert records[0]["nmi_previous"] == -1 and 0 <= records[-1]["nmi_previous"] <= 1
    assert all(0 <= r["nmi_labels"] <= 1 for r in records)       # demo is labelled (Fig. 3.3a)


def tiny_backbone(**kw):
    return build_backbone("vit_tiny", image_size=16, patch_size=8, depth=1, embed_dim=16, num_heads=2, **kw)


def build(name, **cfg_kw):
    cls = get_method(name)
    torch.manual_seed(0)
    return cls(cls.Config(**cfg_kw), tiny_backbone(), RunShape(16, 2, 32))


def fake_pass(method, images, labels=None):
    def data_pass(fn):
        method.eval()
        with torch.no_grad():
            out = fn(images)
        method.train()
        return out.float(), torch.arange(len(images))
    data_pass.labels = labels
    return data_pass


@pytest.mark.parametrize("name,kw,key", [("deepcluster", {"n_clusters": 2}, "nmi_labels"),
                                         ("deepercluster", {"n_super": 2, "n_sub": 2, "pca_dim": 2}, "nmi_labels"),
                                         ("deepclusterv2", {"hidden_dim": 16, "out_dim": 8, "n_prototypes": 2,
                                                            "n_local_views": 0}, "nmi_labels"),
                                         ("sela", {"hidden_dim": 16, "out_dim": 8, "n_prototypes": 2,
                                                   "n_local_views": 0}, "nmi_labels")])
def test_nmi_with_labels_is_logged_when_the_data_has_labels(name, kw, key):
    """Fig. 3.3a: two well-separated groups of images; NMI of the clusters with labels that
    follow the groups is 1, with labels that cut across them 0, and -1 without labels. (DeeperCluster
    keeps 2 PCA dimensions: whitened, the 16 noise dimensions weigh as much as the groups' one,
    and its two-level k-means could settle on a split along noise.)"""
    method = build(name, **kw)
    images = torch.cat([torch.full((16, 3, 16, 16), -2.0), torch.full((16, 3, 16, 16), 2.0)])
    images = images + 0.01 * torch.randn_like(images)
    views = [images[:8]] + ([images[:8]] if name in ("deepclusterv2", "sela") else [])
    found = {}
    for case, labels in (("groups", torch.arange(32) // 16), ("across", torch.arange(32) % 2), ("none", None)):
        method.on_epoch_start(0, fake_pass(method, images, labels))
        _, logs = method.training_step(views, StepInfo(0, 0, 10, 5, index=torch.arange(8)))
        found[case] = logs[key]
    assert found["none"] == -1
    if name != "sela":     # Sinkhorn labels of a random head need not follow the two groups
        assert found["groups"] == pytest.approx(1.0, abs=1e-6)
        assert found["across"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert 0 <= found["across"] <= found["groups"] <= 1 + 1e-9


@pytest.mark.parametrize("name,kw", [("deepcluster", {"n_clusters": 3}), ("rotnet", {}),
                                     ("deepercluster", {"n_super": 2, "n_sub": 2}),
                                     ("deepclusterv2", {"hidden_dim": 16, "out_dim": 8, "n_prototypes": 3,
                                                        "n_local_views": 0})])
def test_backbone_gets_gradients(name, kw):
    method = build(name, **kw)
    images = torch.randn(32, 3, 16, 16)
    method.on_epoch_start(0, fake_pass(method, images))
    views = [images[:8]] + ([images[:8]] if name == "deepclusterv2" else [])
    loss, logs = method.training_step(views, StepInfo(0, 0, 10, 5, index=torch.arange(8)))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in method.encoder().parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_deepcluster_classifier_reset_and_balanced_weights():
    method = build("deepcluster", n_clusters=3)
    assert method.backbone.spec["sobel"] is True and isinstance(method.backbone.sobel, Sobel)
    images = torch.randn(32, 3, 16, 16)
    method.on_epoch_start(0, fake_pass(method, images))
    first = method.classifier.weight.detach().clone()
    with torch.no_grad():
        method.classifier.weight.add_(1.0)
        method.classifier.bias.add_(1.0)
    method.on_epoch_start(1, fake_pass(method, images))                   # reassignment: reset
    w = method.classifier.weight.detach()
    assert float(w.std()) < 0.05 and float(method.classifier.bias.abs().sum()) == 0
    assert not torch.equal(w, first)                                     # fresh weights each time
    sizes = torch.bincount(method.labels.long(), minlength=3).float()
    per_cluster = method.class_weights * sizes                             # each cluster carries N / C
    assert torch.allclose(per_cluster[sizes > 0], torch.full_like(per_cluster[sizes > 0], 32 / int((sizes > 0).sum())))


def test_reassign_every_skips_epochs():
    method = build("deepcluster", n_clusters=3, reassign_every=2)
    images = torch.randn(32, 3, 16, 16)
    method.on_epoch_start(0, fake_pass(method, images))
    method.on_epoch_start(1, lambda fn: pytest.fail("epoch 1 must not relabel"))
    assert int(method.label_epoch) == 0


@pytest.mark.parametrize("name,extra", [("deepcluster", ()), ("deepclusterv2", ("--deepclusterv2.memory=true",))])
def test_deepcluster_exact_resume(runs, tmp_path, name, extra):
    """Interrupted after 2 steps and resumed: the same losses (DeepCluster's classifier reset;
    DeepCluster-v2's memory bank, which the checkpoint carries)."""
    reference = runs[name] if not extra else train(config(name, tmp_path / "whole", extra))
    reference = [(r["step"], r["loss"]) for r in step_records(reference)]

    def interrupt(step, logs):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = config(name, tmp_path / "cut", extra)
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_step=interrupt)
    out = tmp_path / "cut"
    assert load_checkpoint(out / "checkpoint.pt")["global_step"] == 2
    train(cfg, resume=True)
    resumed = [(r["step"], r["loss"]) for r in step_records(out)]
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    for (_, a), (_, b) in zip(resumed, reference):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7)


def test_deepclusterv2_memory_bank_clusters_the_training_projections():
    """memory=True (the released code's memory bank): the first labelling fills the bank from
    the pass; a step writes its two global crops' l2-normalised projections into their rows;
    later labellings cluster the bank (head h crop h % 2) without a pass."""
    method = build("deepclusterv2", hidden_dim=16, out_dim=8, n_prototypes=3, n_heads=2, n_local_views=0,
                   memory=True)
    images = torch.randn(32, 3, 16, 16)
    method.on_epoch_start(0, fake_pass(method, images))
    method.eval()                                                        # pass-like BN: the rows are comparable
    with torch.no_grad():
        passed = method.embed(images)
    assert torch.equal(method.memory[0], passed.half()) and torch.equal(method.memory[1], passed.half())
    method.train()
    index = torch.tensor([3, 7, 11, 30, 1, 0, 12, 20])
    views = [images[index], images[index].flip(-1)]
    method.training_step(views, StepInfo(0, 0, 10, 5, index=index))
    with torch.no_grad():                                                # BN over both views, as the step
        expected = F.normalize(method.projector(method.backbone(torch.cat(views))).float(), dim=1).chunk(2)
    for crop in range(2):
        assert torch.allclose(method.memory[crop, index].float(), expected[crop], atol=2e-3)
    untouched = torch.ones(32, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(method.memory[:, untouched], passed[untouched].half().expand(2, -1, -1))
    method.on_epoch_start(1, lambda fn: pytest.fail("with a memory bank, epoch 1 must not run a pass"))
    for h in range(2):
        result = cluster(method.memory[h % 2].float(), 3, seed=1 * 2 + h, n_iters=method.cfg.kmeans_iters)
        assert torch.equal(method.labels[h].long(), result.assignments)
        assert torch.allclose(method.centroids[h], F.normalize(result.centroids, dim=1))
    assert int(method.label_epoch) == 1


def test_sobel_on_a_known_image():
    image = torch.zeros(1, 3, 6, 6)
    image[..., 3:] = 1.0                                                 # vertical step edge, every channel
    out = Sobel()(image)                                                  # (1, 2, 6, 6)
    assert out.shape == (1, 2, 6, 6)
    gx, gy = out[0, 0], out[0, 1]
    inner = slice(1, 5)                                                   # away from the zero padding
    # d/dx with [1 0 -1; 2 0 -2; 1 0 -1]: -4 on the two columns beside the step, 0 elsewhere
    assert torch.equal(gx[inner, 2], torch.full((4,), -4.0)) and torch.equal(gx[inner, 3], torch.full((4,), -4.0))
    assert torch.equal(gx[inner][:, [0, 1, 4]], torch.zeros(4, 3))
    assert torch.equal(gy[inner, :5], torch.zeros(4, 5))                 # no horizontal edge
    gray = torch.rand(1, 1, 5, 5).expand(1, 3, 5, 5)
    assert torch.allclose(Sobel()(gray * torch.tensor([0.0, 1.5, 1.5]).view(1, 3, 1, 1)), Sobel()(gray))


def test_sobel_backbone_takes_rgb_and_round_trips_its_spec():
    backbone = tiny_backbone(sobel=True)
    assert backbone.patch_embed.in_channels == 2 and backbone(torch.randn(2, 3, 16, 16)).shape == (2, 16)
    again = build_backbone(**backbone.spec)
    again.load_state_dict(backbone.state_dict())
    resnet = build_backbone("resnet18", image_size=16, width=0.125, sobel=True)
    assert resnet.conv1.in_channels == 2 and resnet(torch.randn(2, 3, 16, 16)).shape == (2, resnet.num_features)
    assert "sobel" not in tiny_backbone().spec                            # default unchanged


def test_helpers():
    assert default_k(1_300_000, 10000) == 10000 and default_k(640, 10000) == 64 and default_k(5, 10000) == 2
    images, rotation = rotate4(torch.arange(4.0).view(1, 1, 2, 2))
    assert rotation.tolist() == [0, 1, 2, 3]
    assert torch.equal(images[2, 0], torch.tensor([[3.0, 2.0], [1.0, 0.0]]))   # 180 degrees
    x = torch.cat([torch.zeros(10, 2), torch.ones(10, 2) * 5, torch.full((3, 2), 10.0)]) + 0.01 * torch.randn(23, 2)
    result = cluster(x, 2, "pic")                                         # PIC finds 3, kept to k = 2
    assert result.assignments.max() <= 1 and len(result.assignments) == 23
    assert len(set(result.assignments[:10].tolist())) == 1 and len(set(result.assignments[10:20].tolist())) == 1


def test_deepercluster_starts_from_a_rotnet_run(runs, tmp_path):
    """3.3.1's optional RotNet initialisation through --model.init: with a zero learning
    rate (and a LayerNorm ViT, so no running statistics move) the trained backbone is
    still exactly the RotNet one."""
    from nolabel.evaluate.models import load_model
    out = train(config("deepercluster", tmp_path / "deeper", [f"--model.init={runs['rotnet']}",
                                                              "--optim.lr=0", "--optim.min_lr=0"]))
    rot = load_model(str(runs["rotnet"])).network.state_dict()
    got = load_model(str(out)).network.state_dict()
    assert rot.keys() == got.keys() and all(torch.equal(rot[k], got[k]) for k in rot)
    fresh = load_model(str(runs["deepercluster"])).network.state_dict()
    assert not all(torch.equal(rot[k], fresh[k]) for k in rot)


@pytest.mark.parametrize("extra,message", [
    (["--model.embed_dim=16"], "differs from this run's"),
    ([], "changes the backbone's architecture"),
])
def test_init_errors_name_the_option(runs, tmp_path, extra, message):
    from nolabel.train import TrainingError
    name = "deepcluster" if not extra else "rotnet"       # deepcluster's Sobel input rebuilds the stem
    with pytest.raises(TrainingError, match=message) as err:
        train(config(name, tmp_path / "bad", [f"--model.init={runs['rotnet']}", *extra]))
    assert "--model.init" in str(err.value)
    with pytest.raises(TrainingError, match="--model.init=random:vit_tiny"):
        train(config("rotnet", tmp_path / "bad2", ["--model.init=random:vit_tiny"]))
