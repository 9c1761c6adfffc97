"""EEGPT (Yue et al.): electrode-wise autoregressive pre-training + task-shared electrode graph.

Pre-training (``eegpt``, :mod:`workbench.models.eegpt`): every electrode of a window is its own
sequence of 1 s tokens through the Electrode Temporal Encoder (ETE), trained by next-second MSE
(:class:`~workbench.objectives.autoregressive.AutoregressiveObjective`); the variant ``mae``
trains the same backbone by masked autoencoding (the paper's comparison). Several datasets of
different electrode sets pre-train together: a window's electrodes are named by their ids in the
run's channel vocabulary (the UCS of the datasets).

One rate per batch: every store is resampled to :attr:`EEGPTMethod.sfreq` (200 Hz, so a 1 s
token is the encoder's ``token_len`` of 200 samples and the model interpolates nothing), and the
pre-training dataset (:class:`RateGroupedDataset`) groups batches by window length AND rate, so
even stores built at other rates (passed in by hand) never share a batch.

Downstream (``eegpt_classifier``): the ETE, the Task-shared Electrode Graph on the last token of
every electrode, pooling and a head; one classifier takes any electrode set (``any_montage``),
so the platform's joint multi-task driver (:func:`workbench.experiments.finetune_multitask`)
fine-tunes one ETE + TEG with one head per task. The scaling study (model-size presets ``xs`` ...
``l`` on a CPU, ``small`` ... ``large`` on a GPU; data fractions with :func:`fraction_store`) is a
notebook study (``13_eegpt_studies``), not a variant.

The deck's tables are images: no number of the paper can be compared on the same metric, so
:attr:`EEGPTMethod.paper_results` is empty. Model selection uses accuracy, the metric the deck
reports ("5-11 % improvement in accuracy").

References
----------
.. [1] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation Model
       by Autoregressive Pre-training. arXiv:2410.19779 (seed text ``002_fd7213c3f38008a7.txt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..channels import ChannelVocabulary
from ..config import Profile, TrainConfig
from ..data.datasets import ConcatDataset, WindowDataset, make_loader
from ..data.splits import Split
from ..data.store import WindowStore, subset_store
from ..evaluation.protocols import Protocol, make_splits
from ..models import create_model
from ..models.eegpt import load_pretrained_encoder, masked_electrode_mean
from ..objectives.autoregressive import AutoregressiveObjective
from ..utils import check_option, get_device, seed_everything
from .base import Method, Variant, register_method, variant_table

__all__ = ["EEGPTMethod", "RateGroupedDataset", "fraction_store", "heldout_pretrain_loss",
           "multitask_baseline", "multitask_splits"]


class RateGroupedDataset(ConcatDataset):
    """A :class:`~workbench.data.datasets.ConcatDataset` whose batches share window length AND
    sampling rate (``make_loader`` never puts two groups in one batch): the ETE cuts a window
    into seconds by the batch's one rate."""

    def groups(self) -> np.ndarray:
        keys = [(int(d.store.n_times), float(d.store.sfreq)) for d in self.datasets]
        _, g = np.unique(np.array(keys, dtype=float), axis=0, return_inverse=True)
        return np.repeat(g.reshape(-1), self.lengths)


class EEGPTMethod(Method):
    """EEGPT (see module docstring)."""

    name = "eegpt"
    description = ("EEGPT (Yue et al.): electrode-wise next-second pre-training (ETE) + "
                   "task-shared electrode graph (TEG)")
    variants = variant_table(
        Variant("eegpt", "EEGPT: autoregressive pre-training, RoPE, mean pooling"),
        Variant("mae", "MAE: the same backbone, bidirectional attention, masked seconds "
                       "reconstructed", model={"mode": "mae"}),
        Variant("no_pos", "no positional encoding (the deck's open question)",
                model={"pos": "none"}),
        Variant("attention_pool", "attention pooling over electrodes instead of the mean",
                classifier={"pool": "attention"}),
        Variant("scratch", "Scratch: random initialisation", pretrained=False),
    )
    default_variant = "eegpt"
    #: 4 s windows = 4 tokens of 1 s (the next-second objective needs >= 2).
    window_s = 4.0
    overlap_s = 0.0
    scale = "microvolts"
    #: Every store resampled to 200 Hz: a 1 s token is ``token_len`` = 200 samples.
    sfreq = 200.0
    recipe = "minimal"
    default_mode = "full"
    any_montage = True  # electrode ids over the run's vocabulary: any electrode set
    #: Factor on the stored microvolts (**our default** 0.05: 20 uV -> 1), a model field.
    input_scale = 0.05
    #: Seconds per token (the paper's 1 s), a model field.
    token_s = 1.0
    paper_results = ()  # the deck's tables are images: no number to compare on our metrics

    # ------------------------------------------------------------------ helpers
    def _check_windows(self, stores: Sequence[WindowStore]) -> None:
        for s in stores:
            n_tok = s.n_times / (s.sfreq * self.token_s)
            if abs(n_tok - round(n_tok)) > 1e-9 or round(n_tok) < 2:
                raise ValueError(
                    f"EEGPT reads windows of a whole number (>= 2) of {self.token_s:g} s tokens; "
                    f"{s.dataset} has windows of {s.n_times} samples at {s.sfreq:g} Hz "
                    f"({s.n_times / s.sfreq:g} s). Load it with EEGPT's load_store "
                    f"(window_s={self.window_s:g}).")

    def _model_kw(self, variant: str, vocab: ChannelVocabulary) -> dict:
        return {**self.variant(variant).model, "n_channels": len(vocab),
                "input_scale": self.input_scale, "token_s": self.token_s}

    # ------------------------------------------------------------------ pre-training
    def pretrain_dataset(self, stores: Sequence[WindowStore], vocab: ChannelVocabulary,
                         indices: Sequence[np.ndarray] | None = None) -> RateGroupedDataset:
        """Multichannel windows of every store, electrodes named by their ``vocab`` ids;
        batches share one window length and one rate (:class:`RateGroupedDataset`)."""
        self._check_windows(stores)
        indices = indices or [None] * len(stores)
        return RateGroupedDataset([WindowDataset(s, idx, vocab) for s, idx in zip(stores, indices)])

    def build_pretrain(self, variant, preset, vocab, stores):
        self._check_windows(stores)
        kw = self._model_kw(variant, vocab)
        model = create_model("eegpt", preset, **kw)
        spec = {"name": "eegpt", "preset": preset, "overrides": kw}
        return model, spec, AutoregressiveObjective(**self.variant(variant).objective)

    def pretrain_config(self, profile: Profile) -> TrainConfig:
        # The deck gives no schedule (**our defaults**): AdamW, OneCycle (10 % warm-up, cosine
        # decay), clip 1.0.
        # Smoke: windows of 14-62 electrodes x 4 tokens are 700-3000 tokens per batch of 12,
        # a few tens of ms per step on one core.
        paper = profile.preset == "paper"
        return TrainConfig(epochs=profile.pretrain_epochs,
                           batch_size=profile.pretrain_batch_size if paper else 12,
                           lr=3e-4 if paper else 2e-3, weight_decay=0.05,
                           schedule="onecycle", warmup_frac=0.1, grad_clip=1.0,
                           max_steps_per_epoch=profile.max_steps_per_epoch,
                           num_workers=profile.num_workers, keep_top_k=1)

    # ------------------------------------------------------------------ downstream
    def build_classifier(self, variant, preset, store, vocab, n_classes, pretrained_state,
                         head="default"):
        # The paper's task head is linear (**our default**); "mlp" for the probe-style head.
        check_option("head", head, ("default", "linear", "mlp"))
        self._check_windows([store])
        v = self.variant(variant)
        kw = {**self._model_kw(variant, vocab), **v.classifier, "n_outputs": n_classes,
              "head": "mlp" if head == "mlp" else "linear"}
        model = create_model("eegpt_classifier", preset, **kw)
        if pretrained_state is not None:
            load_pretrained_encoder(model, pretrained_state)
        return model, {"name": "eegpt_classifier", "preset": preset, "overrides": kw}

    def finetune_config(self, profile: Profile, store: WindowStore | None,
                        mode: str = "full") -> TrainConfig:
        # One learning rate for every parameter (no differential rates: the multi-task driver
        # builds its optimiser without the method's parameter groups, and per-task and joint
        # runs must train alike). No step cap per epoch: a joint multi-task epoch then sees
        # every training window of every task once, as the per-task epochs do.
        paper = profile.preset == "paper"
        return TrainConfig(epochs=profile.finetune_epochs, batch_size=profile.finetune_batch_size,
                           lr=1e-4 if paper else 1e-3, weight_decay=0.05, schedule="cosine",
                           grad_clip=1.0, max_steps_per_epoch=None, keep_top_k=3,
                           num_workers=profile.num_workers)

    def selection_metric(self, n_classes: int) -> str:
        return "accuracy"  # the deck reports accuracy

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def pretrain_features(self, model, batch):
        """The last ETE token of every electrode, mean-pooled over the real electrodes (the
        deck's t-SNE representation): (B, d_model)."""
        return self.features(model, batch)

    @torch.no_grad()
    def features(self, model, batch):
        """Mean-pooled last ETE tokens of the model's encoder (pre-training model or
        classifier): (B, d_model)."""
        tokens = model.encoder(batch["x"], batch.get("ch_ids"), batch.get("rate_id"),
                               batch.get("ch_mask"))["tokens"]  # (B, C, N, d)
        return masked_electrode_mean(tokens[:, :, -1], batch.get("ch_mask"))


def fraction_store(store: WindowStore, fraction: float, seed: int = 0) -> WindowStore:
    """A store holding a random ``fraction`` of ``store``'s windows (the data-size axis of the
    scaling study), written once beside ``store`` and found there afterwards.

    The subset is named by the parent store, the fraction and the seed, so a pre-training on it
    is identified by its settings like any other run.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Invalid 'fraction': expected a value in (0, 1], got {fraction}.")
    if fraction == 1.0:
        return store
    n = max(1, int(round(fraction * len(store))))
    keep = np.sort(np.random.default_rng(seed).permutation(len(store))[:n])
    return subset_store(store, keep, f"frac{fraction:g}-seed{seed}",
                        {"fraction": fraction, "seed": seed})


@torch.no_grad()
def heldout_pretrain_loss(pretrained: str | Path, store: WindowStore, *, preset: str,
                          variant: str | None = None, indices: Sequence[int] | None = None,
                          batch_size: int = 32, device: str = "auto", seed: int = 0) -> float:
    """The pre-training loss of a finished EEGPT pre-training run on ``store``'s windows.

    The scaling study evaluates every model size and data fraction on the same windows (e.g. a
    dataset held out of every pre-training), so their losses are comparable. The MAE loss
    draws its masks from ``seed``. Returns the window-weighted mean of the batch losses.
    """
    from ..experiments import load_pretrained

    m = get_eegpt()
    variant = variant or m.default_variant
    state, vocab = load_pretrained(pretrained)
    model, _, objective = m.build_pretrain(variant, preset, vocab, [store])
    model.load_state_dict(state)
    dev = get_device(device)
    model = model.to(dev).eval()
    seed_everything(seed)
    total, count = 0.0, 0
    for batch in make_loader(m.pretrain_dataset([store], vocab, [indices]), batch_size,
                             shuffle=False):
        batch = {k: v.to(dev) for k, v in batch.items()}
        loss, _ = objective(model, batch)
        total += float(loss) * len(batch["x"])
        count += len(batch["x"])
    return total / max(count, 1)


def multitask_splits(protocol: str | Protocol, store: WindowStore, seed: int) -> list[Split]:
    """The folds :func:`~workbench.experiments.finetune_multitask` trains and tests ``store``
    on: the protocol's splits, pooled over subjects into one fold for ``within_subject`` (every
    subject's held-out trials, as the paper's pooled 8:1:1 split).

    The studies notebook checks them against the test windows the driver recorded, so a
    baseline computed on them is on the driver's very folds.
    """
    protocol = Protocol.of(protocol)
    splits = make_splits(protocol, store.index, store.n_times, seed=seed)
    if protocol.name != "within_subject":
        return splits
    cat = [np.concatenate([getattr(s, k) for s in splits]) for k in ("train", "test", "val")]
    return [Split(*cat, name="within-subject/pooled", fold=0)]


def multitask_baseline(stores: Sequence[WindowStore], protocol: str | Protocol,
                       seeds: Sequence[int]) -> pd.DataFrame:
    """The DE band-power baseline (logistic regression on differential entropy per channel and
    band, trained on the training + validation windows) on the folds of a joint multi-task run
    (:func:`multitask_splits`): one row per task, fold and seed, like the driver's."""
    from ..evaluation.baseline import FeatureBaseline
    from ..evaluation.metrics import classification_metrics

    protocol = Protocol.of(protocol)
    rows = []
    for seed in seeds:
        for s in stores:
            for sp in multitask_splits(protocol, s, seed):
                train = np.sort(np.concatenate([sp.train, sp.val]))
                test = np.sort(sp.test)
                model = FeatureBaseline(kind="de", sfreq=s.sfreq, random_state=seed)
                model.fit(s.get(train), s.labels[train])
                probs = np.zeros((len(test), s.n_classes))
                probs[:, model.classes_.astype(int)] = model.predict_proba(s.get(test))
                rows.append({"method": "eegpt", "variant": "DE baseline", "mode": "features",
                             "dataset": s.dataset, "n_classes": s.n_classes,
                             "protocol": protocol.name, "fold": f"fold{sp.fold}", "seed": seed,
                             "n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(test),
                             **classification_metrics(s.labels[test], probs,
                                                      labels=list(range(s.n_classes)))})
    return pd.DataFrame(rows)


def get_eegpt() -> EEGPTMethod:
    """The registered EEGPT method."""
    return _METHOD


_METHOD = EEGPTMethod()
register_method(_METHOD)
