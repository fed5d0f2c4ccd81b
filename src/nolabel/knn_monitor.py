"""k-NN learning curves during training (``--eval.*``, :class:`nolabel.config.EvalConfig`).

Every ``eval.every`` epochs and after the last one, the method's ``encoder()`` (eval
mode, no gradients, fp32) embeds a labelled bank and test set at the run's image size
with the evaluation preprocessing of ``nolabel eval`` (:func:`embed`), and the weighted
k-NN classifier of :mod:`nolabel.ops.knn` scores it with k=20, T=0.07 (thesis 5.3.2) and
k=200, T=0.1 (lightly's). ``metrics.jsonl`` gets a ``{"type": "knn"}`` record.

The images come from ``eval.knn_train`` / ``eval.knn_test`` (each capped to
``bank_size`` / ``test_size`` images as ``SPEC?subset=N`` would), or, when both are
empty and ``data.train`` is labelled, from two disjoint seeded class-stratified slices
of it (:func:`nolabel.data.subset.heldout_split`: test at most 10%, bank at most 40%).
They are decoded once per run. Under torchrun only rank 0 evaluates; the others wait at
a barrier. Random generators are left as they were, so a run's training is the same
with or without the curves, and a resumed run stays exact.

This module sits beside the training loop: it imports data, ops and views only, and
the evaluation layer imports :func:`embed` and :func:`dataset_features` from here.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from torch import nn

from nolabel.checkpoint import rng_state, set_rng_state
from nolabel.config import Config, ConfigError
from nolabel.data import DataError, ImageSet, open_images
from nolabel.data.subset import heldout_split, subset_indices
from nolabel.ops import dist
from nolabel.ops.knn import KNN_PROTOCOLS, knn_classify
from nolabel.views import normalize

# Default slices of a labelled data.train, at most these fractions of it: an evaluation
# then encodes at most half an epoch's images, once, forward only, at the base size
# (an epoch runs every image through several views, forward and backward), so it
# costs a few percent of an epoch; bank_size and test_size cap them on large sets.
HELDOUT_TEST_FRACTION = 0.1
HELDOUT_BANK_FRACTION = 0.4


def embed(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """An encoder's evaluation preprocessing: uint8 (B,3,S,S) at the base size, ImageNet
    normalisation, no augmentation; float32 features (B, D)."""
    return network(normalize(images)).float()


@torch.no_grad()
def dataset_features(encode: Callable[[torch.Tensor], torch.Tensor], data: ImageSet, batch_size: int = 256,
                     device: str | torch.device = "cpu", progress: bool = False,
                     desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` over ``data`` in dataset order, ``batch_size`` images at a time on
    ``device``: (features float32 (N, D), labels int64 (N,)) on CPU."""
    feats, labels = [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(data), desc=desc, leave=False, dynamic_ncols=True)
    for batch in data.batches(batch_size, shuffle=False, drop_last=False):
        feats.append(encode(batch.images.to(device)).float().cpu())
        labels.append(batch.labels)
        if bar is not None:
            bar.update(len(batch.labels))
    if bar is not None:
        bar.close()
    if not feats:
        raise ValueError(f"{data.spec}: no readable images to extract features from")
    return torch.cat(feats), torch.cat(labels)


def check_eval_config(cfg: Config) -> None:
    """Refuse wrong ``eval`` values before anything is opened (ConfigError naming the option)."""
    e = cfg.eval
    if e.every < 0:
        raise ConfigError(f"--eval.every={e.every}: must be >= 0 (epochs between k-NN evaluations; 0 disables)")
    for key in ("bank_size", "test_size", "batch_size"):
        if getattr(e, key) < 1:
            raise ConfigError(f"--eval.{key}={getattr(e, key)}: must be >= 1")
    if bool(e.knn_train.strip()) != bool(e.knn_test.strip()):
        given, missing = ("knn_train", "knn_test") if e.knn_train.strip() else ("knn_test", "knn_train")
        raise ConfigError(f"--eval.{given} is set but --eval.{missing} is not: give both labelled data specs, "
                          "or neither (a held-out slice of a labelled data.train is used)")


def heldout_sizes(n: int, bank_size: int, test_size: int) -> tuple[int, int]:
    """(bank, test) sizes of the default slices of a labelled training set of ``n`` images."""
    return min(bank_size, int(n * HELDOUT_BANK_FRACTION)), min(test_size, int(n * HELDOUT_TEST_FRACTION))


@contextlib.contextmanager
def _same_rng():
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class KnnMonitor:
    """Built by :meth:`create` on every process; only rank 0 holds the images.
    ``every == 0``: off (:meth:`after_epoch` does nothing)."""

    def __init__(self, every: int, batch_size: int, main: bool, bank: ImageSet | None = None,
                 test: ImageSet | None = None, what: str = ""):
        self.every, self.batch_size, self.main = every, batch_size, main
        self.bank, self.test, self.what = bank, test, what
        self.num_classes = len(bank.classes) if bank is not None and bank.classes else None

    @classmethod
    def create(cls, cfg: Config, data: ImageSet, log, main: bool) -> KnnMonitor:
        """The monitor of this run; off when ``eval.every`` is 0 or there is no labelled
        data (said once in the log). Every process decides the same; rank 0 opens and
        decodes the images."""
        e = cfg.eval
        off = cls(0, e.batch_size, main)
        if e.every == 0:
            log.info("k-NN curves off (--eval.every=0)")
            return off
        explicit = bool(e.knn_train.strip())
        if not explicit:
            if not data.has_labels:
                log.info("no k-NN curves: %s is unlabelled; give --eval.knn_train and --eval.knn_test "
                         "(labelled data specs) to log them", cfg.data.train)
                return off
            n_bank, n_test = heldout_sizes(len(data), e.bank_size, e.test_size)
            if n_bank < 1 or n_test < 1:
                log.info("no k-NN curves: %s has too few images (%d) for a held-out slice", cfg.data.train, len(data))
                return off
        if not main:
            return cls(e.every, e.batch_size, main)
        with _same_rng():
            if explicit:
                bank = _open_capped("knn_train", e.knn_train, e.bank_size, data.image_size, cfg)
                test = _open_capped("knn_test", e.knn_test, e.test_size, data.image_size, cfg)
                what = f"bank {e.knn_train}, test {e.knn_test}"
            else:
                bank_idx, test_idx = heldout_split(data.labels_tensor().tolist(), n_bank, n_test)
                bank, test = data.subset(bank_idx), data.subset(test_idx)
                what = f"disjoint stratified slices of {cfg.data.train}"
        log.info("k-NN curves every %d epoch(s): %d bank and %d test images at %d px (%s)",
                 e.every, len(bank), len(test), data.image_size, what)
        return cls(e.every, e.batch_size, main, bank, test, what)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, epochs_done: int, total_epochs: int) -> bool:
        return self.enabled and (epochs_done % self.every == 0 or epochs_done == total_epochs)

    def evaluate(self, encoder: nn.Module) -> dict[str, float]:
        """k-NN top-1/top-5 (percent) of ``encoder`` under both protocols; the encoder's
        train/eval mode and every random generator are left as they were."""
        was_training = encoder.training
        device = next(encoder.parameters()).device
        encoder.eval()
        try:
            with _same_rng(), torch.no_grad():
                bank_x, bank_y = dataset_features(lambda x: embed(encoder, x), self.bank, self.batch_size, device)
                test_x, test_y = dataset_features(lambda x: embed(encoder, x), self.test, self.batch_size, device)
        finally:
            encoder.train(was_training)
        out: dict[str, float] = {}
        for k, t in KNN_PROTOCOLS.values():
            r = knn_classify(bank_x, bank_y, test_x, test_y, k=k, temperature=t, num_classes=self.num_classes)
            out[f"knn_top1_k{k}"], out[f"knn_top5_k{k}"] = r["top1"], r["top5"]
        return out

    def after_epoch(self, encoder: nn.Module, epochs_done: int, total_epochs: int, global_step: int,
                    metrics, log, progress) -> None:
        """The loop's hook: evaluate when due (rank 0; the other ranks wait at a barrier),
        log a ``knn`` record, a train.log line and the progress bar's note."""
        if not self.due(epochs_done, total_epochs):
            return
        if self.main:
            t0 = time.time()
            result = self.evaluate(encoder)
            seconds = time.time() - t0
            metrics.write({"type": "knn", "epoch": epochs_done - 1, "step": global_step - 1, **result,
                           "n_bank": len(self.bank), "n_test": len(self.test), "seconds": round(seconds, 3)})
            (k1, _), (k2, _) = KNN_PROTOCOLS["thesis"], KNN_PROTOCOLS["lightly"]
            log.info("epoch %d: k-NN top-1 %.2f%% (k=%d) %.2f%% (k=%d) in %.1fs", epochs_done,
                     result[f"knn_top1_k{k1}"], k1, result[f"knn_top1_k{k2}"], k2, seconds)
            progress.note = f"knn {result[f'knn_top1_k{k1}']:.1f}%"
        dist.barrier()


def _open_capped(option: str, spec: str, cap: int, image_size: int, cfg: Config) -> ImageSet:
    """``spec`` at ``image_size``, at most ``cap`` images (as ``spec?subset=cap``), decoded once."""
    try:
        data = open_images(spec, image_size=image_size, in_memory=False, num_workers=cfg.data.num_workers,
                           progress=False)
        if not data.has_labels:
            raise ConfigError(f"--eval.{option}={spec}: k-NN needs labelled data (root/<class>/<image> folders, "
                              "cifar10:, demo)")
        keep = subset_indices(data.labels_tensor().tolist(), cap) if len(data) > cap else list(range(len(data)))
        return data.subset(keep)
    except DataError as err:
        raise ConfigError(f"--eval.{option}={spec}: {err}") from None
