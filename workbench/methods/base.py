"""The :class:`Method` interface and its registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..channels import ChannelVocabulary
from ..config import Profile, TrainConfig
from ..data.store import WindowStore
from ..utils import check_option

_METHODS: dict[str, Method] = {}


class Method:
    """Everything the generic drivers need to know about one method.

    Subclasses set the class attributes and override the ``build_*`` methods. Variants are
    dicts; the keys every driver reads are ``pretrained`` (bool: start fine-tuning from the
    pre-trained encoder) and ``description``; the rest is method-specific (model overrides,
    objective weights).
    """

    name: str = ""
    description: str = ""
    variants: dict[str, dict[str, Any]] = {}
    default_variant: str = ""
    #: Data layout the method expects: window length/overlap (s) and amplitude scaling.
    window_s: float = 2.0
    overlap_s: float = 0.0
    scale: str | None = "microvolts"
    #: Preprocessing recipe for real data (see :mod:`workbench.data.preprocess`).
    recipe: str = "minimal"
    #: Downstream mode: "fine" (train a classifier) or "probe" (frozen features + linear model).
    downstream: str = "fine"
    #: The paper's reported numbers: {variant: {dataset: value}} and what they measure.
    paper_results: dict[str, dict[str, float]] = {}
    paper_metric: str = "accuracy"
    #: Cross-dataset transfer results of the paper by channel schema ("ucs", "intersection").
    transfer_results: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def variant(self, name: str | None) -> dict[str, Any]:
        name = name or self.default_variant
        check_option("variant", name, list(self.variants))
        return self.variants[name]

    def vocabulary(self, stores: Sequence[WindowStore]) -> ChannelVocabulary:
        """The channel vocabulary of a run: the UCS of the stores' channels by default."""
        return ChannelVocabulary.union(*[s.ch_names for s in stores])

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores: Sequence[WindowStore], vocab: ChannelVocabulary,
                         indices: Sequence[Any] | None = None) -> Dataset:
        raise NotImplementedError

    def build_pretrain(self, variant: str, preset: str, vocab: ChannelVocabulary,
                       stores: Sequence[WindowStore]) -> tuple[nn.Module, dict, nn.Module]:
        """Return ``(model, model_spec, objective)`` for pre-training."""
        raise NotImplementedError

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        raise NotImplementedError

    # ------------------------------------------------------------------ fine-tuning
    def build_classifier(self, variant: str, preset: str, store: WindowStore,
                         vocab: ChannelVocabulary, n_classes: int,
                         pretrained_state: dict[str, torch.Tensor] | None
                         ) -> tuple[nn.Module, dict]:
        """Return ``(model, model_spec)``; ``pretrained_state`` is the pre-trained model's
        state dict, or None for a from-scratch variant."""
        raise NotImplementedError

    def finetune_param_groups(self, model: nn.Module, profile: Profile,
                              pretrained: bool = True) -> list[dict] | None:
        """Optimiser parameter groups for fine-tuning (None: one group at the config's lr).

        ``pretrained`` says whether the model starts from a pre-trained encoder (False for
        from-scratch variants, where nothing is to be preserved).
        """
        return None

    def finetune_config(self, profile: Profile) -> TrainConfig:
        raise NotImplementedError

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def pretrain_features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-window representations (B, F) of the *pre-training* model (embedding plots)."""
        return self.features(model, batch)

    @torch.no_grad()
    def features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-window feature vectors (B, F) of the downstream model, for probes."""
        out = model(batch["x"], ch_ids=batch.get("ch_ids"), rate_id=batch.get("rate_id"),
                    ch_mask=batch.get("ch_mask"))
        return out["embedding"]


def register_method(method: Method) -> Method:
    """Register a method instance under ``method.name``."""
    if not method.name:
        raise ValueError("A Method needs a name.")
    _METHODS[method.name] = method
    return method


def _ensure_loaded() -> None:
    import importlib
    import pkgutil

    import workbench.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "base":
            importlib.import_module(f"workbench.methods.{info.name}")


def list_methods() -> list[str]:
    _ensure_loaded()
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    """The registered method ``name``; ``ValueError`` listing the methods otherwise."""
    _ensure_loaded()
    check_option("method", name, sorted(_METHODS))
    return _METHODS[name]
