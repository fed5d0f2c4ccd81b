"""The feature cache: hits skip extraction, keys follow the weights and the data, feature kinds."""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from nolabel.evaluate import context
from nolabel.evaluate.cache import data_stamp, embed_normalized, weights_digest
from nolabel.evaluate.context import EvalContext, EvalError
from tests.conftest import export
from tests.evaluate.conftest import TEST, TRAIN


@pytest.fixture
def counter(monkeypatch):
    """Counts calls of the feature extractor used by EvalContext."""
    calls = []
    real = context.extract_features

    def counting(*args, **kwargs):
        calls.append(args[1].spec)
        return real(*args, **kwargs)

    monkeypatch.setattr(context, "extract_features", counting)
    return calls


def test_second_context_reads_the_cache(tiny_vit, tmp_path, counter):
    first = EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path, progress=False)
    a = first.features("train")
    assert counter == [TRAIN] and not a.from_cache and a.path.is_file()
    mtime = a.path.stat().st_mtime_ns
    time.sleep(0.01)
    second = EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path, progress=False)
    b = second.features("train")
    assert counter == [TRAIN] and b.from_cache  # no second extraction
    assert b.path == a.path and b.path.stat().st_mtime_ns == mtime
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and b.classes == a.classes and b.has_masks
    assert second._data == {}  # a cache hit never opens (decodes) the data
    second.features("test")
    assert counter == [TRAIN, TEST]


def test_key_changes_with_weights_and_kind(tiny_vit, tmp_path, counter):
    model = str(tmp_path / "vit")
    shutil.copytree(tiny_vit, model)
    base = EvalContext(model, TRAIN, TEST, out=tmp_path, progress=False).features("train").path
    export(model, "vit_tiny", seed=1, patch_size=8, depth=1, embed_dim=32, num_heads=2)  # retrained, same path
    other = EvalContext(model, TRAIN, TEST, out=tmp_path, progress=False).features("train")
    assert not other.from_cache and other.path != base
    avg = EvalContext(model, TRAIN, TEST, out=tmp_path, patch_tokens="avg", progress=False).features("train")
    assert avg.x.shape[1] == 64 and avg.path not in (base, other.path)
    assert len(counter) == 3
    export(model, "vit_tiny", seed=0, patch_size=8, depth=1, embed_dim=32, num_heads=2)  # the first weights again
    again = EvalContext(model, TRAIN, TEST, out=tmp_path, progress=False).features("train")
    assert again.from_cache and again.path == base and len(counter) == 3


def test_no_cache_and_cache_dir(tiny_vit, tmp_path, counter):
    EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path / "a", use_cache=False, progress=False).features("train")
    assert not (tmp_path / "a" / "cache").exists()
    shared = tmp_path / "shared"
    EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path / "b", cache_dir=shared, progress=False).features("train")
    hit = EvalContext(tiny_vit, TRAIN, TEST, out=tmp_path / "c", cache_dir=shared, progress=False).features("train")
    assert hit.from_cache and len(counter) == 2


def test_weights_digest_follows_buffers_and_values():
    from nolabel.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone("resnet18", image_size=32, width=0.125)
    d0 = weights_digest(net)
    assert weights_digest(net) == d0 and weights_digest(None) == "pixels"
    net.bn1.running_mean += 1  # a buffer, not a parameter
    assert weights_digest(net) != d0


def test_data_stamp_sees_new_files(flat_folder, tmp_path):
    assert data_stamp("demo?n=8") == []
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    first = data_stamp(f"flat:{folder}")
    (folder / "b.png").write_bytes(b"y")
    assert data_stamp(f"flat:{folder}") != first and len(data_stamp(str(folder))) == 3


def test_feature_kinds(tiny_vit):
    from nolabel.runs import load_backbone

    vit = load_backbone(tiny_vit)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = vit.forward_tokens(x)
        cls = embed_normalized(vit, x)
        avg = embed_normalized(vit, x, "avg")
        gem = embed_normalized(vit, x, "gem")
    torch.testing.assert_close(cls, tokens[:, 0])
    torch.testing.assert_close(avg, torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1))
    expected = tokens[:, 1:].clamp_min(1e-6).pow(3).mean(1).pow(1 / 3)
    torch.testing.assert_close(gem[:, 32:], expected)
    assert embed_normalized(None, x).shape == (3, 3 * 32 * 32)


def test_patch_tokens_on_a_resnet_is_refused(tiny_resnet, tmp_path):
    with pytest.raises(EvalError, match="--patch-tokens avg.*ViT"):
        EvalContext(tiny_resnet, TRAIN, TEST, out=tmp_path, patch_tokens="avg", progress=False)
