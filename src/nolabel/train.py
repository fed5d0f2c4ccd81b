"""The one training loop: every method runs through :func:`train`.

:func:`train` validates the config, builds the run (:func:`nolabel.train_setup.build_run`:
data, the config resolved once, method, optimizer, schedules, resumed state), then runs
:func:`run_epoch` until the last epoch; :func:`train_step` is one optimisation step.
The loop owns precision, step-indexed schedules, gradient clipping, EMA updates, logging,
checkpoints (every epoch, every ``run.save_every_steps`` steps and on SIGINT/SIGTERM) and
exact resume. Every value is checked before the data is read
(:func:`nolabel.validation.validate`); a run refused before its first step leaves nothing
in its folder; an interrupted run raises :class:`TrainingInterrupted` once its checkpoint
is written.
"""
from __future__ import annotations

import math
import shlex
import signal
import time
from pathlib import Path
from typing import Callable

import torch

from nolabel.config import Config
from nolabel.methods import StepInfo
from nolabel.ops import dist
from nolabel.ops.ema import ema_update
from nolabel.optim import clip_gradients_, set_schedule_values
from nolabel.runlog import Progress, plot_metrics
from nolabel.train_setup import Run, TrainingError, build_run, report_bad
from nolabel.validation import validate

__all__ = ["train", "run_epoch", "train_step", "TrainingError", "TrainingInterrupted"]


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
    run = build_run(cfg, resume)
    progress = Progress(run.main and cfg.run.progress, run.total_steps)
    with _StopFlag() as stop:
        while run.epoch < cfg.run.epochs:
            run_epoch(run, progress, stop, on_step)
    run.metrics.close()
    run.log.info("done: %d epochs in %s", cfg.run.epochs, run.out)
    if run.owns_group:   # left to interpreter exit, gloo's threads were destroyed still joinable
        dist.shutdown()  # ("terminate called without an active exception": SIGABRT in ~1 of 15 launches)
    return run.out


def run_epoch(run: Run, progress: Progress, stop: _StopFlag,
              on_step: Callable[[int, dict], None] | None = None) -> None:
    """The steps of ``run.epoch`` from ``run.start_step``, then the epoch's record, curves
    and checkpoint. Raises :class:`TrainingInterrupted` once the checkpoint is written
    when ``stop`` was signalled."""
    cfg, method, epoch = run.cfg, run.method, run.epoch
    method.train()
    if run.start_step == 0:   # mid-epoch resumes keep the hook's results from the checkpoint
        method.on_epoch_start(epoch, run.data_pass)
        for p in method.reinitialised_parameters():
            run.optimizer.state.pop(p, None)
    progress.start_epoch(epoch, cfg.run.epochs, run.steps_per_epoch, run.start_step)
    logs = StepLogs(run.device, run.resumed_sums, run.resumed_count) if run.start_step else StepLogs(run.device)
    shown = {"loss": math.nan}                 # the values last read back (the progress line's)
    t_read, images = time.time(), 0
    batches = run.data.batches(run.per_process, shuffle=True, seed=cfg.run.seed, epoch=epoch,
                               start_step=run.start_step, drop_last=True, rank=run.rank, world_size=run.world,
                               num_workers=cfg.data.num_workers, pin_memory=run.device.type == "cuda")
    step_in_epoch = run.start_step
    for batch in batches:
        if batch.bad or batch.upscaled:
            report_bad(batch.bad, run.out, run.log, run.main, batch.upscaled)
        record = train_step(run, batch, epoch)
        logs.add(record, run.global_step)
        images += len(batch.images) * run.world
        if run.global_step % cfg.run.log_every == 0 or step_in_epoch == run.steps_per_epoch - 1:
            shown = _read(run, logs, progress)          # the one read-back every log_every steps
            now = time.time()
            shown["images_per_s"] = images / max(now - t_read, 1e-9)   # over the steps since the last read
            t_read, images = now, 0
            run.metrics.write({"type": "step", "epoch": epoch, "step": run.global_step, **shown})
        progress.update(run.global_step + 1, shown["loss"], record["lr"], shown.get("images_per_s", 0.0))
        if on_step is not None:                          # a hook reads every step's values (a sync)
            on_step(run.global_step, {k: float(v) for k, v in record.items()})
        run.global_step += 1
        step_in_epoch += 1
        if stop.signal is not None:
            break
        if step_in_epoch < run.steps_per_epoch and _steps_checkpoint_due(cfg.run.save_every_steps, run.global_step):
            _read(run, logs, progress)                   # never a checkpoint after a non-finite loss
            run.checkpoint(epoch, step_in_epoch, logs.float_sums(), logs.count)  # the interrupt's mid-epoch one
    progress.close()
    _read(run, logs, progress)
    if stop.signal is not None and step_in_epoch < run.steps_per_epoch:
        run.checkpoint(epoch, step_in_epoch, logs.float_sums(), logs.count)
        _interrupted(stop.signal, run.out, epoch + 1, run.global_step, run.log)
    means = logs.means()
    _end_of_epoch(method, means, epoch, run.global_step, run.data, run.metrics, run.log)
    run.epoch = epoch = epoch + 1
    run.start_step = 0
    run.knn.after_epoch(method.encoder(), epoch, cfg.run.epochs, run.global_step, run.metrics, run.log, progress)
    if epoch % cfg.run.save_every == 0 or epoch == cfg.run.epochs or stop.signal is not None \
            or _steps_checkpoint_due(cfg.run.save_every_steps, run.global_step):
        run.checkpoint(epoch, 0)
    if run.main:
        plot_metrics(run.out)
    if stop.signal is not None:
        _interrupted(stop.signal, run.out, epoch, run.global_step, run.log, complete=epoch >= cfg.run.epochs)


def train_step(run: Run, batch, epoch: int) -> dict:
    """One optimisation step on ``batch``: views, loss, backward, clipping, optimizer and
    EMA updates. Returns the step's record (loss, the method's logs, every schedule value):
    the loss and the method's logs as 0-dim float32 tensors where they are computed, the
    schedule values as floats. Nothing is read back from the device (issue 14): the loop
    sums the records in :class:`StepLogs` and reads them every ``run.log_every`` steps."""
    cfg, method, optimizer, scaler = run.cfg, run.method, run.optimizer, run.scaler
    values = {name: fn(run.global_step) for name, fn in run.schedules.items()}
    info = StepInfo(run.global_step, epoch, run.total_steps, run.steps_per_epoch, values, index=batch.index)
    set_schedule_values(optimizer, values["lr"], values["weight_decay"])
    views = [v.contiguous(memory_format=run.memory_format)    # augmented in fp32, outside autocast
             for v in run.multicrop(batch.images.to(run.device, non_blocking=True))]
    with run.autocast:
        loss, logs = run.model(views, info)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for p in method.frozen_parameters(info):   # dropped first: they take no part in clipping
        p.grad = None
    o = cfg.optim
    if o.clip_grad and o.clip_grad > 0:
        scaler.unscale_(optimizer)
        clip_gradients_(run.trainable, o.clip_grad, o.clip_mode)
    scaler.step(optimizer)
    scaler.update()
    for student, teacher in method.ema_pairs():
        ema_update(teacher, student, values["teacher_momentum"])
    return {"loss": loss.detach().float(), **{k: _on_device(v) for k, v in logs.items()},
            "lr": values["lr"], "weight_decay": values["weight_decay"],
            **{k: v for k, v in values.items() if k not in ("lr", "weight_decay")}}


def _on_device(value):
    """A log value as the loop keeps it: a tensor detached in float32, a number as a float."""
    return value.detach().float() if isinstance(value, torch.Tensor) else float(value)


class StepLogs:
    """One epoch's step records, summed where they are computed: adding a record reads
    nothing back from the device (tensors stay tensors; schedule values are floats), nor
    does the check for a non-finite loss, which only notes the first such step on the
    device. :func:`_read` reads the values back (and raises on a non-finite loss) every
    ``run.log_every`` steps, at the epoch's end and before any checkpoint."""

    def __init__(self, device: torch.device, sums: dict | None = None, count: int = 0):
        self.sums: dict = dict(sums or {})
        self.count = count
        self.last: dict = {}
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)   # first non-finite loss's step
        self.bad_loss = torch.zeros((), device=device)

    def add(self, record: dict, step: int) -> None:
        loss = record["loss"]
        new = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(new, step, self.bad_step)
        self.bad_loss = torch.where(new, loss, self.bad_loss)
        for k, v in record.items():      # float64 sums, as Python's floats were
            self.sums[k] = self.sums.get(k, 0.0) + (v.double() if isinstance(v, torch.Tensor) else v)
        self.count += 1
        self.last = record

    def first_bad(self) -> tuple[int, float] | None:
        """(step, loss) of the first non-finite loss, or None (reads the device)."""
        step = int(self.bad_step)
        return None if step < 0 else (step, float(self.bad_loss))

    def latest(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.last.items()}

    def float_sums(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.sums.items()}

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.float_sums().items()}


def _read(run: Run, logs: StepLogs, progress: Progress) -> dict[str, float]:
    """Read the last step's values back from the device; a non-finite loss since the last
    read stops the run here (at most ``run.log_every`` steps after it happened), before any
    checkpoint could hold the weights it spoiled."""
    bad = logs.first_bad()
    if bad is not None:
        step, value = bad
        progress.close()
        where = run.checkpoint_path if run.checkpoint_path.exists() else run.out
        raise TrainingError(
            f"loss is {value} at epoch {step // run.steps_per_epoch + 1}, step {step}: training stopped "
            f"(seen at step {run.global_step}: the loss is read back every --run.log_every="
            f"{run.cfg.run.log_every} steps). The last good checkpoint is kept in {where}; "
            "lower --optim.lr, check --optim.clip_grad, or use --run.precision=fp32")
    return logs.latest()


def _steps_checkpoint_due(every: int, global_step: int) -> bool:
    """Whether ``--run.save_every_steps`` (0: off) asks for a checkpoint once ``global_step``
    steps are done: mid-epoch, the one an interruption writes (its running sums with it); at
    an epoch's end, that epoch's own."""
    return every > 0 and global_step % every == 0


def _interrupted(signum: int, out: Path, epoch: int, step: int, log, complete: bool = False):
    """Log the interruption in train.log and raise :class:`TrainingInterrupted`."""
    log.info("interrupted (%s) in epoch %d, step %d: checkpoint saved", signal.Signals(signum).name, epoch, step)
    raise TrainingInterrupted(signum, out, epoch, step, complete=complete)


def _end_of_epoch(method, means, epoch, global_step, data, metrics, log) -> None:
    warnings = method.health(means)
    for w in warnings:
        log.warning("epoch %d: %s", epoch + 1, w)
    record = {"type": "epoch", "epoch": epoch, "step": global_step - 1, **means,
              "skipped_files": len(data.bad), "collapse_warnings": len(warnings)}
    metrics.write(record)
    health = " ".join(f"{k} {means[k]:.4g}" for k in ("teacher_entropy", "kl", "emb_std") if k in means)
    log.info("epoch %d: loss %.4f %s", epoch + 1, means.get("loss", math.nan), health)
