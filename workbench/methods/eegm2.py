"""EEGM2: a Mamba-2 U-shaped encoder-decoder pre-trained by reconstruction (L1 + spectral).

Downstream modes (``mode`` of :func:`workbench.experiments.finetune`): ``probe`` = EEGM2 Linear
(frozen encoder, nine per-channel statistics of a hooked encoder layer, logistic regression),
``mlp`` = EEGM2 Light probe (same features, two-hidden-layer MLP), ``fine`` = the whole model
with an MLP head; the variant ``scratch`` trains that from random initialisation.

References
----------
.. [1] "EEGM2: An efficient Mamba-2-based self-supervised framework for long-sequence EEG
       modeling" (seed text ``004_2924a1fbac0096b5.txt``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..config import Profile, TrainConfig
from ..data.datasets import ConcatDataset, WindowDataset
from ..data.store import WindowStore
from ..evaluation.probes import HookFeatures, channel_statistics
from ..models import create_model
from ..models.eegm2 import EEGM2_VARIANTS
from ..objectives.reconstruction import ReconstructionObjective
from .base import Method, register_method

_DESCRIPTIONS = {
    "eegm2": "EEGM2: multi-scale embedding, Mamba-2 blocks, L1 + spectral loss",
    "s1": "S1: no multi-scale embedding",
    "s2": "S2: L1 loss only",
    "s3": "S3: Mamba-1 blocks",
    "s4": "S4: Mamba-1 blocks, no multi-scale embedding",
    "s5": "S5: Transformer blocks instead of Mamba-2",
}


def _variants() -> dict[str, dict]:
    out = {}
    for name, desc in _DESCRIPTIONS.items():
        v = EEGM2_VARIANTS[name]
        # S2 changes only the loss, so it needs its own pre-training; so does every block change.
        out[name] = {"model": dict(v["model"]), "loss": dict(v["loss"]), "pretrained": True,
                     "pretrain_key": name, "description": desc}
    out["light"] = {"model": {}, "loss": dict(EEGM2_VARIANTS["eegm2"]["loss"]), "pretrained": True,
                    "pretrain_key": "eegm2", "light": True,
                    "description": "EEGM2 (Light): the pre-trained encoder only"}
    out["scratch"] = {"model": {}, "loss": dict(EEGM2_VARIANTS["eegm2"]["loss"]),
                      "pretrained": False, "description": "Scratch: random initialisation"}
    return out


class EEGM2Method(Method):
    """EEGM2 (see module docstring)."""

    name = "eegm2"
    description = "Mamba-2 U-shaped encoder-decoder, L1 + spectral reconstruction pre-training"
    variants = _variants()
    default_variant = "eegm2"
    window_s = 2.0
    overlap_s = 1.0
    scale = "percentile95"  # per-channel scaling by the 95th percentile of |x|
    recipe = "eegm2"
    downstream = "probe"
    #: The encoder layer whose output the Linear / Light probes summarise.
    probe_layer = "encoder3"
    paper_metric = "balanced_accuracy"
    paper_results = {  # TUAB 10 s, balanced accuracy % (Fine)
        "eegm2": {"TUAB": 80.87},
    }

    @staticmethod
    def _n_chans(stores: Sequence[WindowStore]) -> int:
        counts = {len(s.ch_names) for s in stores}
        if len(counts) != 1:
            raise ValueError("EEGM2 models a fixed channel set: pre-train on stores with the same "
                             f"channels (got {sorted(counts)} channels in "
                             f"{[s.dataset for s in stores]}).")
        return counts.pop()

    def _model_kw(self, variant: str, n_chans: int) -> dict:
        v = self.variant(variant)
        return {**v["model"], "n_chans": n_chans}

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores, vocab, indices=None):
        self._n_chans(stores)
        indices = indices or [None] * len(stores)
        return ConcatDataset([WindowDataset(s, idx, vocab) for s, idx in zip(stores, indices)])

    def build_pretrain(self, variant, preset, vocab, stores):
        v = self.variant(variant)
        if not v.get("pretrained", True) or v.get("light"):
            variant = "eegm2"  # scratch / light share the full model's pre-training
        kw = self._model_kw(variant, self._n_chans(stores))
        model = create_model("eegm2", preset, **kw)
        spec = {"name": "eegm2", "preset": preset, "overrides": kw}
        return model, spec, ReconstructionObjective(**self.variant(variant)["loss"])

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        # Paper: AdamW lr 5e-5, weight decay 1e-2, OneCycle max lr 5e-4, clip 1.0, batch 64.
        paper = profile.preset == "paper"
        return TrainConfig(epochs=profile.pretrain_epochs, batch_size=64 if paper else 32,
                           lr=5e-5, max_lr=5e-4 if paper else 2e-3, weight_decay=1e-2,
                           schedule="onecycle", warmup_frac=0.3, grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch,
                           num_workers=profile.num_workers, keep_top_k=1)

    # ------------------------------------------------------------------ fine-tuning
    def build_classifier(self, variant, preset, store, vocab, n_classes, pretrained_state):
        v = self.variant(variant)
        base = "eegm2" if (v.get("light") or not v.get("pretrained", True)) else variant
        kw = {**self._model_kw(base, len(store.ch_names)), "n_outputs": n_classes}
        model = create_model("eegm2", preset, **kw)
        if pretrained_state is not None:
            missing, unexpected = model.load_state_dict(pretrained_state, strict=False)
            bad = [k for k in missing if not k.startswith("head.")]
            if bad or unexpected:
                raise ValueError(f"Pre-trained EEGM2 weights do not fit variant {variant!r}: "
                                 f"missing {bad}, unexpected {list(unexpected)}.")
        if v.get("light"):
            head = model.head
            model = model.to_light()
            model.head = head
            kw["encoder_only"] = True
        return model, {"name": "eegm2", "preset": preset, "overrides": kw}

    def finetune_config(self, profile: Profile) -> TrainConfig:
        # Paper: Fine = whole model + MLP head, about 5 epochs.
        paper = profile.preset == "paper"
        return TrainConfig(epochs=5 if paper else profile.finetune_epochs,
                           batch_size=profile.finetune_batch_size, lr=5e-5 if paper else 1e-3,
                           weight_decay=1e-2, schedule="cosine", grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch, keep_top_k=5,
                           num_workers=profile.num_workers)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def features(self, model, batch):
        """Nine statistics (min, max, mean, std, 5/25/50/75/95 % quantiles) over time of each
        channel of the hooked encoder layer: (B, width * 9)."""
        with HookFeatures(model, self.probe_layer, to_cpu=False) as hook:
            model(batch["x"])
        return torch.as_tensor(np.asarray(channel_statistics(hook.output)))

    @torch.no_grad()
    def pretrain_features(self, model, batch):
        return self.features(model, batch)


register_method(EEGM2Method())
