"""Building a run: everything :func:`nolabel.train.train` needs before its first step.

:func:`build_run` opens the data, resolves the config once (``presets.resolve``: the
data's facts and the method's class make it complete; it is saved then, once), builds
the backbone and the method, the views, the optimizer and the step-indexed schedules,
and loads a checkpoint's state when the run resumes. A run refused here (its data, its
batch size...) takes away what it created in its folder. The loop itself is
:mod:`nolabel.train`.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from nolabel import dist_setup
from nolabel.backbones import build_backbone, is_backbone
from nolabel.checkpoint import load_resume_state, rng_state, save_checkpoint, set_rng_state
from nolabel.config import Config, save_yaml, switch
from nolabel.data import ImageSet, open_images
from nolabel.data.loading import MAX_UPSCALE
from nolabel.knn_monitor import KnnMonitor
from nolabel.methods import Method, RunShape, get_method
from nolabel.ops import dist
from nolabel.ops.schedules import cosine, warmup_cosine
from nolabel.optim import build_optimizer
from nolabel.presets import backbone_kwargs, resolve
from nolabel.runlog import MetricsLog, get_logger
from nolabel.runs import BAD_FILES, CHECKPOINT, CONFIG_FILE, ENCODER_FILE, load_encoder
from nolabel.views import MultiCrop, normalize


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, impossible batch size...)."""


@dataclass
class Run:
    """A built run: what the loop reads, and where it stands (``epoch``, ``start_step``:
    the step within ``epoch`` to start from, ``global_step``)."""
    cfg: Config
    out: Path
    device: torch.device
    precision: str
    threads: int
    rank: int
    world: int
    log: object
    data: ImageSet
    method: Method
    model: nn.Module                  # the method, or its DistributedDataParallel wrapper (build_run)
    multicrop: MultiCrop
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedules: dict[str, Callable[[int], float]]
    per_process: int                  # images per process and step
    steps_per_epoch: int
    memory_format: torch.memory_format
    autocast: object
    knn: KnnMonitor
    metrics: MetricsLog
    data_pass: Callable
    trainable: list = field(default_factory=list)   # the parameters clipping sees, listed once
    epoch: int = 0
    start_step: int = 0
    global_step: int = 0
    # the running sums of the epoch an interruption cut (a mid-epoch checkpoint carries them), so
    # that the resumed epoch's record averages over all its steps, as an uninterrupted run's does
    resumed_sums: dict[str, float] = field(default_factory=dict)
    resumed_count: int = 0
    owns_group: bool = False          # build_run started the process group (torchrun), so the run closes it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def total_steps(self) -> int:
        return self.cfg.run.epochs * self.steps_per_epoch

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def checkpoint(self, epoch: int, step_in_epoch: int, sums: dict | None = None, count: int = 0) -> None:
        """Save everything exact resume needs (every process's RNG state, gathered)."""
        rngs = dist.all_gather_object(rng_state())
        if self.main:
            save_checkpoint(self.checkpoint_path, {
                "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
                "global_step": self.global_step, "rng": rngs, "config": self.cfg.to_dict(),
                "threads": self.threads, "epoch_sums": dict(sums or {}), "epoch_count": count})


def build_run(cfg: Config, resume: bool) -> Run:
    """Everything before the first step (the module docstring); ``cfg`` was validated."""
    out = Path(cfg.run.out)
    device, precision = dist_setup.pick_device(cfg.run.device, cfg.run.precision)
    threads = dist_setup.set_cpu_threads(cfg.run.threads)
    started = not dist.is_dist()
    rank, _, world = dist.init_from_env(device.type)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    main = rank == 0
    # a damaged checkpoint is named now, not after the whole dataset has loaded
    state = load_resume_state(out, map_location=device) if resume else None
    new_files = _NewFiles(out) if main and not resume else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    log = get_logger(out, enabled=main)
    if warning := dist.shared_store_restart_warning():
        log.warning(warning)
    try:
        run = _build(cfg, resume, out, device, precision, threads, rank, world, log)
    except BaseException:
        if new_files is not None:
            get_logger(None, enabled=main)      # closes train.log before it goes
            new_files.remove()
        raise
    if state is not None:
        _load_state(run, state)
    elif main:
        run.metrics.truncate_from(0)
    run.owns_group = started and dist.is_dist()
    if world > 1:
        run.model = dist_setup.wrap_ddp(run.method, device)
    run.trainable = [p for p in run.method.parameters() if p.requires_grad]
    return run


def compile_backbones_(method: nn.Module, backend: bool | str) -> int:
    """``torch.compile`` every backbone inside ``method`` in place (``Module.compile``: the
    parameters, buffers and state_dict keys stay those of the module, so checkpoints and
    EMA pairs are unchanged). ``backend``: True for inductor, else a backend name. Returns
    how many were compiled. The heads, losses and the method's own logic stay eager."""
    options = {} if backend is True else {"backend": backend}
    backbones, names = [], []
    for name, m in method.named_modules():       # the outermost backbones (a wrapper holds another)
        if is_backbone(m) and not any(name.startswith(n + ".") for n in names):
            backbones.append(m)
            names.append(name)
    for m in backbones:
        m.compile(**options)
    return len(backbones)


DEVICE_DATA_SHARE = 0.25    # --data.on_device=auto: the decoded set may take this share of the free GPU memory


def _data_on_device(choice, data, device: torch.device) -> bool:
    """Whether the decoded images move to ``device`` (issue 14): never on the CPU (they are
    there already); ``auto``: a set in memory under :data:`DEVICE_DATA_SHARE` of the free
    device memory; ``true``: a set in memory, else a TrainingError naming the option."""
    if device.type == "cpu" or choice is False:
        return False
    if not data.in_memory:
        if choice is True:
            raise TrainingError(f"--data.on_device=true: {data.spec} is streamed from disk; add "
                                "--data.in_memory=true (and enough --data.memory_limit_gb) or drop the option")
        return False
    if choice is True:
        return True
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    return data.decoded_bytes < DEVICE_DATA_SHARE * free


def _build(cfg: Config, resume: bool, out: Path, device, precision, threads, rank, world, log) -> Run:
    main = rank == 0
    _seed_everything(cfg.run.seed + rank)
    if resume and cfg.run.recipe == "auto":  # saved configs name their recipe; without one the run
        cfg.run.recipe = "thesis"            # predates recipes and used the thesis values
    data = open_images(cfg.data.train, image_size=cfg.data.image_size,
                       in_memory=switch(cfg.data.in_memory, "--data.in_memory"), num_workers=cfg.data.num_workers,
                       memory_limit_gb=cfg.data.memory_limit_gb, progress=main and cfg.run.progress)
    resolve(cfg, data.image_size, len(data))      # the config is complete from here on
    if _data_on_device(switch(cfg.data.on_device, "--data.on_device"), data, device):
        data.to_device(device)
        log.info("the %.0f MB of decoded images are kept on %s", data.decoded_bytes / 2**20, device)
    if main:
        save_yaml(cfg, out / CONFIG_FILE)
    memory_format = dist_setup.memory_format(cfg.run.channels_last, cfg.model.backbone, device)
    log.info("%s on %s: %d images at %d px, %s, %d epochs, batch %d, %s/%s%s, %d CPU threads%s", cfg.method,
             cfg.data.train, len(data), data.image_size, cfg.model.backbone, cfg.run.epochs,
             cfg.run.batch_size, device, precision,
             ", channels-last" if memory_format == torch.channels_last else "", threads,
             f", {world} processes" if world > 1 else "")
    report_bad(data.bad, out, log, main, data.upscaled)
    knn = KnnMonitor.create(cfg, data, log, main)   # k-NN learning curves (--eval.*)

    backbone = build_backbone(cfg.model.backbone, image_size=data.image_size, **backbone_kwargs(cfg))
    if cfg.model.init and not resume:     # a resumed run takes every weight from its checkpoint
        init_backbone_(backbone, cfg.model.init)
        log.info("backbone initialised from %s", cfg.model.init)
    method = get_method(cfg.method)(cfg.method_config, backbone,
                                    RunShape(image_size=data.image_size, epochs=cfg.run.epochs, n_images=len(data),
                                             feature_dim=backbone.num_features))
    if cfg.model.init and method.encoder() is not backbone:
        raise TrainingError(f"--model.init={cfg.model.init}: {cfg.method} changes the backbone's architecture "
                            f"({method.encoder().spec}), so the initial weights cannot be used "
                            "(for DeepCluster, --deepcluster.sobel=false keeps it)")
    if main:   # the encoder's exact architecture (a method may change it, e.g. DeepCluster's Sobel input)
        (out / ENCODER_FILE).write_text(json.dumps(method.encoder().spec, indent=1))
    method.to(device, memory_format=memory_format)   # conv weights NHWC with --run.channels_last
    if cfg.run.compile:
        compiled = compile_backbones_(method, cfg.run.compile)
        log.info("torch.compile (%s) on %d backbone(s)", "inductor" if cfg.run.compile is True else cfg.run.compile,
                 compiled)

    per_process = cfg.run.batch_size // world
    steps_per_epoch = data.steps_per_epoch(per_process, drop_last=True, world_size=world) if per_process else 0
    if per_process < 1 or steps_per_epoch < 1:
        raise TrainingError(f"--batch-size {cfg.run.batch_size} is larger than the {len(data)} images of "
                            f"{cfg.data.train} (over {world} processes): lower --batch-size")
    o = cfg.optim
    base_lr = o.lr * cfg.run.batch_size / 256          # linear scaling rule (thesis 5.3.2)
    autocast = dist_setup.autocast(device, precision)
    return Run(cfg=cfg, out=out, device=device, precision=precision, threads=threads, rank=rank, world=world,
               log=log, data=data, method=method, model=method,
               multicrop=MultiCrop(method.view_specs()).to(device),
               optimizer=build_optimizer(o.optimizer, method, lr=base_lr, weight_decay=o.weight_decay,
                                         momentum=o.momentum),
               scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
               schedules=_schedules(cfg, method, base_lr, steps_per_epoch),
               per_process=per_process, steps_per_epoch=steps_per_epoch, memory_format=memory_format,
               autocast=autocast, knn=knn, metrics=MetricsLog(out, enabled=main, tensorboard=cfg.run.tensorboard),
               data_pass=whole_dataset_pass(method, data, per_process, device, autocast, rank, world, log,
                                            memory_format))


def _schedules(cfg: Config, method: Method, base_lr: float, steps_per_epoch: int) -> dict[str, Callable]:
    """Every step-indexed value: the loop's lr and weight decay, then the method's own."""
    o, total_steps = cfg.optim, cfg.run.epochs * steps_per_epoch
    warmup_steps = int(round(o.warmup_epochs * steps_per_epoch))
    return {
        "lr": lambda s: warmup_cosine(s, total_steps, warmup_steps, base_lr, o.min_lr),
        "weight_decay": lambda s: cosine(s, total_steps, o.weight_decay, o.weight_decay_end),
        **method.schedules(total_steps, steps_per_epoch),
    }


def _load_state(run: Run, state: dict) -> None:
    """Put a checkpoint's state into the built run (exact resume)."""
    run.method.load_state_dict(state["method"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.start_step, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    run.resumed_sums, run.resumed_count = dict(state.get("epoch_sums", {})), int(state.get("epoch_count", 0))
    set_rng_state(state["rng"][run.rank] if isinstance(state["rng"], list) else state["rng"])
    run.threads = dist_setup.set_cpu_threads(run.cfg.run.threads, state.get("threads"))   # auto: the run's own
    run.metrics.truncate_from(run.global_step)
    run.log.info("resumed from %s at epoch %d, step %d (%d CPU threads)", run.checkpoint_path, run.epoch + 1,
                 run.global_step, run.threads)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _NewFiles:
    """What a run is about to add to its folder ``out``: :meth:`remove` takes away the
    folders it created and the files it added, never what was there before."""

    def __init__(self, out: Path):
        self.out = Path(out).absolute()
        self.top = None                       # the highest folder mkdir(parents=True) will create
        for folder in (self.out, *self.out.parents):
            if folder.exists():
                break
            self.top = folder
        self.before = set() if self.top is not None else set(os.listdir(self.out))

    def remove(self) -> None:
        if self.top is not None:
            shutil.rmtree(self.top, ignore_errors=True)
            return
        for name in set(os.listdir(self.out)) - self.before:
            path = self.out / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def init_backbone_(backbone: torch.nn.Module, spec: str) -> None:
    """Copy the backbone weights of the run or export folder ``spec`` into ``backbone``,
    which must have the same architecture (``spec`` dicts equal)."""
    if spec == "pixels" or spec.startswith("random:"):
        raise TrainingError(f"--model.init={spec}: give a run folder or a `nolabel export` folder (a random "
                            "initialisation is the default without --model.init)")
    try:
        source, _ = load_encoder(spec)
    except ValueError as e:
        raise TrainingError(f"--model.init={spec}: {e}; give a run folder or a `nolabel export` folder") from None
    if source.spec != backbone.spec:
        diff = {k: (source.spec.get(k), backbone.spec.get(k)) for k in {*source.spec, *backbone.spec}
                if source.spec.get(k) != backbone.spec.get(k)}
        raise TrainingError(f"--model.init={spec}: its backbone differs from this run's "
                            f"(field: (init, this run) = {diff}); set the same --model.* options")
    backbone.load_state_dict(source.state_dict())


def whole_dataset_pass(method, data, batch_size, device, autocast, rank, world, log,
                       memory_format=torch.contiguous_format):
    """The ``data_pass`` given to ``Method.on_epoch_start`` (its docstring has the contract):
    each process maps ``fn`` over its shard of the dataset in order, then the rows of
    every process are gathered and sorted by dataset position."""

    def run(fn):
        t0 = time.time()
        was_training = method.training
        method.eval()
        outputs, index = [], []
        try:
            with torch.no_grad(), autocast:
                for batch in data.batches(batch_size, shuffle=False, drop_last=False, rank=rank, world_size=world):
                    images = normalize(batch.images.to(device, non_blocking=True))
                    outputs.append(fn(images.contiguous(memory_format=memory_format)).float())
                    index.append(batch.index.to(device))
        finally:
            method.train(was_training)
        out, idx = dist.all_gather_uneven(torch.cat(outputs)), dist.all_gather_uneven(torch.cat(index))
        # sharding pads by wrapping around: keep one row per image, in dataset order
        idx, first = unique_first(idx)
        log.info("pass over %d images for %s in %.1fs", len(idx), type(method).__name__, time.time() - t0)
        return out[first], idx

    run.labels = data.labels_tensor() if data.has_labels else None
    return run


def unique_first(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values of ``index`` and the position of the first occurrence of each."""
    values, inverse = torch.unique(index, sorted=True, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((len(values),), len(index), dtype=torch.long, device=index.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return values, first


def report_bad(bad: list[tuple[str, str]], out: Path, log, main: bool,
               upscaled: list[tuple[str, str]] = ()) -> None:
    """Append the files not listed yet to ``skipped_files.txt``, one ``location<TAB>reason``
    line each: the skipped ones (``bad``) and the tiny ones used after a large upscale."""
    if not (bad or upscaled) or not main:
        return
    path = out / BAD_FILES
    seen = set(path.read_text().splitlines()) if path.exists() else set()
    new_bad, new_up = ([line for line in (f"{key}\t{reason}" for key, reason in items) if line not in seen]
                       for items in (bad, upscaled))
    if not new_bad and not new_up:
        return
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in new_bad + new_up))
    for new, what in ((new_bad, "skipped %d unreadable file(s)"),
                      (new_up, f"used %d tiny image(s) upscaled more than {MAX_UPSCALE}x")):
        if new:
            log.warning(what + " (listed in %s), e.g. %s", len(new), path, new[0].replace("\t", ": "))
