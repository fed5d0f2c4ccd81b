"""What can be evaluated: a run folder, an exported backbone, ``random:<backbone>``
(random initialisation) or ``pixels`` (raw pixels), behind one interface so that
baselines run exactly like trained models."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nolabel.evaluate.cache import embed_normalized
from nolabel.views import normalize

MODEL_FORMS = ("a run folder (from `nolabel train`)", "an exported backbone folder (from `nolabel export`)",
               "random:<backbone> (random initialisation, e.g. random:vit_tiny)",
               "random:<run or export folder> (that architecture, randomly initialised)", "pixels (raw pixels)")


@dataclass
class FeatureModel:
    """``features(uint8 (B,3,S,S)) -> float (B,D)``. ``image_size`` is the side the
    model expects its inputs at (None: any; the data's own size is used). The one
    feature wrapper of evaluation: protocols, the feature cache and ``nolabel embed``."""
    name: str
    network: nn.Module | None
    image_size: int | None

    @torch.no_grad()
    def features(self, images: torch.Tensor, patch_tokens: str = "none") -> torch.Tensor:
        """ImageNet normalisation, no augmentation (the preprocessing of the k-NN curves during
        training), then the feature kind ``patch_tokens`` of :mod:`nolabel.evaluate.cache`;
        raw pixels are flattened."""
        return embed_normalized(self.network, normalize(images), patch_tokens)

    def to(self, device) -> "FeatureModel":
        if self.network is not None:
            self.network.to(device).eval()
        return self


def load_model(spec: str, image_size: int | None = None) -> FeatureModel:
    """Resolve a model spec. ``image_size`` is needed only for ``random:<backbone>``
    (build it for the data's size). Raises ValueError naming the accepted forms."""
    from nolabel.backbones import build_backbone, backbone_names
    from nolabel.runs import encoder_architecture, is_export, is_run, load_encoder

    if spec == "pixels":
        return FeatureModel("pixels", None, None)
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        size = None
        if is_run(name) or is_export(name):
            kwargs, size = encoder_architecture(name)
        elif name in backbone_names():
            kwargs = {"name": name, "image_size": image_size or 224}
        else:
            raise ValueError(f"model {spec!r}: unknown backbone {name!r}; valid: {', '.join(backbone_names())}, "
                             "or a run/export folder for its architecture")
        generator_state = torch.get_rng_state()
        torch.manual_seed(0)                      # the same random network every time
        network = build_backbone(**kwargs)
        torch.set_rng_state(generator_state)
        return FeatureModel(spec, network.eval(), size)
    path = Path(spec)
    if is_run(path) or is_export(path):
        network, size = load_encoder(path)
        return FeatureModel(spec, network, size)
    raise ValueError(f"model {spec!r} is not something nolabel can evaluate ("
                     f"{'no such path' if not path.exists() else 'no checkpoint or export found there'}); "
                     f"give one of: {'; '.join(MODEL_FORMS)}")


def load_model_for_data(spec: str, data_spec: str, image_size: int | None = None) -> tuple[FeatureModel, int]:
    """The model of ``spec`` and the side to read ``data_spec`` at: ``image_size`` when
    given, else the model's own size, else the data's probed size (``pixels`` and
    ``random:<backbone>``, which are then built for it)."""
    from nolabel.backbones import backbone_names
    from nolabel.data import probe_image_size

    needs_data_size = spec == "pixels" or spec.removeprefix("random:") in backbone_names()
    size = image_size or (probe_image_size(data_spec) if needs_data_size else None)
    model = load_model(spec, image_size=size)
    return model, size or model.image_size or probe_image_size(data_spec)
