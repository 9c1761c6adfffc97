"""A small model registry with named presets (``tiny`` for CPU, ``paper`` for the published size).

>>> @register_model("my_model", presets={"tiny": {"d": 8}, "paper": {"d": 128}})
... class MyModel(torch.nn.Module): ...
>>> model = create_model("my_model", preset="tiny", n_chans=19)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MODELS: dict[str, Callable[..., Any]] = {}
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}


def register_model(name: str, presets: dict[str, dict[str, Any]] | None = None):
    """Class/function decorator that registers a model constructor under ``name``."""

    def deco(fn):
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"A model named {name!r} is already registered ({_MODELS[name]}).")
        _MODELS[name] = fn
        _PRESETS[name] = {k: dict(v) for k, v in (presets or {}).items()}
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the method modules (every module of workbench.models) registers their models.
    import importlib
    import pkgutil

    import workbench.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.ispkg and info.name != "registry":
            importlib.import_module(f"workbench.models.{info.name}")


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _ensure_loaded()
    return sorted(_MODELS)


def model_presets(name: str) -> dict[str, dict[str, Any]]:
    """The presets of one model (``{"tiny": {...}, "paper": {...}}``)."""
    _ensure_loaded()
    if name not in _MODELS:
        raise KeyError(f"Unknown model {name!r}; registered models: {sorted(_MODELS)}.")
    return {k: dict(v) for k, v in _PRESETS[name].items()}


def create_model(name: str, preset: str | None = "tiny", **overrides: Any):
    """Build model ``name`` from ``preset`` with keyword ``overrides``.

    Raises ``KeyError`` naming the registered models for an unknown name and ``ValueError``
    naming the presets for an unknown preset.
    """
    presets = model_presets(name)
    kwargs: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"Model {name!r} has no preset {preset!r}; presets: {sorted(presets)}.")
        kwargs.update(presets[preset])
    kwargs.update(overrides)
    return _MODELS[name](**kwargs)


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"my_model block:transformer encoder_only:true"`` -> ``("my_model", {"block":
    "transformer", "encoder_only": True})``: a registered model and keyword overrides as one
    flat string (a notebook parameter). ``key=value`` works too (papermill cannot parse a
    parameter line with ``=`` in its default value, hence ``key:value`` in notebooks). Values
    are read as YAML scalars."""
    import yaml

    name, *pairs = spec.split()
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=") if "=" in pair else pair.partition(":")
        if not sep or not key:
            raise ValueError(f"Invalid model spec {spec!r}: expected 'name key=value ...', got "
                             f"{pair!r}.")
        kwargs[key] = yaml.safe_load(value)
    model_presets(name)  # KeyError naming the registered models for an unknown name
    return name, kwargs
