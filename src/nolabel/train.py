"""The one training loop: every method runs through :func:`train`.

It owns precision, step-indexed schedules, gradient clipping, EMA updates, logging,
checkpoints (every epoch, every ``run.save_every_steps`` steps and on SIGINT/SIGTERM) and
exact resume. Every value is checked before the data is read
(:func:`nolabel.validation.validate`); a run refused before its first step leaves nothing
in its folder; an interrupted run raises :class:`TrainingInterrupted` once its checkpoint
is written.
"""
from __future__ import annotations

import json
import math
import os
import random
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nolabel import dist_setup
from nolabel.backbones import build_backbone
from nolabel.checkpoint import CHECKPOINT, load_resume_state, rng_state, save_checkpoint, set_rng_state
from nolabel.config import Config, save_yaml, switch
from nolabel.data import open_images
from nolabel.data.loading import MAX_UPSCALE
from nolabel.knn_monitor import KnnMonitor
from nolabel.methods import RunShape, StepInfo, get_method
from nolabel.ops import dist
from nolabel.ops.ema import ema_update
from nolabel.ops.schedules import cosine, warmup_cosine
from nolabel.optim import build_optimizer, clip_gradients_, set_schedule_values
from nolabel.presets import backbone_kwargs, resolve
from nolabel.runlog import MetricsLog, Progress, get_logger, plot_metrics
from nolabel.runs import BAD_FILES, CONFIG_FILE, ENCODER_FILE, load_encoder
from nolabel.validation import validate
from nolabel.views import MultiCrop, normalize


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, impossible batch size...)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after its checkpoint was written. ``exit_code``
    is the shell's status for the signal (130, 143): ``nolabel train && nolabel eval``
    stops there. ``command`` continues the run; a caller that continues it another way
    (``nolabel demo``) sets its own."""

    def __init__(self, signum: int, run_dir: Path, epoch: int, step: int, complete: bool = False,
                 command: str | None = None):
        super().__init__(signum, str(run_dir))
        self.signum, self.run_dir, self.epoch, self.step, self.complete = signum, Path(run_dir), epoch, step, complete
        self.exit_code = 128 + signum
        self.command = command or f"nolabel train --out {shlex.quote(str(run_dir))} --resume"

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.complete:
            return f"interrupted ({name}) as the last epoch ended: the run in {self.run_dir} is complete"
        return (f"interrupted ({name}) in epoch {self.epoch}, step {self.step}: the checkpoint in {self.run_dir} "
                f"is kept; continue with `{self.command}`")


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


class _StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:       # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config, resume: bool = False,
          on_step: Callable[[int, dict], None] | None = None) -> Path:
    """Train ``cfg.method`` on ``cfg.data.train`` into ``cfg.run.out``.

    With ``resume`` the run continues from ``run_dir/checkpoint.pt`` and, on CPU with
    the same seed, reproduces the losses of an uninterrupted run. ``on_step(step,
    logs)`` is called after every optimisation step (tests, notebooks).
    Returns the run folder; raises :class:`TrainingInterrupted` after checkpointing on
    SIGINT/SIGTERM.
    """
    validate(cfg, resume=resume)          # every value, before anything is read or written
    out = Path(cfg.run.out)
    device, precision = dist_setup.pick_device(cfg.run.device, cfg.run.precision)
    threads = dist_setup.set_cpu_threads(cfg.run.threads)
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
    try:   # set-up: a run refused here (its data, its batch size...) takes away what it created
        _seed_everything(cfg.run.seed + rank)
        if resume and cfg.run.recipe == "auto":  # saved configs name their recipe; without one the run
            cfg.run.recipe = "thesis"            # predates recipes and used the thesis values
        data = open_images(cfg.data.train, image_size=cfg.data.image_size, in_memory=switch(cfg.data.in_memory, "--data.in_memory"),
                           num_workers=cfg.data.num_workers, memory_limit_gb=cfg.data.memory_limit_gb,
                           progress=main and cfg.run.progress)
        method_cls = get_method(cfg.method)
        resolve(cfg, data.image_size, len(data), method_cls.default_optim, method_cls.recipes)
        if main:
            save_yaml(cfg, out / CONFIG_FILE)
        memory_format = dist_setup.memory_format(cfg.run.channels_last, cfg.model.backbone, device)
        log.info("%s on %s: %d images at %d px, %s, %d epochs, batch %d, %s/%s%s, %d CPU threads%s", cfg.method,
                 cfg.data.train, len(data), data.image_size, cfg.model.backbone, cfg.run.epochs,
                 cfg.run.batch_size, device, precision,
                 ", channels-last" if memory_format == torch.channels_last else "", threads,
                 f", {world} processes" if world > 1 else "")
        _report_bad(data.bad, out, log, main, data.upscaled)
        knn = KnnMonitor.create(cfg, data, log, main)   # k-NN learning curves (--eval.*)

        backbone = build_backbone(cfg.model.backbone, image_size=data.image_size, **backbone_kwargs(cfg))
        if cfg.model.init and not resume:     # a resumed run takes every weight from its checkpoint
            _init_backbone_(backbone, cfg.model.init)
            log.info("backbone initialised from %s", cfg.model.init)
        method = method_cls(cfg.method_config, backbone,
                            RunShape(image_size=data.image_size, epochs=cfg.run.epochs, n_images=len(data)))
        if cfg.model.init and method.encoder() is not backbone:
            raise TrainingError(f"--model.init={cfg.model.init}: {cfg.method} changes the backbone's architecture "
                                f"({method.encoder().spec}), so the initial weights cannot be used "
                                "(for DeepCluster, --deepcluster.sobel=false keeps it)")
        if main:   # the encoder's exact architecture (a method may change it, e.g. DeepCluster's Sobel input)
            (out / ENCODER_FILE).write_text(json.dumps(method.encoder().spec, indent=1))
            save_yaml(cfg, out / CONFIG_FILE)   # again, with the values the method chose (Method.resolve)
        method.to(device, memory_format=memory_format)   # conv weights NHWC with --run.channels_last
        multicrop = MultiCrop(method.view_specs()).to(device)

        per_process = cfg.run.batch_size // world
        steps_per_epoch = data.steps_per_epoch(per_process, drop_last=True, world_size=world) if per_process else 0
        if per_process < 1 or steps_per_epoch < 1:
            raise TrainingError(f"--batch-size {cfg.run.batch_size} is larger than the {len(data)} images of "
                                f"{cfg.data.train} (over {world} processes): lower --batch-size")
        total_steps = cfg.run.epochs * steps_per_epoch
        o = cfg.optim
        base_lr = o.lr * cfg.run.batch_size / 256          # linear scaling rule (thesis 5.3.2)
        warmup_steps = int(round(o.warmup_epochs * steps_per_epoch))
        schedules = {
            "lr": lambda s: warmup_cosine(s, total_steps, warmup_steps, base_lr, o.min_lr),
            "weight_decay": lambda s: cosine(s, total_steps, o.weight_decay, o.weight_decay_end),
            **method.schedules(total_steps, steps_per_epoch),
        }
        optimizer = build_optimizer(o.optimizer, method, lr=base_lr, weight_decay=o.weight_decay,
                                    momentum=o.momentum)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    except BaseException:
        if new_files is not None:
            get_logger(None, enabled=main)      # closes train.log before it goes
            new_files.remove()
        raise

    epoch, start_step, global_step = 0, 0, 0
    # the running sums of the epoch an interruption cut (a mid-epoch checkpoint carries them), so
    # that the resumed epoch's record averages over all its steps, as an uninterrupted run's does
    resumed_sums: dict[str, float] = {}
    resumed_count = 0
    metrics = MetricsLog(out, enabled=main, tensorboard=cfg.run.tensorboard)
    ckpt_path = out / CHECKPOINT
    if resume:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        resumed_sums, resumed_count = dict(state.get("epoch_sums", {})), int(state.get("epoch_count", 0))
        set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
        threads = dist_setup.set_cpu_threads(cfg.run.threads, state.get("threads"))   # auto: the run's own count
        metrics.truncate_from(global_step)
        log.info("resumed from %s at epoch %d, step %d (%d CPU threads)", ckpt_path, epoch + 1, global_step, threads)
        del state
    elif main:
        metrics.truncate_from(0)

    model = dist_setup.wrap_ddp(method, device) if world > 1 else method
    autocast = dist_setup.autocast(device, precision)
    trainable = [p for p in method.parameters() if p.requires_grad]

    def checkpoint(ep: int, step_in_epoch: int, sums: dict | None = None, count: int = 0) -> None:
        rngs = dist.all_gather_object(rng_state())
        if main:
            save_checkpoint(ckpt_path, {
                "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": ep, "step_in_epoch": step_in_epoch,
                "global_step": global_step, "rng": rngs, "config": cfg.to_dict(), "threads": threads,
                "epoch_sums": dict(sums or {}), "epoch_count": count})

    data_pass = _whole_dataset_pass(method, data, per_process, device, autocast, rank, world, log, memory_format)
    progress = Progress(main and cfg.run.progress, total_steps)
    with _StopFlag() as stop:
        while epoch < cfg.run.epochs:
            method.train()
            if start_step == 0:   # mid-epoch resumes keep the hook's results from the checkpoint
                method.on_epoch_start(epoch, data_pass)
            progress.start_epoch(epoch, cfg.run.epochs, steps_per_epoch, start_step)
            sums: dict[str, float] = resumed_sums if start_step else {}
            count = resumed_count if start_step else 0
            t_last = time.time()
            batches = data.batches(per_process, shuffle=True, seed=cfg.run.seed, epoch=epoch,
                                   start_step=start_step, drop_last=True, rank=rank, world_size=world,
                                   num_workers=cfg.data.num_workers)
            step_in_epoch = start_step
            for batch in batches:
                if batch.bad or batch.upscaled:
                    _report_bad(batch.bad, out, log, main, batch.upscaled)
                values = {name: fn(global_step) for name, fn in schedules.items()}
                info = StepInfo(global_step, epoch, total_steps, steps_per_epoch, values, index=batch.index)
                set_schedule_values(optimizer, values["lr"], values["weight_decay"])
                views = [v.contiguous(memory_format=memory_format)    # augmented in fp32, outside autocast
                         for v in multicrop(batch.images.to(device, non_blocking=True))]
                with autocast:
                    loss, logs = model(views, info)
                if not torch.isfinite(loss):
                    progress.close()
                    raise TrainingError(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {global_step}: training stopped. "
                        f"The last good checkpoint is kept in {ckpt_path if ckpt_path.exists() else out}; "
                        "lower --optim.lr, check --optim.clip_grad, or use --run.precision=fp32")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                for p in method.frozen_parameters(info):   # dropped first: they take no part in clipping
                    p.grad = None
                if o.clip_grad and o.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    clip_gradients_(trainable, o.clip_grad, o.clip_mode)
                scaler.step(optimizer)
                scaler.update()
                for student, teacher in method.ema_pairs():
                    ema_update(teacher, student, values["teacher_momentum"])

                now = time.time()
                images_per_s = len(batch.images) * world / max(now - t_last, 1e-9)
                t_last = now
                record = {"loss": loss.item(), **{k: float(v) for k, v in logs.items()},
                          "lr": values["lr"], "weight_decay": values["weight_decay"],
                          **{k: v for k, v in values.items() if k not in ("lr", "weight_decay")}}
                for k, v in record.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if global_step % cfg.run.log_every == 0 or step_in_epoch == steps_per_epoch - 1:
                    metrics.write({"type": "step", "epoch": epoch, "step": global_step, **record,
                                   "images_per_s": images_per_s})
                progress.update(global_step + 1, record["loss"], values["lr"], images_per_s)
                if on_step is not None:
                    on_step(global_step, record)
                global_step += 1
                step_in_epoch += 1
                if stop.signal is not None:
                    break
                if step_in_epoch < steps_per_epoch and _steps_checkpoint_due(cfg.run.save_every_steps, global_step):
                    checkpoint(epoch, step_in_epoch, sums, count)   # the interrupt's mid-epoch checkpoint
            progress.close()
            if stop.signal is not None and step_in_epoch < steps_per_epoch:
                checkpoint(epoch, step_in_epoch, sums, count)
                _interrupted(stop.signal, out, epoch + 1, global_step, log)
            means = {k: v / max(count, 1) for k, v in sums.items()}
            _end_of_epoch(method, means, epoch, global_step, data, metrics, log)
            epoch += 1
            start_step = 0
            knn.after_epoch(method.encoder(), epoch, cfg.run.epochs, global_step, metrics, log, progress)
            if epoch % cfg.run.save_every == 0 or epoch == cfg.run.epochs or stop.signal is not None \
                    or _steps_checkpoint_due(cfg.run.save_every_steps, global_step):
                checkpoint(epoch, 0)
            if main:
                plot_metrics(out)
            if stop.signal is not None:
                _interrupted(stop.signal, out, epoch, global_step, log, complete=epoch >= cfg.run.epochs)
    metrics.close()
    log.info("done: %d epochs in %s", cfg.run.epochs, out)
    return out


def _steps_checkpoint_due(every: int, global_step: int) -> bool:
    """Whether ``--run.save_every_steps`` (0: off) asks for a checkpoint once ``global_step``
    steps are done: mid-epoch, the one an interruption writes (its running sums with it); at
    an epoch's end, that epoch's own."""
    return every > 0 and global_step % every == 0


def _interrupted(signum: int, out: Path, epoch: int, step: int, log, complete: bool = False):
    """Log the interruption in train.log and raise :class:`TrainingInterrupted`."""
    log.info("interrupted (%s) in epoch %d, step %d: checkpoint saved", signal.Signals(signum).name, epoch, step)
    raise TrainingInterrupted(signum, out, epoch, step, complete=complete)


def _init_backbone_(backbone: torch.nn.Module, spec: str) -> None:
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


def _whole_dataset_pass(method, data, batch_size, device, autocast, rank, world, log,
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
        idx, first = _unique_first(idx)
        log.info("pass over %d images for %s in %.1fs", len(idx), type(method).__name__, time.time() - t0)
        return out[first], idx

    run.labels = data.labels_tensor() if data.has_labels else None
    return run


def _unique_first(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique values of ``index`` and the position of the first occurrence of each."""
    values, inverse = torch.unique(index, sorted=True, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((len(values),), len(index), dtype=torch.long, device=index.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return values, first


def _end_of_epoch(method, means, epoch, global_step, data, metrics, log) -> None:
    warnings = method.health(means)
    for w in warnings:
        log.warning("epoch %d: %s", epoch + 1, w)
    record = {"type": "epoch", "epoch": epoch, "step": global_step - 1, **means,
              "skipped_files": len(data.bad), "collapse_warnings": len(warnings)}
    metrics.write(record)
    health = " ".join(f"{k} {means[k]:.4g}" for k in ("teacher_entropy", "kl", "emb_std") if k in means)
    log.info("epoch %d: loss %.4f %s", epoch + 1, means.get("loss", math.nan), health)


def _report_bad(bad: list[tuple[str, str]], out: Path, log, main: bool,
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
