"""Every value of a run checked in one place, before its data is read or its folder
written: a typo fails in a second with a message that names the option and what it
accepts, not after the dataset has loaded, and a refused run leaves nothing behind.

What only the data can tell (a batch larger than the dataset) is checked by the
training loop once the data is open.
"""
from __future__ import annotations

from pathlib import Path

from nolabel.backbones import backbone_names
from nolabel.backbones.vit import VIT_SIZES
from nolabel.config import Config, ConfigError, switch
from nolabel.dist_setup import check_threads, pick_device
from nolabel.knn_monitor import check_eval_config
from nolabel.methods import get_method
from nolabel.optim import OPTIMIZERS, check_clip_mode
from nolabel.presets import check_recipe
from nolabel.tensorboard_log import check_tensorboard


def validate(cfg: Config, resume: bool = False) -> None:
    """Raise a ValueError (usually a :class:`ConfigError`) naming the first wrong value
    of ``cfg``; ``resume``: the run continues from its checkpoint (``model.init`` unused)."""
    run, data, model, optim = cfg.run, cfg.data, cfg.model, cfg.optim
    get_method(cfg.method).check_config(cfg.method_config)  # lists the methods; the method's own values
    if not data.train:
        raise ConfigError("data.train is empty: give --data SPEC (a folder, .tar/.tar.gz, .txt/.csv list, cifar10:DIR or demo)")
    if not run.out:
        raise ConfigError("run.out is empty: give --out FOLDER")
    if Path(run.out).exists() and not Path(run.out).is_dir():
        raise ConfigError(f"--out {run.out} is a file: give a folder for the run")

    _at_least(run.epochs, 1, "--epochs {}: train for at least 1 epoch")
    _at_least(run.batch_size, 1, "--batch-size {}: give at least 1 image a step")
    _at_least(run.log_every, 1, "--run.log_every={}: must be >= 1 (steps between metrics lines)")
    _at_least(run.save_every, 1, "--run.save_every={}: must be >= 1 (epochs between checkpoints)")
    _at_least(run.save_every_steps, 0, "--run.save_every_steps={}: must be >= 0 (optimisation steps between "
                                       "checkpoints; 0: off)")
    _at_least(data.image_size, 1, "--data.image_size={}: must be >= 1 (pixels)")
    _at_least(data.num_workers, 0, "--data.num_workers={}: must be >= 0")
    _at_least(data.memory_limit_gb, 0, "--data.memory_limit_gb={}: must be >= 0")
    for key in ("lr", "min_lr", "warmup_epochs", "weight_decay", "weight_decay_end", "momentum", "clip_grad"):
        _at_least(getattr(optim, key), 0, f"--optim.{key}={{}}: must be >= 0")

    if model.backbone is not None and model.backbone not in backbone_names():
        raise ConfigError(f"--backbone {model.backbone}: unknown backbone {model.backbone!r}; "
                          f"choose from {', '.join(backbone_names())}")
    if get_method(cfg.method).requires_vit and model.backbone is not None and model.backbone not in VIT_SIZES:
        raise ConfigError(f"--method {cfg.method} masks patch tokens and needs a ViT backbone: "
                          f"--model.backbone={model.backbone} is not one; choose from {', '.join(VIT_SIZES)}")
    if optim.optimizer is not None and optim.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optim.optimizer={optim.optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
    check_clip_mode(optim.clip_mode)
    check_recipe(run.recipe)
    pick_device(run.device, run.precision)                  # device and precision, and whether they go together
    switch(run.channels_last, "--run.channels_last")
    switch(data.in_memory, "--data.in_memory")
    switch(data.on_device, "--data.on_device")
    check_threads(run.threads)
    check_compile(run.compile)
    check_tensorboard(run.tensorboard)
    check_eval_config(cfg)
    if model.init and not resume and not model.init.startswith("random:") and model.init != "pixels" \
            and not Path(model.init).is_dir():
        raise ConfigError(f"--model.init={model.init}: no such folder (give a run folder or a `nolabel export` "
                          "folder)")


def check_compile(value) -> None:
    """``--run.compile``: false, true or one of torch's compile backends."""
    if isinstance(value, bool):
        return
    import torch._dynamo
    backends = torch._dynamo.list_backends(exclude_tags=())
    if not isinstance(value, str) or value not in backends:
        raise ConfigError(f"--run.compile={value!r}: choose true, false or a torch.compile backend "
                          f"({', '.join(backends)})")


def _at_least(value: float | None, low: float, message: str) -> None:
    if value is not None and value < low:
        raise ConfigError(message.format(value))
