"""One Model for All: UCS + ART encoder, univariate contrastive pre-training, GAT classifier.

References
----------
.. [1] "One Model for All: Universal pre-training for EEG based emotion recognition across
       heterogeneous datasets and paradigms" (seed text ``000_62b0f7fb23408506.txt``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..channels import SAMPLING_RATES, ChannelVocabulary
from ..config import Profile, TrainConfig
from ..data.datasets import ConcatDataset, SingleChannelDataset
from ..data.store import WindowStore
from ..models import create_model
from ..models.omfa import (
    OMFA_VARIANTS,
    encoder_parameter_names,
    load_pretrained_encoder,
    param_groups,
)
from ..objectives.contrastive import ContrastiveObjective
from ..utils import check_option
from .base import Method, PaperResult, Variant, register_method, variant_table

_SOURCE = "One Model for All, Tables II-III (within-subject accuracy)"


def _paper() -> tuple[PaperResult, ...]:
    table = {  # accuracy %, SEED / DEAP (valence) / DREAMER (valence)
        "art_gat": (99.27, 93.69, 93.93), "scratch": (97.96, 86.04, 90.38),
        "nograph": (94.22, 77.25, 90.11), "gcn": (98.24, 71.50, 93.46),
        "fixed_patch": (98.86, 93.61, 93.13)}
    rows = [PaperResult(v, d, "accuracy", acc / 100, _SOURCE, "within_subject")
            for v, accs in table.items() for d, acc in zip(("SEED", "DEAP", "DREAMER"), accs)]
    # Table I: pre-train on SEED + DEAP, fine-tune within-subject on DREAMER, by channel schema
    rows += [PaperResult(f"transfer_{k}", "DREAMER", "accuracy", v / 100,
                         "One Model for All, Table I (cross-dataset)", "within_subject")
             for k, v in (("intersection", 94.08), ("ucs", 93.05))]
    return tuple(rows)


class OMFA(Method):
    """The One Model for All method (see module docstring)."""

    name = "omfa"
    description = "UCS + ART encoder + NT-Xent pre-training + GAT classifier"
    variants = variant_table(*[
        Variant(k, v["description"], v["pretrained"], model=dict(v["encoder"]),
                classifier=dict(v["classifier"])) for k, v in OMFA_VARIANTS.items()])
    default_variant = "art_gat"
    window_s = 2.0
    overlap_s = 0.2
    scale = "microvolts"
    recipe = "omfa"
    default_mode = "full"
    any_montage = True  # the classifier reads channel ids over the UCS
    paper_results = _paper()

    def _encoder_kw(self, variant: str, vocab: ChannelVocabulary) -> dict:
        return {**self.variant(variant).model, "n_channels": len(vocab),
                "n_rates": len(SAMPLING_RATES)}

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores: Sequence[WindowStore], vocab: ChannelVocabulary,
                         indices: Sequence[np.ndarray] | None = None) -> ConcatDataset:
        """Single-channel windows of every store (univariate pre-training across montages),
        restricted to the channels of ``vocab`` (all of them under the UCS, fewer under a
        channel intersection)."""
        indices = indices or [None] * len(stores)
        return ConcatDataset([SingleChannelDataset(s, idx, vocab,
                                                   [c for c in s.ch_names if c in vocab])
                              for s, idx in zip(stores, indices)])

    def build_pretrain(self, variant, preset, vocab, stores):
        kw = self._encoder_kw(variant, vocab)
        model = create_model("art_encoder", preset, **kw)
        spec = {"name": "art_encoder", "preset": preset, "overrides": kw}
        return model, spec, ContrastiveObjective(temperature=0.1)

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        # Paper: AdamW lr 3e-4, weight decay 7e-4, cosine annealing, 100 epochs, batch 512.
        return TrainConfig(epochs=profile.pretrain_epochs, batch_size=profile.pretrain_batch_size,
                           lr=3e-4 if profile.preset == "paper" else 1e-3, weight_decay=7e-4,
                           schedule="cosine", grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch,
                           num_workers=profile.num_workers, keep_top_k=1)

    # ------------------------------------------------------------------ fine-tuning
    def build_classifier(self, variant, preset, store, vocab, n_classes, pretrained_state,
                         head="default"):
        # The paper's head is already linear (dropout + Linear after the channel Transformer):
        # "linear" and "default" build the same model; the linear mode freezes the encoder.
        check_option("head", head, ("default", "linear"))
        kw = {**self.variant(variant).classifier, **self._encoder_kw(variant, vocab),
              "n_outputs": n_classes}
        model = create_model("omfa_classifier", preset, **kw)
        if pretrained_state is not None:
            load_pretrained_encoder(model, pretrained_state)
        return model, {"name": "omfa_classifier", "preset": preset, "overrides": kw}

    def finetune_param_groups(self, model: nn.Module, profile: Profile,
                              pretrained: bool = True) -> list[dict]:
        # Paper: encoder 5e-6, new layers 1e-4, for 100 epochs. The smoke profile fine-tunes
        # a few hundred steps from a pre-training of 60 steps: encoder 3e-4, new layers 1e-3
        # (with the paper's rates nothing is learnt in that budget). A from-scratch model
        # has nothing to preserve: every parameter gets the new-layer rate.
        enc, head = (5e-6, 1e-4) if profile.preset == "paper" else (3e-4, 1e-3)
        return param_groups(model, encoder_lr=enc if pretrained else head, head_lr=head)

    def encoder_parameter_names(self, model: nn.Module) -> list[str]:
        return encoder_parameter_names(model)

    def finetune_config(self, profile: Profile, store: WindowStore,
                        mode: str = "full") -> TrainConfig:
        return TrainConfig(epochs=profile.finetune_epochs, batch_size=profile.finetune_batch_size,
                           lr=1e-4, weight_decay=1e-2, schedule="constant", grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch, keep_top_k=5,
                           num_workers=profile.num_workers)

    @torch.no_grad()
    def pretrain_features(self, model, batch):
        """The univariate ART encoder over every channel of each window, channel embeddings
        concatenated: (B, C * d)."""
        x = batch["x"]  # (B, C, T)
        b, c, t = x.shape
        ids = batch.get("ch_ids")
        rate = batch.get("rate_id")
        out = model(x.reshape(b * c, 1, t),  # (B*C, 1, T)
                    ch_ids=None if ids is None else ids.reshape(b * c, 1),
                    rate_id=None if rate is None else rate.repeat_interleave(c))
        return out["embedding"].reshape(b, -1)  # (B, C * d)

    @torch.no_grad()
    def features(self, model, batch):
        out = model(batch["x"], ch_ids=batch.get("ch_ids"), rate_id=batch.get("rate_id"),
                    ch_mask=batch.get("ch_mask"))
        return out["embedding"]


register_method(OMFA())
