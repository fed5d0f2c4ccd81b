"""Name -> constructor registry of backbones, and the checked ``build_backbone`` entry point.

A constructor ("factory") is a function ``factory(image_size: int = 224, **options) -> nn.Module``
whose keyword parameters are the options a user may override. Factories register themselves
with the ``@register("name")`` decorator when their module is imported (the package
``__init__`` imports them all), so ``backbone_names()`` lists them in import order.
"""
from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from torch import nn

Factory = TypeVar("Factory", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory`` under ``name`` (which must be new)."""

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        params = inspect.signature(factory).parameters
        if "image_size" not in params:
            raise TypeError(f"backbone factory {factory.__qualname__} must take an `image_size` argument")
        _REGISTRY[name] = factory
        return factory

    return decorator


def backbone_names() -> list[str]:
    """Registered backbone names, in registration order."""
    return list(_REGISTRY)


def backbone_options(name: str) -> list[str]:
    """The keyword options ``build_backbone(name, image_size, **options)`` accepts (besides ``image_size``)."""
    factory = _get(name)
    params = inspect.signature(factory).parameters
    return [p for p in params if p != "image_size"]


def build_backbone(name: str, image_size: int = 224, **kwargs: object) -> nn.Module:
    """Build the backbone ``name`` for square ``image_size`` inputs.

    ``kwargs`` override the architecture's defaults (see ``backbone_options(name)``).
    The returned module has ``num_features`` and ``spec``, and ``build_backbone(**model.spec)``
    rebuilds the same architecture.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or unknown option
            (the message names it and lists the valid options).
    """
    factory = _get(name)
    valid = backbone_options(name)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(repr(k) for k in unknown)} for backbone {name!r}; "
            f"valid options: image_size, {', '.join(valid)}"
        )
    return factory(image_size=image_size, **kwargs)


def is_backbone(module: nn.Module) -> bool:
    """Whether ``module`` is a backbone of this package's interface (``spec`` and
    ``num_features``), e.g. inside a method that wraps or copies it."""
    return hasattr(module, "spec") and hasattr(module, "num_features")


def _get(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``, or a ValueError listing the valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(backbone_names())}") from None
