"""Typed run configuration (docs/architecture.md, "Configuration").

A run is described by a :class:`Config`: general sections (``data``, ``model``,
``optim``, ``run``) and one section named after the method (``dino``, ...) whose
dataclass the method declares. ``None`` means "chosen from the data" (image size,
dataset size) when the run starts; the resolved config is saved in the run folder.

Values come from defaults, then a YAML file, then ``--section.key=value`` overrides,
each checked against the field's type with a message that names the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A wrong option or value: the message names it and what is accepted."""


@dataclass
class DataConfig:
    train: str = ""                    # data spec: folder, archive, cifar10:DIR, demo
    image_size: int | None = None      # base side of the uint8 batches; None: probed from the images
    in_memory: str = "auto"            # auto | true | false: decode everything once into RAM
    num_workers: int = 2               # decoding processes when streaming from disk
    memory_limit_gb: float = 4.0       # "auto" preloads below this many GB of decoded pixels
    on_device: str = "auto"            # auto | true | false: keep the decoded images on the GPU and draw
                                       # batches there (auto: in memory and under a quarter of its free memory)


@dataclass
class ModelConfig:
    backbone: str | None = None        # resnet18 | resnet50 | vit_tiny | vit_small | vit_base; None: by image size
    patch_size: int | None = None      # ViT only; None: 4 up to 32 px, 8 up to 64 px, else 16
    width: float | None = None         # ResNet width multiplier
    small_stem: bool | None = None     # ResNet 3x3 stem without max-pool; None: on up to 64 px
    drop_path_rate: float | None = None  # ViT stochastic depth
    embed_dim: int | None = None       # ViT width (vit_tiny 192, vit_small 384, vit_base 768)
    depth: int | None = None           # ViT blocks (12)
    num_heads: int | None = None       # ViT heads
    init: str = ""                     # a run or `nolabel export` folder of the same architecture whose
                                       # backbone weights start this run (e.g. DeeperCluster from RotNet, 3.3.1)


@dataclass
class OptimConfig:
    optimizer: str | None = None       # adamw | sgd; None: the method's
    lr: float | None = None            # base learning rate for a batch of 256 (scaled linearly)
    min_lr: float | None = None        # end of the cosine decay
    warmup_epochs: float | None = None  # None: 10% of the epochs, at most 10 (thesis 5.3.2 uses 10)
    weight_decay: float | None = None  # start of the weight-decay cosine
    weight_decay_end: float | None = None  # end of the weight-decay cosine
    momentum: float = 0.9              # SGD only
    clip_grad: float | None = None     # max gradient norm; 0 disables
    clip_mode: str = "per_param"       # per_param: each tensor's gradient norm bounded alone (DINO's code)
                                       # | global: one norm over all (clip_grad_norm_); see optim.clip_gradients_


@dataclass
class RunConfig:
    out: str = ""                      # run folder
    epochs: int | None = None
    batch_size: int | None = None      # total over all processes
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: str = "auto"            # auto (bf16/fp16 on GPU; bf16 on CPUs with AVX512-BF16/AMX, else
                                       # fp32: dist_setup.pick_device) | fp32 | bf16 | fp16 (autocast only)
    channels_last: str = "auto"        # auto (on for ResNets, off for ViTs) | true | false: NHWC weights and views
    threads: int | str = "auto"        # CPU threads (torch.set_num_threads); auto: OMP_NUM_THREADS if set, else
                                       # the cores available less those other jobs keep busy (dist_setup)
    recipe: str = "auto"               # auto | small | thesis: which values fill the fields you leave unset
                                       # (presets.apply_recipe); auto: small below 96 px, thesis from 96 px.
                                       # config.yaml records the one used
    log_every: int = 10                # steps between metrics.jsonl lines
    save_every: int = 1                # epochs between checkpoints (also on SIGINT/SIGTERM and at the end)
    save_every_steps: int = 0          # also a checkpoint every N optimisation steps, mid-epoch too (a crash
                                       # costs at most N steps; resume is as exact as after Ctrl-C); 0: off
    progress: bool = True              # progress bar
    compile: bool | str = False        # torch.compile the backbone(s): true (inductor) | a backend name
                                       # (eager, aot_eager, cudagraphs, ...) | false
    tensorboard: bool = False          # also write the metrics as TensorBoard events into RUN/tensorboard
                                       # (needs `pip install tensorboard`; nolabel.tensorboard_log)


@dataclass
class EvalConfig:
    """k-NN learning curves during training (nolabel.knn_monitor): weighted k-NN top-1 of
    the encoder with k=20, T=0.07 (thesis 5.3.2) and k=200, T=0.1 (lightly's)."""
    every: int = 1                     # epochs between k-NN evaluations (also after the last epoch); 0: off
    knn_train: str = ""                # labelled data spec of the neighbours (the bank); with knn_test. Both "":
                                       # a held-out slice of data.train when labelled, none when unlabelled
    knn_test: str = ""                 # labelled data spec classified against the bank
    bank_size: int = 5000              # at most this many bank images (a seeded class-stratified subset, as
                                       # SPEC?subset=N); the held-out slice: also at most 40% of data.train
    test_size: int = 1000              # at most this many test images; the held-out slice: also at most 10%
                                       # (an evaluation then costs a few % of an epoch: 2.5% for DINO, 4.5%
                                       # for SimCLR on the demo preset, measured on 2 CPU cores)
    batch_size: int = 256              # images per forward pass for the features (at the run's image size)


GENERAL_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig,
                                     "optim": OptimConfig, "run": RunConfig, "eval": EvalConfig}


@dataclass
class Config:
    method: str = "dino"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_config: Any = None          # the method's own dataclass, saved under the method's name
    # Dotted keys given a value by set_value (a YAML file, an option, a preset): a recipe
    # fills only the others (presets.apply_recipe). Not saved: config.yaml holds values only.
    explicit: set = field(default_factory=set, repr=False, compare=False)

    def sections(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in GENERAL_SECTIONS}
        if self.method_config is not None:
            out[self.method] = self.method_config
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for name, section in self.sections().items():
            out[name] = dataclasses.asdict(section)
        return out


def _method_config_class(method: str) -> type:
    from nolabel.methods import get_method  # here, not at the top: the registry imports torch and every method
    return get_method(method).Config


def new_config(method: str = "dino") -> Config:
    cfg = Config(method=method)
    cfg.method_config = _method_config_class(method)()
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a nested dict (a YAML file or a saved run config)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    cfg = new_config(str(raw.get("method", "dino")))
    for name, values in raw.items():
        if name == "method":
            continue
        sections = cfg.sections()
        if name not in sections:
            raise ConfigError(f"{source}: unknown section {name!r}; valid sections: {sorted(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        for key, value in values.items():
            set_value(cfg, f"{name}.{key}", value, source=source)
    return cfg


def load_yaml(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    return config_from_dict(raw, source=str(path))


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _allowed(tp: Any) -> tuple[Any, ...]:
    """The member types of an annotation like ``int | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return (tp,)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    allowed = _allowed(tp)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{source}: {key} cannot be null")
    if isinstance(value, str) and str not in allowed:
        value = _number(value)              # YAML 1.1 reads "1e-3" as a string
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is str and isinstance(value, (bool, int, float)):
            if not any((typing.get_origin(u) or u) in (bool, int, float) for u in allowed):
                return str(value).lower() if isinstance(value, bool) else str(value)
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            return tuple(value) if origin is tuple else list(value)
    raise ConfigError(f"{source}: {key} expects {_describe(allowed)}, got {value!r}")


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
               tuple: "a list", list: "a list", type(None): "null"}


def _describe(allowed: tuple[Any, ...]) -> str:
    """What a user may write for a field of these types: "a number or null", not "float or NoneType"."""
    names = [_KIND_NAMES.get(typing.get_origin(t) or t, getattr(t, "__name__", str(t))) for t in allowed]
    return " or ".join(dict.fromkeys(names))


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def set_value(cfg: Config, dotted: str, value: Any, source: str = "override") -> None:
    """Set ``section.key`` to ``value`` (already parsed), checking the field's type."""
    if dotted == "method":
        raise ConfigError(f"{source}: choose the method with --method, not an override")
    if "." not in dotted:
        raise ConfigError(f"{source}: {dotted!r} is not of the form section.key")
    section_name, key = dotted.split(".", 1)
    sections = cfg.sections()
    if section_name not in sections:
        hint = (f" (section {section_name!r} belongs to another method; this run uses {cfg.method!r})"
                if _is_method(section_name) else "")
        raise ConfigError(f"{source}: unknown section {section_name!r}{hint}; valid sections: {sorted(sections)}")
    section = sections[section_name]
    hints = typing.get_type_hints(type(section))
    if key not in hints:
        raise ConfigError(f"{source}: unknown key {dotted!r}; valid keys of {section_name!r}: {sorted(hints)}")
    setattr(section, key, _coerce(value, hints[key], dotted, source))
    cfg.explicit.add(dotted)


SWITCHES = {"auto": "auto", "true": True, "false": False}


def switch(value: Any, option: str) -> str | bool:
    """An ``auto | true | false`` field (``data.in_memory``, ``run.channels_last``) as
    ``"auto"``, True or False; a ConfigError naming ``option`` for anything else."""
    choice = SWITCHES.get(str(value).lower())
    if choice is None:
        raise ConfigError(f"{option}={value!r}: choose auto, true or false")
    return choice


def _is_method(name: str) -> bool:
    from nolabel.methods import method_names
    return name in method_names()


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--section.key=value`` (or ``section.key=value``) strings; values are
    parsed as YAML scalars (``64``, ``0.5``, ``true``, ``null``, ``[0.1, 1.0]``)."""
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(f"override {item!r} must look like --section.key=value")
        dotted, raw = text.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_value(cfg, dotted, value, source=f"--{dotted}")
    return cfg


def diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for section in sorted(set(da) | set(db)):
        va, vb = da.get(section), db.get(section)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{section}.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            out.append(section)
    return out
