"""Export as timm state dicts (checked against timm's names and shapes, written here from
timm's ResNet and VisionTransformer) and as TorchScript loaded without nolabel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from nolabel.backbones import build_backbone
from nolabel.export_formats import ExportError, export_timm, export_torchscript, timm_model, timm_state_dict


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def timm_resnet_shapes(blocks: tuple[int, ...], bottleneck: bool) -> dict[str, tuple]:
    """timm.models.resnet.ResNet(num_classes=0): conv1/bn1 stem, layerN.i.{conv,bn}k, downsample.{0,1}."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for stage, count in enumerate(blocks):
        planes = 64 * 2**stage
        outplanes = planes * (4 if bottleneck else 1)
        for i in range(count):
            p = f"layer{stage + 1}.{i}"
            if bottleneck:
                convs = [(planes, inplanes, 1, 1), (planes, planes, 3, 3), (outplanes, planes, 1, 1)]
            else:
                convs = [(planes, inplanes, 3, 3), (planes, planes, 3, 3)]
            for k, shape in enumerate(convs, start=1):
                shapes[f"{p}.conv{k}.weight"] = shape
                shapes.update(_bn(f"{p}.bn{k}", shape[0]))
            if i == 0 and (stage > 0 or inplanes != outplanes):
                shapes[f"{p}.downsample.0.weight"] = (outplanes, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", outplanes))
            inplanes = outplanes
    return shapes


def timm_vit_shapes(dim: int, tokens: int, depth: int = 12) -> dict[str, tuple]:
    """timm.models.vision_transformer.VisionTransformer(patch_size=16, num_classes=0)."""
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim),
              "patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,),
              "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}"
        shapes.update({f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,),
                       f"{b}.attn.qkv.weight": (3 * dim, dim), f"{b}.attn.qkv.bias": (3 * dim,),
                       f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,),
                       f"{b}.norm2.weight": (dim,), f"{b}.norm2.bias": (dim,),
                       f"{b}.mlp.fc1.weight": (4 * dim, dim), f"{b}.mlp.fc1.bias": (4 * dim,),
                       f"{b}.mlp.fc2.weight": (dim, 4 * dim), f"{b}.mlp.fc2.bias": (dim,)})
    return shapes


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name, blocks, bottleneck, count", [
    ("resnet18", (2, 2, 2, 2), False, 120), ("resnet50", (3, 4, 6, 3), True, 318)])
def test_resnet_keys_are_timms(name, blocks, bottleneck, count) -> None:
    backbone = build_backbone(name, 224)
    state = timm_state_dict(backbone)
    expected = timm_resnet_shapes(blocks, bottleneck)
    assert len(expected) == count   # torchvision/timm resnet state dicts less fc.weight, fc.bias
    assert _shapes(state) == expected
    assert torch.equal(state["layer2.0.downsample.0.weight"], backbone.layer2[0].shortcut[0].weight)
    assert timm_model(backbone.spec) == (name, {"num_classes": 0})


def test_vit_keys_are_timms() -> None:
    backbone = build_backbone("vit_tiny", 224, patch_size=16)
    state = timm_state_dict(backbone)
    assert _shapes(state) == timm_vit_shapes(192, 1 + 14 * 14)
    assert torch.equal(state["patch_embed.proj.weight"], backbone.patch_embed.weight)
    assert timm_model(backbone.spec) == ("vit_tiny_patch16_224", {"num_classes": 0})
    small = build_backbone("vit_small", 96, patch_size=16)
    assert _shapes(timm_state_dict(small)) == timm_vit_shapes(384, 1 + 6 * 6)
    assert timm_model(small.spec) == ("vit_small_patch16_224", {"num_classes": 0, "img_size": 96})
    base_spec = {"name": "vit_base", "image_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12,
                 "num_heads": 12, "mlp_ratio": 4.0, "drop_path_rate": 0.0}
    assert timm_model(base_spec) == ("vit_base_patch16_224", {"num_classes": 0})


@pytest.mark.parametrize("name, options, words", [
    ("resnet18", {"small_stem": True}, ["small_stem=True"]),
    ("resnet18", {"width": 2.0}, ["width=2"]),
    ("resnet50", {"sobel": True}, ["sobel=True"]),
    ("vit_tiny", {"patch_size": 8, "depth": 1}, ["patch_size=8 (timm's is 16)", "depth=1 (timm's is 12)"]),
    ("vit_small", {"patch_size": 16, "embed_dim": 192, "num_heads": 3}, ["embed_dim=192", "num_heads=3"]),
])
def test_no_timm_equivalent_is_refused_with_the_differences(tmp_path, name, options, words) -> None:
    backbone = build_backbone(name, 64, **options) if name.startswith("resnet") else None
    spec = backbone.spec if backbone is not None else {
        "name": name, "image_size": 64, "patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6,
        "mlp_ratio": 4.0, **options}
    with pytest.raises(ExportError) as caught:
        timm_model(spec)
    assert all(word in str(caught.value) for word in words), str(caught.value)
    if backbone is not None:
        with pytest.raises(ExportError):
            export_timm(backbone, tmp_path / "out", {})
        assert not (tmp_path / "out").exists()   # refused before anything is written


def test_export_timm_writes_weights_and_config(tmp_path) -> None:
    backbone = build_backbone("resnet18", 224)
    export_timm(backbone, tmp_path, {"image_size": 224})
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert _shapes(loaded) == timm_resnet_shapes((2, 2, 2, 2), False)
    assert torch.equal(loaded["layer4.1.bn2.running_var"], backbone.layer4[1].bn2.running_var)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["timm"] == {"model": "resnet18", "kwargs": {"num_classes": 0}}


_LOAD_WITHOUT_NOLABEL = """
import json, sys, torch
extra = {"config.json": ""}
model = torch.jit.load(sys.argv[1], _extra_files=extra)
x = torch.load(sys.argv[2])
torch.save(model(x), sys.argv[3])
print(json.loads(extra["config.json"])["image_size"], "nolabel" in sys.modules)
"""


@pytest.mark.parametrize("name, options", [("vit_tiny", {"patch_size": 8, "depth": 2, "embed_dim": 32,
                                                          "num_heads": 2}),
                                           ("resnet18", {"width": 0.25})])
def test_torchscript_loads_without_nolabel_and_gives_same_features(tmp_path, name, options) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, 32, **options).train()   # export must trace eval mode (BN stats)
    export_torchscript(backbone, tmp_path, {"image_size": 32})
    assert backbone.training
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_NOLABEL, str(tmp_path / "backbone.pt"),
                           str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                          capture_output=True, text=True, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["32", "False"]
    with torch.no_grad():
        want = backbone.eval()(x)
    assert torch.allclose(torch.load(tmp_path / "y.pt"), want, atol=1e-5)
