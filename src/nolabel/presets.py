"""Defaults chosen from the data when the config leaves a field unset (``None``).

The thesis values are for ImageNet at 224 px on many GPUs; these rules pick the
backbone, run length and batch for what the user actually has, and every chosen
value is written into the run's saved config.
"""
from __future__ import annotations

import torch

from nolabel.backbones import backbone_names, backbone_options, build_backbone
from nolabel.config import Config, ConfigError, set_value
from nolabel.methods import RunShape, get_method
from nolabel.views import SMALL_IMAGE

# The built-in demo set must train in minutes on 2 CPU cores (issue 12: `make demo`
# within 5 minutes, the trained backbone 15+ points of k-NN over random init and raw
# pixels). Measured in BENCHMARKS.md, "The demo":
# - the backbone: a quarter-width ResNet-18 with the small-image stem. The standard stem
#   turns 32 px into 8 px before the first block; even with labels it learns the demo
#   shapes to 35% in 300 steps, against 55% for this one at the same cost.
# - the method: SimCLR learns the demo shapes in a few hundred steps; DINO, with every
#   setting tried (~25 configurations, thesis values, lightly's recipe), stays on its
#   uniform plateau at this budget, so `nolabel demo` trains SimCLR and names DINO's
#   command as the next thing to try. SimCLR's values for it: temperature 0.2 (its
#   paper's Table 5 range for small batches; 0.5 ties random init here), the whole
#   hue circle (0.5: shapes of any colour), crops of at least 20% of the image (the
#   paper's 8% of a 32-px image often misses the one object: seed 2 reached 47.7% k-NN
#   with 0.08 against 64.4% with 0.2), AdamW lr 4e-3 per 256 (2e-3 at batch 128) with
#   weight decay 1e-4, 25 epochs of 31 steps; the k-NN curve every 5 epochs (every epoch
#   cost ~10% of the demo's time; the curve leaves training unchanged).
# - DINO on the demo (`--method dino`): head hidden 512 and K = 1024 (at these sizes
#   the 2048/65536 head is ~40% of the compute) and 4 local views instead of 6-10.
# Applied before the user's own options, which win.
DEMO_METHOD = "simclr"
DEMO_PRESET = {"model.backbone": "resnet18", "model.width": 0.25, "model.small_stem": True,
               "run.epochs": 25, "run.batch_size": 128, "eval.every": 5}
DEMO_METHOD_PRESETS = {
    "simclr": {"optim.lr": 4e-3, "optim.weight_decay": 1e-4, "simclr.temperature": 0.2, "simclr.hue": 0.5,
               "simclr.scale_min": 0.2},
    "dino": {"dino.hidden_dim": 512, "dino.out_dim": 1024, "dino.n_local_views": 4},
}


def demo_preset(method: str) -> dict:
    """The demo's values for ``method``: the shared ones, then the method's own."""
    return {**DEMO_PRESET, **DEMO_METHOD_PRESETS.get(method, {})}


def is_demo(spec: str) -> bool:
    return spec.split(":")[0].split("?")[0] == "demo"


def apply_demo_preset(cfg: Config) -> Config:
    """The demo's CPU values for the run's method, in the fields nobody set (an option or a
    config file wins), except the preset's ``model`` fields that the run's backbone does not
    take: with ``--model.backbone=vit_tiny`` on ``demo`` the preset's ResNet width is left out,
    and a method that needs a ViT (``Method.requires_vit``) gets none of the preset's model.
    The values written count as set: the recipe (:func:`apply_recipe`) does not replace them."""
    preset = demo_preset(cfg.method)
    if get_method(cfg.method).requires_vit:       # MAE, iBOT: the ViT default, not the preset's ResNet
        preset = {k: v for k, v in preset.items() if not k.startswith("model.")}
    backbone = cfg.model.backbone if "model.backbone" in cfg.explicit else preset.get("model.backbone")
    accepted = set(backbone_options(backbone)) if backbone in backbone_names() else set()
    for key, value in preset.items():
        section, field = key.split(".")
        foreign = section == "model" and field != "backbone" and field not in accepted
        if key not in cfg.explicit and not foreign:
            set_value(cfg, key, value, source="demo preset")
    return cfg


def default_backbone(image_size: int) -> str:
    """ViT-tiny (patch 4 at 32 px, 8 up to 64 px) for small images, ViT-S/16 above:
    DINO's default architecture (thesis 5.3.2) scaled to the image size."""
    return "vit_tiny" if image_size <= 64 else "vit_small"


# Recipes (issue 12, part 3). "thesis": the papers' values, which every config dataclass and
# ``default_optim`` hold (ImageNet, 224 px, large batches; a paper's own small-image values
# where it gives them, e.g. SimCLR's CIFAR temperature). "small": a method's
# ``Method.recipes["small"]``, the values measured to learn on 32-px CIFAR-10 in an hour on
# 2 CPU cores (BENCHMARKS.md, "Convergence in 60 minutes"); a method without one keeps its
# thesis values. A recipe fills only the fields nobody set: an option, a config file or the
# demo preset always wins.
RECIPES = ("auto", "small", "thesis")


def check_recipe(name: str) -> None:
    if name not in RECIPES:
        raise ConfigError(f"--run.recipe={name!r}: choose one of {', '.join(RECIPES)} (auto: small below "
                          f"{SMALL_IMAGE} px, thesis above)")


def pick_recipe(name: str, image_size: int) -> str:
    """``auto`` made concrete for images of ``image_size`` px."""
    check_recipe(name)
    if name != "auto":
        return name
    return "small" if image_size < SMALL_IMAGE else "thesis"


def apply_recipe(cfg: Config, recipes: dict[str, dict], image_size: int) -> Config:
    """Write the run's recipe into ``cfg.run.recipe`` and its values into the fields the
    user left alone (``cfg.explicit``). ``recipes``: the method's ``Method.recipes``."""
    name = pick_recipe(cfg.run.recipe, image_size)
    cfg.run.recipe = name
    for key, value in recipes.get(name, {}).items():
        if key not in cfg.explicit:
            set_value(cfg, key, value, source=f"{cfg.method}'s {name} recipe")
    return cfg


# 100 epochs: the shortest schedule of the thesis' ablations (DINO's Tables 5.9-5.13 and
# SwAV's 4.4 train 100 epochs); 256: the batch every lr of the thesis is stated per
# (the linear scaling rule, lr x batch / 256, 5.3.2) and the largest that fits a CPU's memory
# with multi-crop at 32-96 px.
DEFAULT_EPOCHS = 100
DEFAULT_BATCH = 256


def resolve(cfg: Config, image_size: int, n_images: int) -> Config:
    """The run's one resolution step: the data's facts (``image_size``, ``n_images``) and
    the method's class make ``cfg`` complete, every field the run uses written (the method's
    recipe, then the rules below, the backbone's own choices and the method's
    :meth:`~nolabel.methods.base.Method.resolve_config`), so that the saved config.yaml says
    what ran. Every choice was validated before the data was read (``validation.validate``);
    the entry points that train the demo (``nolabel train --data demo``, ``nolabel demo``)
    have filled the demo preset before (:func:`apply_demo_preset`). Returns ``cfg`` (modified)."""
    method = get_method(cfg.method)
    apply_recipe(cfg, method.recipes, image_size)
    cfg.data.image_size = image_size
    if cfg.model.backbone is None:
        cfg.model.backbone = default_backbone(image_size)
    if cfg.run.epochs is None:
        cfg.run.epochs = DEFAULT_EPOCHS
    if cfg.run.batch_size is None:     # the largest power of two up to 256 that the data fills
        cfg.run.batch_size = max(1, min(DEFAULT_BATCH, 1 << (max(n_images, 1).bit_length() - 1)))
    for key, value in method.default_optim.items():
        if getattr(cfg.optim, key) is None:
            setattr(cfg.optim, key, value)
    if cfg.optim.warmup_epochs is None:
        cfg.optim.warmup_epochs = min(10.0, 0.1 * cfg.run.epochs)
    if cfg.optim.min_lr is None:
        cfg.optim.min_lr = 0.0
    if cfg.optim.clip_grad is None:
        cfg.optim.clip_grad = 0.0
    if cfg.optim.weight_decay_end is None:
        cfg.optim.weight_decay_end = cfg.optim.weight_decay
    feature_dim = complete_model(cfg, image_size)
    method.resolve_config(cfg.method_config, RunShape(image_size=image_size, epochs=cfg.run.epochs,
                                                      n_images=n_images, feature_dim=feature_dim))
    return cfg


def complete_model(cfg: Config, image_size: int) -> int:
    """Write the backbone's own choices (a ResNet's stem, a ViT's patch size, depth, width...)
    into the ``model`` fields left unset that the backbone takes, read from its ``spec``
    (built on the meta device: no memory, no time). Returns the backbone's feature width."""
    with torch.device("meta"):
        backbone = build_backbone(cfg.model.backbone, image_size=image_size, **backbone_kwargs(cfg))
    for field in backbone_options(cfg.model.backbone):
        if hasattr(cfg.model, field) and getattr(cfg.model, field) is None and field in backbone.spec:
            setattr(cfg.model, field, backbone.spec[field])
    return backbone.num_features


def backbone_kwargs(cfg: Config) -> dict:
    """The ``model`` fields the user set, as keyword arguments of the backbone."""
    fields = ("patch_size", "width", "small_stem", "drop_path_rate", "embed_dim", "depth", "num_heads")
    return {k: getattr(cfg.model, k) for k in fields if getattr(cfg.model, k) is not None}
