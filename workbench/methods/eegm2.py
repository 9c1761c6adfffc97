"""EEGM2: a Mamba-2 U-shaped encoder-decoder pre-trained by reconstruction (L1 + spectral).

Downstream modes (``mode`` of :func:`workbench.experiments.finetune`): ``probe`` = EEGM2 Linear
(frozen encoder, nine per-channel statistics of a hooked encoder layer, logistic regression),
``mlp`` = EEGM2 Light probe (same features, two-hidden-layer MLP), ``full`` = EEGM2 Fine, the
whole model with an MLP head; the variant ``scratch`` trains that from random initialisation.

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
from ..models.layers.heads import ChannelAdapter
from ..objectives.reconstruction import ReconstructionObjective
from .base import Method, PaperResult, Variant, register_method, variant_table

_DESCRIPTIONS = {
    "eegm2": "EEGM2: multi-scale embedding, Mamba-2 blocks, L1 + spectral loss",
    "s1": "S1: no multi-scale embedding",
    "s2": "S2: L1 loss only",
    "s3": "S3: Mamba-1 blocks",
    "s4": "S4: Mamba-1 blocks, no multi-scale embedding",
    "s5": "S5: Transformer blocks instead of Mamba-2",
}


_DECODER = ("decoder", "output.")  # pre-trained parameters a classifier leaves out


def _variants() -> dict[str, Variant]:
    rows = [Variant(name, desc, model=dict(EEGM2_VARIANTS[name]["model"]),
                    objective=dict(EEGM2_VARIANTS[name]["loss"]))
            for name, desc in _DESCRIPTIONS.items()]
    loss = dict(EEGM2_VARIANTS["eegm2"]["loss"])
    rows.append(Variant("light", "EEGM2 (Light): the pre-trained encoder only", objective=loss,
                        classifier={"encoder_only": True}))
    rows.append(Variant("scratch", "Scratch: random initialisation", pretrained=False,
                        objective=loss))
    return variant_table(*rows)


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
    default_mode = "probe"
    #: The encoder layer whose output the Linear / Light probes summarise.
    probe_layer = "encoder3"
    paper_results = (  # TUAB 10 s windows, Fine
        PaperResult("eegm2", "TUAB", "balanced_accuracy", 0.8087, "EEGM2 paper (TUAB, 10 s windows, Fine)"),
        PaperResult("eegm2", "TUAB", "auroc", 0.8864, "EEGM2 paper (TUAB, 10 s windows, Fine)"),
    )

    @staticmethod
    def _n_chans(stores: Sequence[WindowStore]) -> int:
        counts = {len(s.ch_names) for s in stores}
        if len(counts) != 1:
            raise ValueError("EEGM2 models a fixed channel set: pre-train on stores with the same "
                             f"channels (got {sorted(counts)} channels in "
                             f"{[s.dataset for s in stores]}).")
        return counts.pop()

    def _model_kw(self, variant: str, n_chans: int) -> dict:
        return {**self.variant(variant).model, "n_chans": n_chans}

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores, vocab, indices=None):
        self._n_chans(stores)
        indices = indices or [None] * len(stores)
        return ConcatDataset([WindowDataset(s, idx, vocab) for s, idx in zip(stores, indices)])

    def build_pretrain(self, variant, preset, vocab, stores):
        kw = self._model_kw(variant, self._n_chans(stores))
        model = create_model("eegm2", preset, **kw)
        with torch.no_grad():  # the input layout travels with the weights
            model.input_ch_ids.copy_(torch.as_tensor(vocab.ids(stores[0].ch_names)))
        spec = {"name": "eegm2", "preset": preset, "overrides": kw}
        return model, spec, ReconstructionObjective(**self.variant(variant).objective)

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        # Paper: AdamW lr 5e-5, weight decay 1e-2, OneCycle max lr 5e-4, clip 1.0, batch 64.
        paper = profile.preset == "paper"
        return TrainConfig(epochs=profile.pretrain_epochs, batch_size=64 if paper else 32,
                           lr=5e-5, max_lr=5e-4 if paper else 2e-3, weight_decay=1e-2,
                           schedule="onecycle", warmup_frac=0.3, grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch,
                           num_workers=profile.num_workers, keep_top_k=1)

    # ------------------------------------------------------------------ fine-tuning
    #: Fine-tune on a dataset of another channel layout than the pre-training through a
    #: learnable 1x1-convolution channel adapter (False: refuse with an actionable error).
    channel_adapter: bool = True

    def _pretrained_layout(self, state, vocab, store) -> list[str] | None:
        """The pre-training channels in input order when they differ from ``store``'s."""
        ids = state.get("input_ch_ids")
        first = next(v for k, v in state.items() if k.startswith("input_embedding."))
        n_pre = first.shape[1]  # (out, C, kernel) of the first input convolution
        if ids is not None and int(ids.min()) >= 0:
            names = [vocab.names[int(i)] for i in ids]
        elif n_pre == len(store.ch_names):
            return None  # an older checkpoint without its layout: same count, same order
        else:
            names = [f"#{i}" for i in range(n_pre)]
        known = all(c in vocab for c in store.ch_names)
        if known and names == [vocab.names[i] for i in vocab.ids(store.ch_names)]:
            return None  # the same channels in the same order
        if not self.channel_adapter:
            raise ValueError(
                f"EEGM2 was pre-trained on {len(names)} channels ({', '.join(names[:6])}...) but "
                f"{store.dataset} has {len(store.ch_names)} ({', '.join(store.ch_names[:6])}...): "
                "EEGM2 models one channel layout. Pre-train on data with these channels, or set "
                "channel_adapter=True on the method to learn a 1x1-convolution adapter.")
        return names

    def build_classifier(self, variant, preset, store, vocab, n_classes, pretrained_state,
                         head="default"):
        v = self.variant(variant)
        head_kind = "mlp" if head == "default" else head
        layout = (None if pretrained_state is None else
                  self._pretrained_layout(pretrained_state, vocab, store))
        # The classifier reads the mediator's tokens: no decoder (its weights stay unused)
        kw = {**self._model_kw(variant, len(layout or store.ch_names)), "n_outputs": n_classes,
              "head": head_kind, "decoder": False}
        if layout is not None:
            kw["in_chans"] = len(store.ch_names)
        full = create_model("eegm2", preset, **kw)
        if pretrained_state is not None:
            missing, unexpected = full.load_state_dict(pretrained_state, strict=False)
            bad = [k for k in missing if not k.startswith(("head.", "adapter."))]
            unexpected = [k for k in unexpected if not k.startswith(_DECODER)]
            if bad or unexpected:
                raise ValueError(f"Pre-trained EEGM2 weights do not fit variant {variant!r}: "
                                 f"missing {bad}, unexpected {list(unexpected)}.")
        if layout is not None:  # start by copying the channels both layouts share
            full.adapter = ChannelAdapter.from_names(store.ch_names, layout)
        if v.classifier.get("encoder_only"):
            head_module = full.head
            full = full.to_light()
            full.head = head_module
            kw["encoder_only"] = True
        return full, {"name": "eegm2", "preset": preset, "overrides": kw}

    def selection_metric(self, n_classes: int) -> str:
        return "balanced_accuracy"  # the paper reports balanced accuracy

    def encoder_parameter_names(self, model):
        """Everything but the head and the channel adapter (new layers)."""
        return [n for n, _ in model.named_parameters()
                if not n.startswith(("head.", "adapter."))]

    def finetune_config(self, profile: Profile, store: WindowStore,
                        mode: str = "full") -> TrainConfig:
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
