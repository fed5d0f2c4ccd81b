"""Evaluation protocol registry: name -> :class:`Protocol`.

A protocol is one module of this package that declares itself with :func:`register`:
its name and place in ``eval all`` (``order``), its title in ``eval.md``, what it needs
(labelled ``--train`` / ``--test``, a ViT, object masks, weights), its command-line options and help,
how it runs on an :class:`nolabel.evaluate.context.EvalContext`, its rows in the report
and, when it trains or embeds images, an estimate of its time. ``nolabel eval <name>``,
``nolabel eval all``, the reasons a protocol is skipped and ``eval.md`` all loop over
this registry, so a new protocol is one new file here (and its name in
:data:`nolabel.names.EVAL_PROTOCOLS`, which a test checks against this registry).

Modules here import no torch at the top (the work is imported inside :meth:`Protocol.run`):
building the command line reads them, and ``nolabel --help`` must answer at once.
"""
from __future__ import annotations

import argparse

# What a protocol does with each data option: "labels" (needs labelled data),
# "images" (needs the data, labels or not), "unused" (accepted for uniformity, not read).
LABELS, IMAGES, UNUSED = "labels", "images", "unused"


def given(**options) -> dict:
    """The options that were given (not None): the rest keep the protocol function's defaults,
    which live with the work, once."""
    return {k: v for k, v in options.items() if v is not None}


def pct(v) -> str:
    """An accuracy in percent as eval.md shows it."""
    return "-" if v is None else f"{v:.2f} %"


def frac(v) -> str:
    """A score in [0, 1] (NMI, mAP, recall, Jaccard) as eval.md shows it."""
    return "-" if v is None else f"{v:.3f}"


class Protocol:
    """What a protocol declares. Subclasses set the class attributes and override the
    methods they need; every method has a default that means "nothing"."""

    name: str = ""
    order: int = 100                          # place in `eval all` and eval.md
    title: str = ""                           # eval.md's name for it
    help: str = ""                            # argparse help (a literal % is written %%)
    data: dict[str, str] = {"train": LABELS, "test": LABELS}
    needs_vit: bool = False                   # reads a ViT's [CLS] self-attention
    needs_weights: bool = False               # trains the network (raw pixels have none)
    masks: str | None = None                  # object masks of --test: "required", or "optional" (used if there)
    seeded: bool = True                       # takes a ``seed`` option
    baseline: bool = True                     # `eval all --baselines` runs it on random init and raw pixels
    fast: dict = {}                           # `eval all --fast` options (short schedules)
    writes_without_out: bool = True           # False: no --out, no files (results printed, --json only)

    def why_not(self, ctx) -> str | None:
        """The reason this protocol does not apply to ``ctx``, or None. From the declarations."""
        for role in ("train", "test"):
            need = self.data.get(role, UNUSED)
            if need == UNUSED:
                continue
            if ctx.specs[role] is None:
                return f"needs --{role}"
            if need == LABELS and not ctx.has_labels(role):
                return f"needs labels; --{role} {ctx.specs[role]} has none"
        if self.masks == "required" and ctx.specs["test"] is not None and not ctx.features("test").has_masks:
            return f"needs object masks; --test {ctx.specs['test']} has none"
        if self.needs_weights and ctx.model.network is None:
            return "raw pixels have no weights to fine-tune"
        if self.needs_vit and ctx.arch != "vit":
            return f"needs a ViT; {ctx.model_spec} is {ctx.describe_model()}"
        return None

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """Options of ``nolabel eval <name>`` beyond the common ones."""

    def options(self, args: argparse.Namespace) -> dict:
        """Keyword options of :meth:`run` from ``eval <name>``'s parsed arguments."""
        return {}

    def add_all_options(self, parser: argparse.ArgumentParser) -> None:
        """Options this protocol adds to ``nolabel eval all`` (none by default)."""

    def all_options(self, args: argparse.Namespace) -> dict:
        """Keyword options of :meth:`run` from ``eval all``'s parsed arguments (only those given)."""
        return {}

    def run(self, ctx, **options) -> dict:
        """Run on an EvalContext; the result dict (with ``seconds``) goes into eval.json."""
        raise NotImplementedError

    def rows(self, result: dict) -> list[tuple[str, str, str]]:
        """(setting, metric, value) rows of a result in eval.md and on the terminal."""
        return []

    def summary(self, result: dict, model: str) -> list[str]:
        """Lines ``eval <name>`` prints; by default one per row."""
        return [f"{self.title} ({model}) {metric}: {value}" + (f"  [{setting}]" if setting else "")
                for setting, metric, value in self.rows(result)]

    def estimate(self, ctx, options: dict, timer) -> float | None:
        """Seconds this protocol is expected to take beyond the cached features, from
        ``timer``'s measured costs (:class:`nolabel.evaluate.estimate.Timer`); None:
        work on cached features only, seconds at most."""
        return None


_REGISTRY: dict[str, Protocol] = {}


def register(cls: type[Protocol]) -> type[Protocol]:
    if not cls.name or not cls.title:
        raise ValueError(f"{cls.__name__} declares no name or title")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    """Import every module of this package: each registers its protocol on import."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def protocol_names() -> list[str]:
    """Every protocol, in ``eval all`` order."""
    _load_builtin()
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, n))


def get_protocol(name: str) -> Protocol:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(protocol_names())}")
    return _REGISTRY[name]


def protocols() -> list[Protocol]:
    return [_REGISTRY[n] for n in protocol_names()]


__all__ = ["IMAGES", "LABELS", "UNUSED", "Protocol", "frac", "get_protocol", "given", "pct", "protocol_names", "protocols",
           "register"]
