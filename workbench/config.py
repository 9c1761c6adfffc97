"""Dataclass configuration: one system for training, data and run profiles.

Configs are plain dataclasses. :func:`from_dict` builds one from a dict (papermill parameters,
YAML) and fails with an error that names the unknown or mistyped field. Run *profiles* say how
much work a reproduction does: ``smoke`` (CPU, minutes, tiny presets, the embedded corpus) and
``paper`` (GPU, the published schedules and sizes).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _check_type(cls_name: str, name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(cls_name, name, value, a)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{cls_name}.{name}: expected {tp}, got {value!r}.")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{cls_name}.{name}: expected one of {list(args)}, got {value!r}.")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{cls_name}.{name}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
        out = [_check_type(cls_name, name, v, inner) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{cls_name}.{name}: expected a mapping, got {value!r}.")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{cls_name}.{name}: expected a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{cls_name}.{name}: expected an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{cls_name}.{name}: expected true/false, got {value!r}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{cls_name}.{name}: expected a string, got {value!r}.")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` with validation.

    Unknown keys and mistyped values raise ``ValueError``/``TypeError`` naming the field
    (and ``where``, e.g. the YAML file they came from).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{where}: " if where else ""
    if unknown:
        raise ValueError(f"{prefix}unknown field(s) {unknown} for {cls.__name__}; valid fields: "
                         f"{sorted(fields)}.")
    kwargs = {}
    for k, v in data.items():
        try:
            kwargs[k] = _check_type(cls.__name__, k, v, hints[k])
        except (TypeError, ValueError) as e:
            raise type(e)(f"{prefix}{e}") from None
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain (JSON/YAML-able) dict of a config dataclass."""
    return asdict(cfg)


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    """Read a YAML mapping and validate it into ``cls``."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of fields, got {type(data).__name__}.")
    return from_dict(cls, data, where=str(path))


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method (the Trainer knows nothing else)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: typing.Literal["constant", "cosine", "warmup_cosine", "onecycle"] = "cosine"
    warmup_steps: int = 0
    warmup_frac: float = 0.0
    max_lr: float | None = None  # OneCycle peak; defaults to lr
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    amp: typing.Literal["auto", "bf16", "none"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    max_steps_per_epoch: int | None = None
    log_every: int = 10
    monitor: str = "val_loss"
    monitor_mode: typing.Literal["min", "max"] = "min"
    keep_top_k: int = 1
    early_stopping: int | None = None  # stop after this many epochs without a better monitor
    checkpoint_every: int = 1  # epochs
    seed: int = 42
    deterministic: bool = False
    progress: bool = True
    num_workers: int = 0


@dataclass
class Profile:
    """How much work one reproduction does.

    ``smoke`` runs every notebook on the embedded corpus on a 2-core CPU in minutes; ``paper``
    uses the published sizes and schedules and expects a GPU.
    """

    name: str = "smoke"
    preset: str = "tiny"  # model preset
    device: str = "auto"
    seeds: list[int] = field(default_factory=lambda: [42])
    max_subjects: int | None = 2  # subjects fine-tuned per dataset; None = all
    synthetic_subjects: int = 4
    synthetic_sessions: int = 2
    synthetic_trials: int = 12  # per class and session
    synthetic_trial_s: float = 10.0  # trial length (s) of the synthetic corpus
    pretrain_epochs: int = 3
    finetune_epochs: int = 6
    max_steps_per_epoch: int | None = 20
    pretrain_batch_size: int = 256
    finetune_batch_size: int = 16
    num_workers: int = 0
    progress: bool = False


PROFILES: dict[str, Profile] = {
    "smoke": Profile(),
    "paper": Profile(name="paper", preset="paper", max_subjects=None, synthetic_subjects=15,
                     synthetic_sessions=3, synthetic_trials=40, synthetic_trial_s=30.0,
                     pretrain_epochs=100,
                     finetune_epochs=100, max_steps_per_epoch=None, pretrain_batch_size=512,
                     finetune_batch_size=128, seeds=[42, 43, 44], num_workers=4, progress=True),
}


def get_profile(name: str | Profile, **overrides: Any) -> Profile:
    """The named profile with ``overrides`` (validated like any config)."""
    if isinstance(name, Profile):
        base = name
    else:
        if name not in PROFILES:
            raise ValueError(f"Invalid value for the 'profile' parameter: expected one of "
                             f"{sorted(PROFILES)}, got {name!r}.")
        base = PROFILES[name]
    data = {**asdict(base), **overrides}
    return from_dict(Profile, data, where=f"profile {getattr(base, 'name', name)!r}")
