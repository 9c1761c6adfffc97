"""Optimiser and learning-rate schedules: AdamW parameter groups and per-step schedules.

Parameter groups follow the usual rule of transformer training: weight decay on weight
matrices and convolution kernels, none on biases, normalisation parameters and embeddings.
:func:`make_param_groups` adds differential learning rates by parameter-name prefix (the
pre-trained encoder at 5e-6 and the new layers at 1e-4 in One Model for All).

Schedules are stepped once per optimiser step:

``constant``
    ``lr`` throughout.
``cosine``
    Cosine decay from ``lr`` to ``min_lr_ratio * lr`` over the run.
``warmup_cosine``
    Linear warm-up over ``max(warmup_steps, round(warmup_frac * total))`` steps, then cosine
    (STELAR: ``warmup_steps=500, warmup_frac=0.1`` gives ``max(500, 0.1 T)``).
``onecycle``
    :class:`torch.optim.lr_scheduler.OneCycleLR` with peak ``max_lr`` (or ``lr``), warm-up
    share ``pct_start = warmup_frac`` (or ``warmup_steps / total``, else 0.3), cosine annealing
    and PyTorch's defaults otherwise (``div_factor=25``, ``final_div_factor=1e4``, beta1
    cycled between 0.85 and 0.95).

``constant`` and ``cosine`` also warm up linearly when ``warmup_steps``/``warmup_frac`` are set.

References
----------
.. [1] Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
.. [2] Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017.
.. [3] Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
   Learning Rates", 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..utils import check_option, get_logger

logger = get_logger("training")

SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle")

_NO_DECAY_MODULES: tuple[type, ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` that get no weight decay.

    A parameter gets none when it has fewer than two dimensions (biases, norm gains, scalars),
    belongs to an embedding or normalisation module, has an attribute name containing
    ``embed`` or ending in ``token``/``tokens`` (positional embeddings, class and mask tokens),
    or is listed (by name or name prefix) by an optional ``model.no_weight_decay()`` method.
    """
    names: set[str] = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, _NO_DECAY_MODULES):
            for p_name, _ in mod.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    extra: Iterable[str] = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    extra = tuple(extra)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1].lower()
        if (p.ndim < 2 or "embed" in leaf or leaf.endswith(("token", "tokens"))
                or any(_matches(name, e) for e in extra)):
            names.add(name)
    return names


def _matches(name: str, prefix: str) -> bool:
    """Whether parameter ``name`` lies under ``prefix`` (on a ``.`` boundary)."""
    prefix = prefix.rstrip(".")
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def make_param_groups(
    model: nn.Module,
    lrs: dict[str, float] | None = None,
    default_lr: float = 3e-4,
    weight_decay: float = 1e-2,
    *,
    no_decay: bool = True,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with learning rates by parameter-name prefix.

    Parameters
    ----------
    model : nn.Module
        The model; parameters with ``requires_grad=False`` are left out (frozen).
    lrs : dict of str to float, optional
        Learning rate per name prefix, e.g. ``{"encoder": 5e-6}``. A parameter takes the
        longest prefix it lies under (on a ``.`` boundary: ``"encoder"`` matches
        ``encoder.w`` but not ``encoder2.w``); the others take ``default_lr``.
    default_lr : float
        Learning rate of parameters under no prefix.
    weight_decay : float
        Decoupled weight decay of decayed parameters.
    no_decay : bool
        Put biases, norms and embeddings (see :func:`no_decay_names`) in groups without decay.

    Returns
    -------
    groups : list of dict
        Torch parameter groups with keys ``params``, ``lr``, ``weight_decay`` and ``name``
        (``"<prefix>"`` or ``"default"``, ``"/no_decay"`` appended for the undecayed half).
        Empty groups are dropped.

    Raises
    ------
    ValueError
        When a prefix matches no trainable parameter (a typo would silently train the
        encoder at the default rate).
    """
    lrs = dict(lrs or {})
    skip = no_decay_names(model) if no_decay else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = sorted(lrs, key=lambda s: len(s.rstrip(".")), reverse=True)
    used: set[str] = set()
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in named:
        prefix = next((pre for pre in prefixes if _matches(name, pre)), None)
        if prefix is not None:
            used.add(prefix)
        key = ("default" if prefix is None else prefix, name not in skip)
        buckets.setdefault(key, []).append(p)
    unused = [pre for pre in lrs if pre not in used]
    if unused:
        tops = sorted({n.split(".")[0] for n, _ in named})
        raise ValueError(f"Invalid value for the 'lrs' parameter: prefix(es) {unused} match no "
                         f"trainable parameter; top-level parameter names: {tops}.")
    groups = []
    for (group, decay), params in buckets.items():
        groups.append({
            "params": params,
            "lr": float(lrs.get(group, default_lr)),
            "weight_decay": float(weight_decay) if decay else 0.0,
            "name": group if decay else f"{group}/no_decay",
        })
    return groups


def build_optimizer(
    model: nn.Module,
    cfg: TrainConfig,
    param_groups: list[dict[str, Any]] | Callable[[nn.Module], list[dict[str, Any]]] | None = None,
    extra_params: Iterable[nn.Parameter] = (),
) -> torch.optim.AdamW:
    """AdamW over ``model`` (and ``extra_params``, e.g. trainable parts of an objective).

    Parameters
    ----------
    model : nn.Module
        The (unwrapped) model.
    cfg : TrainConfig
        ``lr``, ``weight_decay``, ``betas`` and ``eps`` are used.
    param_groups : list of dict, callable or None
        ``None``: :func:`make_param_groups` with ``cfg.lr`` and ``cfg.weight_decay``. A list of
        torch-style group dicts (missing ``lr``/``weight_decay`` default to ``cfg``), or a
        callable ``model -> list`` building one.
    extra_params : iterable of Parameter
        Trainable parameters outside the model; those not already in a group form groups of
        their own with ``cfg.lr`` (named ``"extra"`` and ``"extra/no_decay"``).
    """
    if param_groups is None:
        groups = make_param_groups(model, None, cfg.lr, cfg.weight_decay)
    elif callable(param_groups):
        groups = list(param_groups(model))
    else:
        groups = [dict(g) for g in param_groups]
    for g in groups:
        if "params" not in g:
            raise ValueError(f"Invalid value for the 'param_groups' parameter: every group needs "
                             f"a 'params' entry, got keys {sorted(g)}.")
        g["params"] = list(g["params"])
    seen = {id(p) for g in groups for p in g["params"]}
    extra = [p for p in extra_params if p.requires_grad and id(p) not in seen]
    if extra:
        decay = [p for p in extra if p.ndim >= 2]
        flat = [p for p in extra if p.ndim < 2]
        for params, wd, name in ((decay, cfg.weight_decay, "extra"), (flat, 0.0, "extra/no_decay")):
            if params:
                groups.append({"params": params, "lr": cfg.lr, "weight_decay": wd, "name": name})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("The optimiser got no trainable parameter: every parameter of the model "
                         "has requires_grad=False or the 'param_groups' given are empty.")
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=tuple(cfg.betas), eps=cfg.eps)


def warmup_steps_for(cfg: TrainConfig, total_steps: int) -> int:
    """Warm-up length: ``max(cfg.warmup_steps, round(cfg.warmup_frac * total_steps))``, at least
    one step when a warm-up fraction is asked for (a short run must not lose its warm-up)."""
    frac = int(round(cfg.warmup_frac * total_steps))
    if cfg.warmup_frac > 0:
        frac = max(1, frac)
    return max(int(cfg.warmup_steps), frac)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0,
              min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first update is not
    wasted at lr 0; the last warm-up step reaches the full rate). Cosine:
    ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup) / (total - warmup)``
    clipped to [0, 1] and ``r = min_lr_ratio``.
    """
    check_option("schedule", schedule, ("constant", "cosine", "warmup_cosine"))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    p = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step schedule named by ``cfg.schedule`` for a run of ``total_steps`` steps.

    For ``onecycle`` each group peaks at its own ``lr`` times ``cfg.max_lr / cfg.lr``, so
    differential learning rates keep their ratios.
    """
    check_option("cfg.schedule", cfg.schedule, SCHEDULES)
    if total_steps < 1:
        raise ValueError(f"Invalid value for the 'total_steps' parameter: expected >= 1, got "
                         f"{total_steps} (an empty training loader?).")
    if cfg.schedule == "onecycle":
        if cfg.warmup_frac > 0:
            pct = cfg.warmup_frac
        elif cfg.warmup_steps > 0:
            pct = cfg.warmup_steps / total_steps
        else:
            pct = 0.3
        ratio = (cfg.max_lr / cfg.lr) if cfg.max_lr else 1.0
        max_lrs = [g["lr"] * ratio for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs,
                                                   total_steps=total_steps,
                                                   pct_start=min(pct, 1.0),
                                                   anneal_strategy="cos")
    warmup = warmup_steps_for(cfg, total_steps)
    if cfg.schedule == "warmup_cosine" and warmup == 0:
        raise ValueError("schedule='warmup_cosine' needs TrainConfig.warmup_steps > 0 or "
                         f"warmup_frac > 0, got warmup_steps={cfg.warmup_steps}, "
                         f"warmup_frac={cfg.warmup_frac}.")
    if warmup > total_steps:
        logger.warning("Warm-up of %d steps is longer than the run (%d steps).", warmup,
                       total_steps)
    schedule, ratio = cfg.schedule, cfg.min_lr_ratio

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, schedule, warmup, ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
