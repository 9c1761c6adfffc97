"""The :class:`Method` interface, its :class:`Variant` rows, the paper's numbers, and the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from ..channels import ChannelVocabulary
from ..config import Profile, TrainConfig
from ..data.store import WindowStore
from ..utils import check_option

_METHODS: dict[str, Method] = {}

#: Adaptation modes, one vocabulary for every method (see :mod:`workbench.training.adaptation`).
MODES = ("full", "linear", "lora", "probe", "mlp")


@dataclass(frozen=True)
class Variant:
    """One row of a method's ablation table: a named configuration switch.

    Parameters
    ----------
    name, description : str
    pretrained : bool
        Whether the downstream model starts from a pre-trained encoder (False: from scratch).
    model : dict
        Keyword overrides of the pre-training model (and of the classifier's encoder).
    objective : dict
        Keyword overrides of the pre-training objective.
    classifier : dict
        Keyword overrides of the downstream classifier only.

    A pre-training run is identified by the settings it records (model, objective, data,
    schedule), never by the variant's name: two variants share a pre-training exactly when
    they pre-train the same thing.
    """

    name: str
    description: str = ""
    pretrained: bool = True
    model: Mapping[str, Any] = field(default_factory=dict)
    objective: Mapping[str, Any] = field(default_factory=dict)
    classifier: Mapping[str, Any] = field(default_factory=dict)


def variant_table(*variants: Variant) -> dict[str, Variant]:
    """``{name: variant}``, refusing duplicate names."""
    out: dict[str, Variant] = {}
    for v in variants:
        if v.name in out:
            raise ValueError(f"Duplicate variant name {v.name!r}.")
        out[v.name] = v
    return out


@dataclass(frozen=True)
class PaperResult:
    """One published number: ``value`` of ``metric`` (a fraction, as our metrics) for
    ``variant`` on ``dataset`` under ``protocol``, from ``source``."""

    variant: str
    dataset: str
    metric: str
    value: float
    source: str = ""
    protocol: str = ""


class Method:
    """Everything the generic drivers need to know about one method.

    Subclasses set the class attributes and implement the ``build_*`` methods; the drivers in
    :mod:`workbench.experiments` do the rest (protocols, modes, multi-task, run folders).
    """

    name: str = ""
    description: str = ""
    variants: dict[str, Variant] = {}
    default_variant: str = ""
    #: Data layout the method expects: window length/overlap (s), amplitude scaling and,
    #: when set, the sampling rate windows are resampled to.
    window_s: float = 2.0
    overlap_s: float = 0.0
    scale: str | None = "microvolts"
    sfreq: float | None = None  # None keeps each dataset's native rate
    #: Preprocessing recipe for real data (see :mod:`workbench.data.preprocess`).
    recipe: str = "minimal"
    #: Default downstream adaptation mode (one of :data:`MODES`).
    default_mode: str = "full"
    #: Whether one classifier takes windows of any channel set (channel ids): needed for
    #: multi-task runs over datasets of different montages and for cross-dataset protocols.
    any_montage: bool = False
    #: The paper's numbers (see :meth:`paper_table`).
    paper_results: tuple[PaperResult, ...] = ()

    # ------------------------------------------------------------------ helpers
    def variant(self, name: str | None) -> Variant:
        name = name or self.default_variant
        check_option("variant", name, list(self.variants))
        return self.variants[name]

    def vocabulary(self, stores: Sequence[WindowStore]) -> ChannelVocabulary:
        """The channel vocabulary of a run: the UCS of the stores' channels by default."""
        return ChannelVocabulary.union(*[s.ch_names for s in stores])

    def load_store(self, dataset: str, *, profile: str | Profile = "smoke",
                   data_path: str | None = None, recipe: str | None = None,
                   **kwargs: Any) -> WindowStore:
        """The store of ``dataset`` as this method reads it (window length, overlap, scaling;
        the method's preprocessing recipe for real data). Every notebook gets its stores here,
        so all stages of a method analyse the same windows."""
        from ..data.corpus import is_synthetic, load_store

        recipe = None if is_synthetic(dataset) else (recipe or self.recipe)
        kwargs.setdefault("sfreq", self.sfreq)
        return load_store(dataset, profile=profile, data_path=data_path or None,
                          window_s=self.window_s, overlap_s=self.overlap_s, scale=self.scale,
                          recipe=recipe, seed=0, **kwargs)

    def paper_table(self) -> pd.DataFrame:
        """The paper's numbers: one row per (variant, dataset, metric)."""
        cols = ["variant", "dataset", "metric", "value", "source", "protocol"]
        return pd.DataFrame([r.__dict__ for r in self.paper_results], columns=cols)

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores: Sequence[WindowStore], vocab: ChannelVocabulary,
                         indices: Sequence[Any] | None = None) -> Dataset:
        raise NotImplementedError

    def build_pretrain(self, variant: str, preset: str, vocab: ChannelVocabulary,
                       stores: Sequence[WindowStore]) -> tuple[nn.Module, dict, nn.Module]:
        """Return ``(model, model_spec, objective)`` for pre-training. ``model_spec`` is
        ``{"name", "preset", "overrides"}``; the variant's ``objective`` overrides are recorded
        in the run settings next to it."""
        raise NotImplementedError

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        raise NotImplementedError

    # ------------------------------------------------------------------ downstream
    def build_classifier(self, variant: str, preset: str, store: WindowStore,
                         vocab: ChannelVocabulary, n_classes: int,
                         pretrained_state: dict[str, torch.Tensor] | None,
                         head: str = "default") -> tuple[nn.Module, dict]:
        """Return ``(model, model_spec)``; ``pretrained_state`` is the pre-trained model's
        state dict, or None for a from-scratch variant. ``head`` is ``"default"`` (the paper's
        head), ``"linear"`` or ``"mlp"`` (the heads of the frozen-encoder modes)."""
        raise NotImplementedError

    def encoder_parameter_names(self, model: nn.Module) -> list[str]:
        """Names of the classifier's parameters that come from pre-training (frozen by the
        ``linear`` mode, adapted by ``lora``). Default: everything under ``model.encoder``."""
        return [n for n, _ in model.named_parameters() if n.startswith("encoder.")]

    def finetune_param_groups(self, model: nn.Module, profile: Profile,
                              pretrained: bool = True) -> list[dict] | None:
        """Optimiser parameter groups for fine-tuning (None: one group at the config's lr).

        ``pretrained`` says whether the model starts from a pre-trained encoder (False for
        from-scratch variants, where nothing is to be preserved).
        """
        return None

    def finetune_config(self, profile: Profile, store: WindowStore,
                        mode: str = "full") -> TrainConfig:
        """Fine-tuning schedule; may depend on the dataset (``store``) and the mode."""
        raise NotImplementedError

    def finetune_objective(self, store: WindowStore) -> nn.Module:
        """The downstream objective (cross entropy by default)."""
        from ..objectives.classification import ClassificationObjective

        return ClassificationObjective()

    def selection_metric(self, n_classes: int) -> str:
        """The metric that selects checkpoints on the validation data (the paper's)."""
        return "accuracy"

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
    check_option("default_mode", method.default_mode, MODES)
    if method.default_variant not in method.variants:
        raise ValueError(f"Method {method.name!r}: default variant {method.default_variant!r} "
                         f"is not among its variants {sorted(method.variants)}.")
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


def get_method(name: str | Method) -> Method:
    """The registered method ``name``; ``ValueError`` listing the methods otherwise."""
    if isinstance(name, Method):
        return name
    _ensure_loaded()
    check_option("method", name, sorted(_METHODS))
    return _METHODS[name]
