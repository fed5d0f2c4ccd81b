"""What can be evaluated: a run folder, an exported backbone, ``random:<backbone>``
(random initialisation) or ``pixels`` (raw pixels), behind one interface so that
baselines run exactly like trained models."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nolabel.knn_monitor import embed
from nolabel.views import normalize

MODEL_FORMS = ("a run folder (from `nolabel train`)", "an exported backbone folder (from `nolabel export`)",
               "random:<backbone> (random initialisation, e.g. random:vit_tiny)",
               "random:<run or export folder> (that architecture, randomly initialised)", "pixels (raw pixels)")


@dataclass
class FeatureModel:
    """``features(uint8 (B,3,S,S)) -> float (B,D)``. ``image_size`` is the side the
    model expects its inputs at (None: any; the data's own size is used)."""
    name: str
    network: nn.Module | None
    image_size: int | None

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.network is None:                  # raw pixels, normalised and flattened
            return normalize(images).flatten(1)
        return embed(self.network, images)        # the preprocessing of the k-NN curves during training

    def to(self, device) -> "FeatureModel":
        if self.network is not None:
            self.network.to(device).eval()
        return self


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "checkpoint.pt").is_file()


def _is_export(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "backbone.safetensors").is_file()


def _architecture(path: Path) -> tuple[dict, int]:
    """(build_backbone kwargs, image size) of a run folder or an export, no weights."""
    import json

    from nolabel.config import load_yaml
    from nolabel.presets import backbone_kwargs

    if _is_run(path):
        cfg = load_yaml(path / "config.yaml")
        if (path / "encoder.json").is_file():     # written by the loop: the encoder as trained
            return json.loads((path / "encoder.json").read_text()), cfg.data.image_size
        return {"name": cfg.model.backbone, "image_size": cfg.data.image_size, **backbone_kwargs(cfg)}, \
            cfg.data.image_size
    config = json.loads((path / "config.json").read_text())
    return dict(config["backbone"]), config.get("image_size")


def _run_folder_backbone(path: Path) -> tuple[nn.Module, int]:
    from nolabel.backbones import build_backbone
    from nolabel.checkpoint import CHECKPOINT, load_checkpoint, state_with_prefix
    from nolabel.config import load_yaml
    from nolabel.methods import get_method

    cfg = load_yaml(path / "config.yaml")
    network = build_backbone(**_architecture(path)[0])
    state = load_checkpoint(path / CHECKPOINT)["method"]
    network.load_state_dict(state_with_prefix(state, get_method(cfg.method).encoder_prefix))
    return network, cfg.data.image_size


def load_model(spec: str, image_size: int | None = None) -> FeatureModel:
    """Resolve a model spec. ``image_size`` is needed only for ``random:<backbone>``
    (build it for the data's size). Raises ValueError naming the accepted forms."""
    from nolabel.backbones import build_backbone, backbone_names
    from nolabel.checkpoint import load_backbone

    if spec == "pixels":
        return FeatureModel("pixels", None, None)
    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        size = None
        if _is_run(Path(name)) or _is_export(Path(name)):
            kwargs, size = _architecture(Path(name))
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
    if _is_run(path):
        network, size = _run_folder_backbone(path)
        return FeatureModel(spec, network.eval(), size)
    if _is_export(path):
        network = load_backbone(path)
        return FeatureModel(spec, network, network.export_config.get("image_size"))
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
