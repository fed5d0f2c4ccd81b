import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nolabel.ops.sinkhorn import sinkhorn_knopp, sinkhorn_labels


def naive_sinkhorn(scores, eps, n_iters):
    """The thesis' pseudocode (section 4.2.2) with explicit loops over Python floats
    (float64): Q = exp(Z / eps); per iteration divide each prototype column by its sum
    over the batch, then each sample row by its sum. Only for |Z / eps| < ~700."""
    batch, k = scores.shape
    q = [[math.exp(scores[b, j].item() / eps) for j in range(k)] for b in range(batch)]
    for _ in range(n_iters):
        for j in range(k):
            col = math.fsum(q[b][j] for b in range(batch))
            for b in range(batch):
                q[b][j] /= col
        for b in range(batch):
            row = math.fsum(q[b])
            q[b] = [v / row for v in q[b]]
    return torch.tensor(q, dtype=torch.float64)


def naive_log_sinkhorn(scores, eps, n_iters):
    """Same iterations with explicit loops in log space (float64), valid for any magnitude."""
    def log_sum(values):
        m = max(values)
        return m + math.log(math.fsum(math.exp(v - m) for v in values))

    batch, k = scores.shape
    lq = [[scores[b, j].item() / eps for j in range(k)] for b in range(batch)]
    for _ in range(n_iters):
        for j in range(k):
            col = log_sum([lq[b][j] for b in range(batch)])
            for b in range(batch):
                lq[b][j] -= col
        for b in range(batch):
            row = log_sum(lq[b])
            lq[b] = [v - row for v in lq[b]]
    return torch.tensor([[math.exp(v) for v in r] for r in lq], dtype=torch.float64)


def cosine_scores(batch, k, dim=16, seed=0):
    """Realistic SwAV scores: l2-normalised features against l2-normalised prototypes."""
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    protos = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    return feats @ protos.T


def adversarial(name, batch, k):
    g = torch.Generator().manual_seed(batch * 100 + k)
    z = torch.randn(batch, k, generator=g)
    if name == "huge":
        return z * 1e4
    if name == "tiny":
        return z * 1e-6
    if name == "constant_column":
        z[:, 1] = 0.7
        return z
    if name == "dominant_prototype":
        z[:, 0] += 50.0                       # every sample prefers prototype 0 by far
        return z
    if name == "one_sample_wins_all":
        z[0] += 1e3                           # sample 0 tops every prototype
        return z
    raise KeyError(name)


@pytest.mark.parametrize("batch,k,n_iters", [(6, 4, 3), (3, 8, 3), (10, 5, 1), (7, 7, 5), (1, 4, 3), (5, 1, 3)])
def test_matches_thesis_pseudocode_in_float64(batch, k, n_iters):
    scores = cosine_scores(batch, k, seed=batch + k)
    want = naive_sinkhorn(scores, 0.05, n_iters)
    got = sinkhorn_knopp(scores, eps=0.05, n_iters=n_iters)
    assert got.dtype == torch.float32 and got.shape == (batch, k)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6)
    got64 = sinkhorn_knopp(scores.double(), eps=0.05, n_iters=n_iters)
    assert got64.dtype == torch.float64
    assert torch.allclose(got64, want, rtol=1e-10, atol=1e-12)


def test_one_iteration_is_batch_softmax_then_row_normalisation():
    """Section 4.2.2: with one iteration, Q = softmax(Z / eps, dim=0) (a softmax over the
    batch axis), then each sample row divided by its sum."""
    scores = cosine_scores(12, 5, seed=3)
    q = F.softmax(scores / 0.05, dim=0)
    q = q / q.sum(dim=1, keepdim=True)
    assert torch.allclose(sinkhorn_knopp(scores, eps=0.05, n_iters=1), q, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch,k", [(64, 16), (16, 64), (32, 32)])
def test_marginals_on_realistic_scores(batch, k):
    scores = cosine_scores(batch, k, seed=batch)
    q = sinkhorn_knopp(scores)                                     # defaults: eps 0.05, 3 iterations
    assert torch.allclose(q.sum(1), torch.ones(batch), atol=1e-5)  # exact after the last row step
    def spread(codes):                                             # 0 == perfectly equipartitioned
        return float((codes.sum(0) / (batch / k) - 1).abs().max())
    # 3 iterations: no prototype empty or above twice its share, far closer than a per-sample softmax
    assert spread(q) < 1.0 and spread(q) < 0.4 * spread(F.softmax(scores / 0.05, dim=1))
    assert spread(sinkhorn_knopp(scores, n_iters=10)) < 0.05
    q = sinkhorn_knopp(scores, n_iters=300)
    assert torch.allclose(q.sum(0), torch.full((k,), batch / k), rtol=1e-3)
    assert torch.allclose(q.sum(1), torch.ones(batch), atol=1e-5)


@pytest.mark.parametrize("name", ["huge", "tiny", "constant_column", "dominant_prototype", "one_sample_wins_all"])
@pytest.mark.parametrize("batch,k", [(5, 9), (9, 4)])
def test_adversarial_scores_are_finite_and_match_log_space_loops(name, batch, k):
    scores = adversarial(name, batch, k)
    q = sinkhorn_knopp(scores)
    assert torch.isfinite(q).all() and (q >= 0).all()
    assert torch.allclose(q.sum(1), torch.ones(batch), atol=1e-5)
    want = naive_log_sinkhorn(scores, 0.05, 3)
    assert torch.allclose(sinkhorn_knopp(scores.double()), want, rtol=1e-9, atol=1e-12)
    # float32 rounds log Q = Z / eps with ~1.2e-7 relative error, so Q is exact to ~1e-7 |Z / eps|
    tol = 1e-5 + 1e-7 * float(scores.abs().max()) / 0.05
    assert torch.allclose(q.double(), want, rtol=0, atol=tol)


@pytest.mark.parametrize("name", ["tiny", "constant_column", "dominant_prototype"])
def test_adversarial_scores_converge_to_equipartition(name):
    batch, k = 8, 4
    q = sinkhorn_knopp(adversarial(name, batch, k), n_iters=2000)   # |Z / eps| ~ 1e3: slow but sure
    assert torch.allclose(q.sum(0), torch.full((k,), batch / k), rtol=1e-3)
    assert torch.allclose(q.sum(1), torch.ones(batch), atol=1e-5)


def test_prototype_offsets_do_not_change_codes():
    """Adding a constant to one prototype's scores rescales a column of exp(Z / eps),
    which the first column normalisation removes exactly (Eq. 4.5)."""
    scores = cosine_scores(10, 6, seed=7)
    shifted = scores + torch.tensor([5.0, -5.0, 0.0, 2.0, 0.0, -1.0])
    assert torch.allclose(sinkhorn_knopp(shifted), sinkhorn_knopp(scores), atol=1e-5)


def test_tiny_scores_give_uniform_codes_and_batch_of_one_is_uniform():
    q = sinkhorn_knopp(torch.full((6, 3), 1e-6))
    assert torch.allclose(q, torch.full((6, 3), 1 / 3))
    q = sinkhorn_knopp(torch.tensor([[5.0, -3.0, 0.1, 2.0]]))      # one sample: every column has mass 1
    assert torch.allclose(q, torch.full((1, 4), 0.25))


def test_half_input_is_computed_in_float32_without_gradient():
    scores = (cosine_scores(16, 8, seed=1) * 3).half().requires_grad_()
    q = sinkhorn_knopp(scores)
    assert q.dtype == torch.float32 and not q.requires_grad
    assert torch.isfinite(q).all()
    assert torch.equal(q, sinkhorn_knopp(scores.detach().float()))  # fp16 -> fp32 is exact
    big = (torch.randn(16, 8) * 6e4).clamp(-6e4, 6e4).half()        # near the fp16 maximum
    assert torch.isfinite(sinkhorn_knopp(big)).all()


@pytest.mark.parametrize("kwargs,message", [
    ({"scores": torch.zeros(2, 3, 4)}, "batch, prototypes"),
    ({"scores": torch.zeros(0, 3)}, "at least one sample"),
    ({"scores": torch.zeros(2, 3), "eps": 0.0}, "eps"),
    ({"scores": torch.zeros(2, 3), "n_iters": 0}, "n_iters"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sinkhorn_knopp(**kwargs)


def test_two_processes_equal_one_process_over_the_concatenated_batch(tmp_path):
    """Under torchrun (2 gloo CPU processes, unequal batches of 5 and 7), each process's
    codes equal the rows of the codes computed by one process over all 12 samples."""
    worker = Path(__file__).with_name("_sinkhorn_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    full = torch.load(tmp_path / "full.pt")                      # name -> (scores (12, K), eps, n_iters)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert set(full) == set(parts[0]) == set(parts[1]) and len(full) >= 3
    for name, (scores, eps, n_iters) in full.items():
        want = sinkhorn_knopp(scores, eps=eps, n_iters=n_iters)
        assert parts[0][name].shape[0] == 5 and parts[1][name].shape[0] == 7
        got = torch.cat([parts[0][name], parts[1][name]])
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), name
        assert not torch.allclose(parts[0][name], sinkhorn_knopp(scores[:5], eps=eps, n_iters=n_iters)), name


# --- linear and log domains ----------------------------------------------------------------------

def in_range(name, batch, k):
    """Scores whose (max - min) / eps stays below the linear domain's bound (80 at eps 0.05)."""
    g = torch.Generator().manual_seed(batch * 31 + k)
    z = torch.rand(batch, k, generator=g) * 2 - 1                          # cosine-like, range 2 -> 40
    if name == "dominant_prototype":
        z[:, 0] += 1.9                                                       # every sample prefers prototype 0
    elif name == "one_sample_wins_all":
        z[0] += 1.9
    elif name == "constant_column":
        z[:, 1] = 0.7
    elif name == "tiny":
        z = z * 1e-6
    elif name == "near_the_bound":
        z = z * 1.95                                                         # range ~ 78 / eps units
    return z


@pytest.mark.parametrize("name", ["random", "dominant_prototype", "one_sample_wins_all", "constant_column", "tiny",
                                  "near_the_bound"])
@pytest.mark.parametrize("batch,k,n_iters", [(64, 16, 3), (16, 64, 3), (300, 200, 3), (40, 30, 1), (32, 8, 20)])
def test_linear_and_log_domains_agree(name, batch, k, n_iters):
    """Both float32 domains are within ~1e-6 of the float64 result: float32 rounds Z / eps with a
    relative error of ~6e-8, an absolute one of ~6e-8 R in log Q (R = (max - min) / eps), so the
    tolerance is 1e-6 up to SwAV's cosine range (R = 40) and grows with R beyond."""
    scores = in_range(name, batch, k)
    linear = sinkhorn_knopp(scores, n_iters=n_iters, domain="linear")
    log = sinkhorn_knopp(scores, n_iters=n_iters, domain="log")
    assert linear.dtype == log.dtype == torch.float32
    assert torch.isfinite(linear).all() and (linear >= 0).all()
    tol = 1e-6 * max(1.0, float(scores.max() - scores.min()) / 0.05 / 40)
    assert torch.allclose(linear, log, rtol=0, atol=tol)
    assert torch.allclose(linear.sum(1), torch.ones(batch), atol=1e-5)
    want = sinkhorn_knopp(scores.double(), n_iters=n_iters, domain="log")     # float64 reference
    assert torch.allclose(linear.double(), want, rtol=0, atol=tol)
    assert torch.equal(sinkhorn_knopp(scores, n_iters=n_iters), linear)      # auto: linear in range
    assert torch.allclose(sinkhorn_knopp(scores.double(), n_iters=n_iters, domain="linear"), want,
                          rtol=1e-9, atol=1e-12)


def test_auto_falls_back_to_the_log_domain_beyond_the_bound():
    """(max - min) / eps > 80: linear would underflow whole columns (0/0) in float32; auto
    takes the log domain, exactly; at 79 it stays linear."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(24, 12, generator=g)
    extreme = base * 1e3                                                     # range ~ 2e4 / eps
    extreme[:, 3] -= 5e3                                                     # a column far below all
    assert torch.equal(sinkhorn_knopp(extreme), sinkhorn_knopp(extreme, domain="log"))
    assert torch.isfinite(sinkhorn_knopp(extreme)).all()
    assert not torch.isfinite(sinkhorn_knopp(extreme, domain="linear")).all()  # why the fallback exists
    scale = 79 * 0.05 / float(base.max() - base.min())                       # range just inside: linear
    assert torch.equal(sinkhorn_knopp(base * scale), sinkhorn_knopp(base * scale, domain="linear"))
    scale = 81 * 0.05 / float(base.max() - base.min())                       # just beyond: log
    assert torch.equal(sinkhorn_knopp(base * scale), sinkhorn_knopp(base * scale, domain="log"))
    with pytest.raises(ValueError, match="domain"):
        sinkhorn_knopp(base, domain="exp")


def test_swav_queue_shape_linear_matches_log():
    """SwAV's queue shape (section 4.2.3: 3840 rows, 3000 prototypes), 3 iterations."""
    scores = cosine_scores(3840, 3000, dim=128, seed=5)
    linear = sinkhorn_knopp(scores, domain="linear")
    assert torch.allclose(linear, sinkhorn_knopp(scores, domain="log"), rtol=0, atol=1e-6)
    assert torch.equal(sinkhorn_knopp(scores), linear)


def test_sinkhorn_labels_match_sinkhorn_knopp_chunk_by_chunk():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(50, 8), dim=1)
    w = F.normalize(torch.randn(5, 8), dim=1)
    for eps, iters in ((0.05, 3), (0.004, 20)):
        labels, ran = sinkhorn_labels(z, w, eps, iters, tol=0.0, chunk=7)
        assert ran == iters
        assert torch.equal(labels, sinkhorn_knopp(z @ w.T, eps, iters).argmax(dim=1))


def test_sinkhorn_labels_equipartition_and_early_stop():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(1, 16) + 0.1 * torch.randn(2000, 16), dim=1)   # close features
    w = F.normalize(torch.randn(20, 16), dim=1)
    labels, ran = sinkhorn_labels(z, w, eps=0.004, n_iters=100)
    assert ran < 100
    sizes = torch.bincount(labels, minlength=20).float() / (2000 / 20)
    assert sizes.min() > 0.75 and sizes.max() < 1.25
    greedy = torch.bincount((z @ w.T).argmax(1), minlength=20).float() / (2000 / 20)
    assert greedy.max() > 2                  # without the transport constraint: unbalanced


def test_a_bound_on_the_scores_picks_the_domain_without_reading_them(monkeypatch):
    """With ``max_abs`` (cosine scores: 1) ``auto`` decides from 2 * max_abs / eps alone, so a
    training step never waits for the device to send the scores' range back (issue 14), and
    the codes equal those chosen by reading the range."""
    torch.manual_seed(0)
    scores = F.normalize(torch.randn(16, 8), dim=1) @ F.normalize(torch.randn(10, 8), dim=1).T   # cosines
    expected = sinkhorn_knopp(scores, 0.05, 3)
    reads = []
    real_float = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: reads.append(t) or real_float(t))
    bounded = sinkhorn_knopp(scores, 0.05, 3, max_abs=1.0)
    assert reads == []
    torch.testing.assert_close(bounded, expected, rtol=0, atol=0)
    sinkhorn_knopp(scores, 0.05, 3)                                 # without the bound the range is read
    assert len(reads) == 2
    # a bound too wide for the linear domain (2 / 0.01 = 200 > 80) takes the log domain
    torch.testing.assert_close(sinkhorn_knopp(scores, 0.01, 3, max_abs=1.0),
                               sinkhorn_knopp(scores, 0.01, 3, domain="log"), rtol=0, atol=0)
