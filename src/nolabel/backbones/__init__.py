"""Image backbones: ResNet and Vision Transformer trunks with one interface.

Every backbone maps a float (B, 3, H, W) normalised image batch to (B, num_features)
features and carries ``spec``, a plain dict such that ``build_backbone(**model.spec)``
rebuilds the same architecture::

    model = build_backbone("vit_small", image_size=32)        # patch 4 by default
    feats = model(images)                                      # (B, 384)
    twin = build_backbone(**model.spec); twin.load_state_dict(model.state_dict())

ResNets add ``forward_maps`` (last-stage maps); ViTs add ``forward_tokens``,
``get_last_selfattention``, ``patch_size``, ``embed_dim`` and ``num_heads``.
"""
from nolabel.backbones.registry import backbone_names, backbone_options, build_backbone, is_backbone, register
from nolabel.backbones.resnet import ResNet, resnet18, resnet50
from nolabel.backbones.vit import VisionTransformer, is_vit, vit_base, vit_small, vit_tiny

__all__ = [
    "ResNet",
    "VisionTransformer",
    "backbone_names",
    "backbone_options",
    "build_backbone",
    "is_backbone",
    "is_vit",
    "register",
    "resnet18",
    "resnet50",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
