"""What every method is: a module with a view preset, a ``training_step`` and the
few declarations the one training loop needs (docs/architecture.md, "A method").

The loop owns the optimizer, precision, schedules, checkpoints and logging; a
method owns its networks, its loss state (center, queue, prototypes) and its views.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nolabel.backbones import is_vit
from nolabel.backbones.vit import VIT_SIZES
from nolabel.views import ViewSpec, n_global


@dataclass
class StepInfo:
    """Where the loop is; ``values`` holds every schedule evaluated at ``step``."""
    step: int                      # global optimisation step, from 0
    epoch: int                     # from 0
    total_steps: int
    steps_per_epoch: int
    values: dict[str, float] = field(default_factory=dict)
    index: torch.Tensor | None = None   # int64 (B,) CPU: dataset positions of this process's batch


@dataclass
class RunShape:
    """What a method may need to know about the run when it is built."""
    image_size: int
    epochs: int
    n_images: int
    feature_dim: int | None = None     # the backbone's feature width (None: not known)


Schedule = Callable[[int], float]

# ``data_pass(fn) -> (outputs, index)``: see :meth:`Method.on_epoch_start`.
DataPass = Callable[[Callable[[torch.Tensor], torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


class Method(nn.Module):
    """Base class: one level of inheritance only.

    Subclasses set ``name``, ``Config`` (a dataclass), ``default_optim`` (values for
    the ``optim`` section's unset fields), ``recipes`` (optional), ``adam_betas`` (optional) and
    ``encoder_prefix`` (state-dict prefix of the backbone that evaluation and export use), and
    implement the methods below.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    default_optim: ClassVar[dict] = {}
    # Values for small images and small compute, by recipe name (presets.apply_recipe):
    # {"small": {"optim.lr": ..., "<method>.<field>": ...}}, each measured (BENCHMARKS.md).
    recipes: ClassVar[dict[str, dict]] = {}
    encoder_prefix: ClassVar[str] = "backbone"
    # AdamW's (beta1, beta2) when the run's optimizer is adamw (optim.build_optimizer reads it);
    # torch's defaults unless the method's paper says otherwise (MAE: (0.9, 0.95)).
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    # True for methods that mask patch tokens (MAE, iBOT): they need a ViT. Validation rejects
    # another backbone before the data is read, and the demo preset leaves the backbone to
    # the ViT default for them (presets.apply_demo_preset).
    requires_vit: ClassVar[bool] = False

    def __init__(self, cfg, backbone: nn.Module, shape: RunShape):
        super().__init__()
        if type(self).requires_vit:
            require_vit(backbone, type(self).name)
        type(self).check_config(cfg)
        type(self).resolve_config(cfg, shape)   # done already in a run (presets.resolve): a no-op there
        self.cfg = cfg
        self.shape = shape

    # --- the config, before anything is built ---------------------------------
    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise a ValueError naming the option when a value of ``cfg`` (the method's
        section) cannot work. ``validation.validate`` calls it before any data is read, so
        only the values given are checked (unset ones are None)."""

    @classmethod
    def resolve_config(cls, cfg, shape: RunShape) -> None:
        """Write into ``cfg`` every value left unset (None) that depends on the data (K, a
        cluster count, a temperature...) with :func:`fill`: the run's saved ``config.yaml``
        states it and a resumed run reads it rather than re-deriving it. The run's one
        resolution step (``presets.resolve``) calls it before anything is built; ``__init__``
        calls it again (nothing is left to fill then) so that a method built directly is
        complete too."""

    # --- declared to the loop -------------------------------------------------
    def view_specs(self) -> list[ViewSpec]:
        raise NotImplementedError

    @cached_property
    def n_global_views(self) -> int:
        """How many of the views are global (they come first): the ones a teacher sees and
        whose codes or targets are computed. Read once from ``view_specs()``
        (``views.n_global``)."""
        return n_global(self.view_specs())

    def schedules(self, total_steps: int, steps_per_epoch: int) -> dict[str, Schedule]:
        """Extra step-indexed values (teacher momentum, temperatures...)."""
        return {}

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) pairs the loop updates with ``values['teacher_momentum']``."""
        return []

    def param_group_rules(self) -> dict[str, dict]:
        """Parts of the network with their own optimizer rule: a parameter-name prefix ->
        group options (``nolabel.optim.GROUP_OPTIONS``), e.g. ``{"predictor": {"fixed_lr":
        True}}`` (SimSiam). Default: none, every parameter follows the loop's schedules."""
        return {}

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        """Parameters ``on_epoch_start`` has just re-initialised: the loop drops their
        optimizer state (momentum, Adam moments) so they start afresh, as a new optimizer
        would (DeepCluster's classifier, 3.2.1). Called after every ``on_epoch_start``."""
        return []

    def frozen_parameters(self, info: StepInfo) -> list[nn.Parameter]:
        """Parameters whose gradients are zeroed at this step (e.g. DINO's last layer
        during the first epoch)."""
        return []

    def encoder(self) -> nn.Module:
        """The backbone users evaluate and export."""
        module: nn.Module = self
        for part in self.encoder_prefix.split("."):
            module = getattr(module, part)
        return module

    def on_epoch_start(self, epoch: int, data_pass: DataPass) -> None:
        """Offline work before the epoch's first step (default: nothing). Deep-clustering
        methods (SeLa-v2, DeepCluster-v2: thesis 4.4) label the whole dataset here.

        ``data_pass(fn)`` runs ``fn`` over every image of the training set, un-augmented:
        ``fn`` gets float (b,3,S,S) images at the base size S, normalised as the views are
        (ImageNet mean/std), on the training device, under ``torch.no_grad()``, the run's
        autocast and with the method in eval mode (train mode is restored after), and
        returns a (b, ...) tensor. ``data_pass`` returns ``(outputs (M, ...) float32,
        index (M,) int64)`` on the training device, rows sorted by dataset position and
        identical on every process (each process runs its shard; rows are gathered).
        M == len(dataset) unless streamed files are unreadable (their rows are missing).
        ``data_pass.labels`` is None, or the (len(dataset),) int64 CPU class labels when the
        source is labelled (-1 where unknown): for logging only (e.g. NMI with the labels,
        thesis Fig. 3.3a), never for training.
        Nothing is computed unless ``data_pass`` is called, so a method chooses its
        epochs itself (e.g. ``epoch % every == 0``). Under ``torchrun`` every process must
        make the same calls (they gather).

        Called at the start of every epoch, including the first and an epoch a resumed run
        starts at, but *not* when a run resumes in the middle of an epoch: anything
        computed here that the steps need (labels, centroids) must be kept in buffers so
        the checkpoint carries it. Per-image state is looked up with ``info.index``.
        """

    def health(self, epoch_means: dict[str, float]) -> list[str]:
        """Collapse warnings from the epoch's mean logs (empty when healthy)."""
        return []

    # --- the work ---------------------------------------------------------------
    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        """views: float (B,3,h,w) per view, globals first. Returns (loss, logs)."""
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], info: StepInfo):
        # DistributedDataParallel calls forward: route it to training_step.
        return self.training_step(views, info)


def fill(cfg, field: str, default):
    """``cfg.field``, or ``default`` written into ``cfg`` when the field is unset (None)."""
    value = getattr(cfg, field)
    if value is None:
        value = default
        setattr(cfg, field, value)
    return value


def per_view(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_views: int) -> torch.Tensor:
    """Apply ``module`` to each view's rows: x (V*B, d_in) or (V, B, d_in) -> (V, B, d_out)."""
    return torch.stack([module(chunk) for chunk in x.reshape(n_views, -1, x.shape[-1])])


def forward_multicrop(backbone: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """Run ``backbone`` once per run of consecutive same-size views (multi-crop, thesis
    4.2.4) instead of once per view. views: V tensors (B,3,h_v,w_v). Returns (V*B, D)
    features in view order."""
    outputs = []
    start = 0
    while start < len(views):
        end = start
        while end + 1 < len(views) and views[end + 1].shape[-2:] == views[start].shape[-2:]:
            end += 1
        outputs.append(backbone(torch.cat(views[start:end + 1], dim=0)))
        start = end + 1
    return torch.cat(outputs, dim=0)


def project_multicrop(backbone: nn.Module, head: nn.Module, views: list[torch.Tensor], per_view_head: bool = False,
                      l2: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone then head over multi-crop views: the backbone once per run of same-size views
    (:func:`forward_multicrop`), then ``head`` on the features. views: V tensors (B,3,h,w).
    Returns (features (V*B, D), head outputs (V, B, ...)).

    ``per_view_head``: the head runs once per view, so each of its BatchNorm layers normalises
    one view's batch (the two-branch papers' code), else once on all V*B rows (DINO, SwAV).
    ``l2``: the head's outputs are l2-normalised in float32 (SwAV's projection, 4.2.1, which
    SeLa-v2 and DeepCluster-v2 share, 4.4).
    """
    feats = forward_multicrop(backbone, views)                           # (V*B, D)

    def project(x: torch.Tensor) -> torch.Tensor:
        out = head(x)
        return F.normalize(out.float(), dim=1) if l2 else out

    if per_view_head:
        return feats, per_view(project, feats, len(views))
    out = project(feats)
    return feats, out.reshape(len(views), views[0].shape[0], *out.shape[1:])


class MultiCropNetwork(nn.Module):
    """g = h o f: ``backbone`` then ``head`` over multi-crop views (:func:`project_multicrop`),
    the network DINO's student and teacher are (thesis 5.3.1)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """views: V tensors (B,3,h,w). Returns (features (V*B, D), outputs (V, B, K))."""
        return project_multicrop(self.backbone, self.head, views)


def require_vit(backbone: nn.Module, method: str) -> None:
    """A ValueError naming the option when ``backbone`` is not a ViT (``Method.requires_vit``:
    the methods that mask patch tokens, MAE and iBOT)."""
    if not is_vit(backbone):
        raise ValueError(f"--method {method} masks patch tokens and needs a ViT backbone: use "
                         f"--model.backbone={' / '.join(VIT_SIZES)}, not {type(backbone).__name__}")
