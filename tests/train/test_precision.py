"""CPU speed settings of the loop: bf16 autocast (and its auto choice), channels-last
ResNets, the thread count. Exact resume in bf16 and channels-last is in test_resume.py."""
import math

import pytest
import torch

from nolabel import dist_setup
from nolabel.checkpoint import load_checkpoint
from nolabel.runs import export_backbone, load_backbone
from nolabel.config import apply_overrides, new_config
from nolabel.evaluate.models import load_model
from nolabel.runlog import MetricsLog
from nolabel.train import train
from tests.train.conftest import TINY
from tests.train.test_resume import RESNET

GENERAL = [o for o in TINY if not o.startswith("--dino.")]


def run(tmp_path, method, extra=(), name="run"):
    cfg = new_config(method)
    head = [o for o in TINY if o.startswith("--dino.")] if method == "dino" else [f"--{method}.hidden_dim=64"]
    apply_overrides(cfg, GENERAL + head + ["--run.epochs=1", f"--run.out={tmp_path / name}", *extra])
    return train(cfg)


# --- precision -------------------------------------------------------------------------------------

@pytest.mark.parametrize("native,want", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_the_bf16_detection(monkeypatch, native, want):
    monkeypatch.setattr(dist_setup, "cpu_has_native_bf16", lambda: native)
    assert dist_setup.pick_device("cpu", "auto") == (torch.device("cpu"), want)
    assert dist_setup.pick_device("cpu", "fp32")[1] == "fp32"           # explicit choices are kept
    assert dist_setup.pick_device("cpu", "bf16")[1] == "bf16"


@pytest.mark.parametrize("capability,flags,want", [
    ("AVX512", {"avx512f", "avx512_bf16"}, True),      # e.g. AMD Zen 4/5, Intel Cooper Lake
    ("AVX512", {"avx512f", "amx_bf16", "amx_tile"}, True),   # Intel Sapphire Rapids and later
    ("AVX512", {"avx512f"}, False),                    # AVX-512 without bf16: emulated, slower than fp32
    ("AVX2", {"avx2", "avx512_bf16"}, False),          # torch limited to AVX2 (ATEN_CPU_CAPABILITY)
    ("AVX512", set(), False),                          # flags unknown (no /proc/cpuinfo)
    ("DEFAULT", set(), False),
])
def test_native_bf16_detection(monkeypatch, capability, flags, want):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(dist_setup, "_cpu_flags", lambda: flags)
    assert dist_setup.cpu_has_native_bf16() is want


def test_cpu_flags_are_read_where_linux_has_them():
    flags = dist_setup._cpu_flags()
    assert isinstance(flags, set)
    if flags:
        assert "fpu" in flags or "sse2" in flags or any(f.startswith("avx") for f in flags)


@pytest.mark.parametrize("method,extra", [
    ("dino", []), ("simclr", RESNET),
    ("swav", [*RESNET, "--swav.n_prototypes=32", "--swav.queue_size=0", "--swav.n_local_views=2"]),
], ids=["dino-vit", "simclr-resnet", "swav-resnet"])
def test_bf16_steps_are_finite_and_keep_float32_state(tmp_path, method, extra):
    out = run(tmp_path, method, ["--run.precision=bf16", *extra])
    steps = [r for r in MetricsLog(out).read() if r["type"] == "step"]
    assert len(steps) == 4 and all(math.isfinite(r["loss"]) for r in steps)
    assert "cpu/bf16" in (out / "train.log").read_text()
    state = load_checkpoint(out / "checkpoint.pt")
    floats = [v for v in state["method"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)
    moments = [v for s in state["optimizer"]["state"].values() for k, v in s.items()
               if torch.is_tensor(v) and v.is_floating_point() and k != "step"]
    assert moments and all(v.dtype == torch.float32 for v in moments)    # AdamW's moments, LARS's momentum


# --- channels-last -----------------------------------------------------------------------------------

def test_channels_last_setting():
    cpu = torch.device("cpu")
    assert dist_setup.memory_format("auto", "resnet18", cpu) == torch.channels_last
    assert dist_setup.memory_format("auto", "vit_small", cpu) == torch.contiguous_format
    assert dist_setup.memory_format("false", "resnet50", cpu) == torch.contiguous_format
    assert dist_setup.memory_format(True, "vit_tiny", cpu) == torch.channels_last
    with pytest.raises(ValueError, match="channels_last"):
        dist_setup.memory_format("nhwc", "resnet18", cpu)
    cfg = new_config("dino")
    apply_overrides(cfg, ["--run.channels_last=true"])
    assert cfg.run.channels_last == "true"


def test_channels_last_run_reloads_exports_and_evaluates(tmp_path):
    """A ResNet run trained channels-last (auto) gives the same features through every way of
    loading it: its run folder (evaluation), an export, and a contiguous copy of the weights."""
    out = run(tmp_path, "simclr", RESNET)
    assert "channels-last" in (out / "train.log").read_text()
    weights = load_checkpoint(out / "checkpoint.pt")["method"]
    assert any(v.dim() == 4 and v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
               for v in weights.values())                                   # trained NHWC
    model = load_model(str(out))                                            # as `nolabel eval` loads it
    export_backbone(model.network, tmp_path / "export", {"image_size": 32})
    exported = load_backbone(tmp_path / "export")
    x = torch.randn(6, 3, 32, 32)
    model.network.eval()
    with torch.no_grad():
        want = model.network(x)
        assert torch.allclose(exported(x), want, atol=1e-5)
        nhwc = load_model(str(out)).network.eval().to(memory_format=torch.channels_last)
        assert torch.allclose(nhwc(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-4)


# --- threads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores,busy,env,want", [
    (2, 0.0, {}, 2), (2, 0.4, {}, 2),        # idle: both cores (1.9x faster than 1 here)
    (2, 0.9, {}, 1), (2, 7.0, {}, 1),        # another job busy: one thread (10x faster than 2 here)
    (16, 4.5, {}, 11),
    (16, 0.0, {"LOCAL_WORLD_SIZE": "4"}, 4),
    (16, 9.0, {"OMP_NUM_THREADS": "3"}, 3),  # torchrun's (or the user's) choice wins
])
def test_auto_threads(monkeypatch, cores, busy, env, want):
    for name in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist_setup, "_available_cores", lambda: cores)
    monkeypatch.setattr(dist_setup, "_busy_cores", lambda: busy)
    assert dist_setup.cpu_threads("auto") == want
    assert dist_setup.cpu_threads(5) == 5


def test_busy_cores_reads_a_plausible_count():
    busy = dist_setup._busy_cores(samples=3, interval=0.001)
    assert 0 <= busy < 10_000


@pytest.mark.parametrize("bad", [0, -2, "many", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="run.threads"):
        dist_setup.cpu_threads(bad)


def test_threads_are_set_and_a_resumed_auto_run_keeps_its_count(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        out = run(tmp_path, "dino", ["--run.threads=1"])
        assert torch.get_num_threads() == 1 and "1 CPU threads" in (out / "train.log").read_text()
        assert load_checkpoint(out / "checkpoint.pt")["threads"] == 1
        monkeypatch.setattr(dist_setup, "cpu_threads", lambda setting: 2)   # the load changed meanwhile
        assert dist_setup.set_cpu_threads("auto", resumed=1) == 1            # auto: the checkpoint's count
        assert dist_setup.set_cpu_threads(2, resumed=1) == 2                 # an explicit count wins
    finally:
        torch.set_num_threads(before)
