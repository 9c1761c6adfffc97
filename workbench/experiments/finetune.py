"""Fine-tuning (or probing) of any method under any protocol and adaptation mode.

For each seed and fold of the protocol: a classifier from the method (initialised from the
pre-trained encoder unless the variant is from scratch), adapted in the chosen mode, model
selection on the validation windows with the method's metric (the top-k checkpoints by it are
kept), and a test prediction that averages the softmax of those checkpoints. Optionally the DE
band-power baseline on the very same folds. Results are tidy tables, one row per fold and seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from ..channels import ChannelVocabulary
from ..config import Profile
from ..data.datasets import ConcatDataset, WindowDataset, make_loader
from ..data.splits import Split, subject_keys
from ..data.store import WindowStore
from ..evaluation.honesty import recording_confound
from ..evaluation.metrics import aggregate, classification_metrics
from ..evaluation.protocols import Protocol, make_splits
from ..methods import MODES, Method, get_method
from ..runs import RunFolder, RunLayout
from ..training import Trainer, ensemble_predict_proba, predict_proba
from ..training.adaptation import apply_lora, freeze
from ..utils import check_option, get_device, seed_everything
from .pretrain import (
    as_layout,
    as_profile,
    checkpoint_id,
    load_pretrained,
    log,
    store_id,
    train_settings,
)

#: Metrics written for every fold (the paper's and the benchmarks' vocabulary).
METRICS = ("accuracy", "balanced_accuracy", "cohen_kappa", "f1_weighted", "auroc", "auc_pr")


@dataclass
class FinetuneResult:
    """Per-fold (and seed) metrics and per-window test predictions."""

    method: str
    variant: str
    results: pd.DataFrame  # one row per fold and seed
    predictions: pd.DataFrame  # window_id, fold, seed, y, pred, p0..pK
    out_dir: Path

    def summary(self, metrics: Sequence[str] = ("accuracy", "balanced_accuracy")) -> pd.DataFrame:
        """Mean and std over folds and seeds."""
        return aggregate(self.results, by=None, metrics=list(metrics))

    def fold_dir(self, seed: int, fold: str) -> Path:
        """The run folder of one fold (``fold`` as in the ``fold`` column)."""
        return self.out_dir / f"seed{seed}" / str(fold)


def selection_metrics(metric: str) -> Callable[[nn.Module, Any], dict[str, float]]:
    """``val_metrics`` for the Trainer: ``{"val_<metric>": value}`` on the validation loader.

    An undefined value (e.g. kappa when one class is predicted everywhere) counts as -1, worse
    than any defined one, so checkpoint selection never compares NaN.
    """
    def compute(model: nn.Module, loader: Any) -> dict[str, float]:
        probs, y, _ = predict_proba(model, loader, next(model.parameters()).device)
        value = classification_metrics(y, probs, labels=list(range(probs.shape[1])))[metric]
        return {f"val_{metric}": -1.0 if math.isnan(value) else float(value)}

    return compute


def _fold_name(sp: Split) -> str:
    return f"subject{sp.subject}" if sp.subject is not None else f"fold{sp.fold}"


def _subjects(store: WindowStore, prof: Profile, subjects: Sequence[str] | None,
              protocol: Protocol) -> list[str] | None:
    """Subjects a run uses: as given, else the profile's cap for per-subject protocols."""
    if subjects:
        return [str(s) for s in subjects]
    if protocol.name == "within_subject" and prof.max_subjects:
        allsub = list(dict.fromkeys(subject_keys(store.index)))
        return allsub[:prof.max_subjects]
    return None


def finetune(method: str | Method, store: WindowStore, *,
             run_dir: str | Path | RunLayout = "runs/manual", out_dir: str | Path | None = None,
             profile: str | Profile = "smoke", variant: str | None = None,
             pretrained: str | Path | None = None, seeds: Sequence[int] = (42,),
             protocol: str | Protocol = "within_subject", mode: str | None = None,
             subjects: Sequence[str] | None = None, device: str = "auto",
             channels: Sequence[str] | None = None, baseline: bool = False,
             train_stores: Sequence[WindowStore] = (), lora_rank: int = 8,
             class_weight: str | None = None,
             selection_metric: str | None = None) -> FinetuneResult:
    """Fine-tune (or probe) ``method`` on ``store`` under ``protocol`` in ``mode``.

    Parameters
    ----------
    method, store
        A registered method (or instance) and the downstream windows.
    run_dir, out_dir
        Runs live in the folder of their settings under ``run_dir`` (see
        :class:`workbench.runs.RunLayout`), or in ``out_dir`` when given. Folds that finished
        with the same settings are not retrained.
    variant : str, optional
        The method's variant (default: its default variant).
    pretrained : path, optional
        The pre-training run folder or checkpoint (needed unless the variant is from scratch).
    seeds : list of int
        One run per seed and fold.
    protocol : str or Protocol
        ``within_subject``, ``subject_kfold``, ``loso``, ``fixed``, ``cross_dataset`` (see
        :mod:`workbench.evaluation.protocols`); recorded in every result row.
    mode : str, optional
        ``full``, ``linear``, ``lora``, ``probe`` or ``mlp`` (default: the method's).
    subjects : list of str, optional
        Restrict the protocol to these subjects (the smoke profile caps per-subject
        protocols at ``max_subjects``).
    channels : list of str, optional
        Use only these channels (e.g. a channel intersection for cross-dataset transfer).
    baseline : bool
        Also evaluate the DE band-power baseline (logistic regression) on the same folds
        (rows with ``variant="DE baseline"``).
    train_stores : list of WindowStore
        The training datasets of the ``cross_dataset`` protocol.
    lora_rank : int
        Rank of the LoRA adapters (``mode="lora"``).
    class_weight : {"balanced"}, optional
        Weight the cross entropy by ``n / (K * n_k)`` of each fold's training windows
        (imbalanced classes, e.g. 180 s of rest against 62 s of arithmetic in eegmat).
    selection_metric : str, optional
        The validation metric that selects checkpoints (one of :data:`METRICS`; default: the
        method's, the paper's). Benchmarks select on their own metric.
    """
    m, prof = get_method(method), as_profile(profile)
    protocol = Protocol.of(protocol)
    variant = variant or m.default_variant
    v = m.variant(variant)
    mode = mode or m.default_mode
    check_option("mode", mode, MODES)
    if mode in ("linear", "lora", "probe", "mlp") and not v.pretrained:
        raise ValueError(f"Variant {variant!r} of {m.name} is trained from scratch: mode "
                         f"{mode!r} freezes a pre-trained encoder; use mode='full'.")
    state, vocab = None, None
    if v.pretrained:
        if pretrained is None:
            raise ValueError(f"Variant {variant!r} of {m.name} fine-tunes a pre-trained model: "
                             "pass 'pretrained' (a pre-training run folder or checkpoint).")
        state, vocab = load_pretrained(pretrained)
    if vocab is None:
        vocab = m.vocabulary([store, *train_stores])
    cfg = m.finetune_config(prof, store, mode)
    subj = _subjects(store, prof, subjects, protocol)
    check_option("class_weight", class_weight, ("balanced", None))
    if selection_metric is not None:
        check_option("selection_metric", selection_metric, METRICS)
    settings = {
        "kind": "finetune", "method": m.name, "variant": variant, "mode": mode,
        "store": store_id(store), "preset": prof.preset, "protocol": protocol.settings(),
        "subjects": subj, "train_config": train_settings(cfg),
        "pretrained": None if state is None else checkpoint_id(pretrained),
        "channels": None if channels is None else list(channels),
        "train_stores": [store_id(s) for s in train_stores], "lora_rank": lora_rank}
    # recorded only when set, so runs made before these options keep their folders
    settings.update({k: v for k, v in (("class_weight", class_weight),
                                       ("selection_metric", selection_metric)) if v})
    run = (RunFolder(Path(out_dir), settings) if out_dir is not None else
           as_layout(run_dir).run("finetune", m.name,
                                  f"{store.dataset}-{variant}-{mode}-{protocol.name}", settings))
    requested = {"seeds": sorted(int(s) for s in seeds), "baseline": baseline}
    done = run.summary().get("requested", {}) if run.finished else {}
    if done and set(requested["seeds"]) <= set(done["seeds"]) and (done["baseline"]
                                                                  or not baseline):
        log.info("reusing the finished fine-tuning runs in %s", run.path)
        results = pd.read_csv(run / "results.csv", dtype={"subject": str, "fold": str})
        results["subject"] = results["subject"].fillna("")
        preds = pd.read_csv(run / "predictions.csv", dtype={"fold": str})
        return FinetuneResult(m.name, variant, results[results["seed"].isin(seeds)]
                              .reset_index(drop=True),
                              preds[preds["seed"].isin(seeds)].reset_index(drop=True), run.path)
    resume = run.claim()
    ctx = _FoldContext(m, prof, variant, mode, state, vocab, cfg, device, channels, resume,
                       lora_rank, class_weight, selection_metric)
    rows, preds = [], []
    for seed in seeds:
        for sp, train_ds, val_ds, test_ds, index in _folds(protocol, store, train_stores, vocab,
                                                          channels, seed, subj):
            fold = _fold_name(sp)
            verdict = (None if train_stores else
                       recording_confound(index, np.concatenate([sp.train, sp.val]), sp.test))
            confounded = bool(verdict)
            if confounded:
                log.warning("%s %s: %s", store.dataset, fold, verdict.reason)
            n_classes = store.n_classes
            probs, y, idx = ctx.run_fold(sp, train_ds, val_ds, test_ds, n_classes, seed,
                                         run.path / f"seed{seed}" / fold, store)
            common = {"method": m.name, "dataset": store.dataset, "n_classes": n_classes,
                      "protocol": protocol.name,
                      "fold": fold, "subject": sp.subject or "", "seed": seed,
                      "n_train": len(train_ds), "n_val": len(val_ds) if val_ds else 0,
                      "n_test": len(test_ds),
                      "confounded": confounded}
            met = classification_metrics(y, probs, labels=list(range(n_classes)))
            rows.append({**common, "variant": variant, "mode": mode, **met})
            preds.append(_prediction_table(probs, y, idx, fold, seed))
            log.info("%s/%s %s seed %d: balanced accuracy %.3f", m.name, variant, fold, seed,
                     met["balanced_accuracy"])
            if baseline:
                rows.append({**common, "variant": "DE baseline", "mode": "features",
                             **baseline_fold(train_ds, val_ds, test_ds, n_classes, seed)})
    res = FinetuneResult(m.name, variant, pd.DataFrame(rows), pd.concat(preds, ignore_index=True),
                         run.path)
    run.path.mkdir(parents=True, exist_ok=True)
    res.results.to_csv(run / "results.csv", index=False)
    res.predictions.to_csv(run / "predictions.csv", index=False)
    run.mark_finished({"requested": requested})
    return res


def _prediction_table(probs: np.ndarray, y: np.ndarray, idx: np.ndarray, fold: str,
                      seed: int) -> pd.DataFrame:
    p = pd.DataFrame(probs, columns=[f"p{k}" for k in range(probs.shape[1])])
    p.insert(0, "window_id", idx)
    p.insert(1, "fold", fold)
    p.insert(2, "seed", seed)
    p.insert(3, "y", y)
    p.insert(4, "pred", probs.argmax(1))
    return p


def _folds(protocol: Protocol, store: WindowStore, train_stores: Sequence[WindowStore],
           vocab: ChannelVocabulary, channels, seed: int, subjects):
    """Yield ``(split, train_ds, val_ds, test_ds, index)`` for each fold of the protocol."""
    if protocol.name == "cross_dataset":
        yield _cross_dataset_fold(protocol, store, train_stores, vocab, seed)
        return
    if train_stores:
        raise ValueError(f"'train_stores' is for protocol 'cross_dataset', not "
                         f"{protocol.name!r}.")
    for sp in make_splits(protocol, store.index, store.n_times, seed=seed, subjects=subjects):
        yield (sp, WindowDataset(store, sp.train, vocab, channels),
               WindowDataset(store, sp.val, vocab, channels) if len(sp.val) else None,
               WindowDataset(store, sp.test, vocab, channels), store.index)


def _cross_dataset_fold(protocol: Protocol, store: WindowStore,
                        train_stores: Sequence[WindowStore], vocab: ChannelVocabulary,
                        seed: int):
    names = sorted(s.dataset for s in train_stores)
    if sorted(protocol.train_datasets) != names:
        raise ValueError(f"Protocol 'cross_dataset' names train_datasets "
                         f"{sorted(protocol.train_datasets)} but 'train_stores' are {names}.")
    if store.dataset in names:
        raise ValueError(f"Dataset {store.dataset!r} is both a training and the test dataset.")
    for s in train_stores:
        if s.label_names != store.label_names:
            raise ValueError(f"Cross-dataset transfer needs one label space: {s.dataset} has "
                             f"{s.label_names}, {store.dataset} has {store.label_names}.")
    def known(s: WindowStore) -> list[str]:
        # a pre-trained model embeds only the channels of its vocabulary
        chans = [c for c in s.ch_names if c in vocab]
        if not chans:
            raise ValueError(f"No channel of {s.dataset} is in the model's channel vocabulary "
                             f"({len(vocab)} channels: {', '.join(vocab.names[:8])}...).")
        if len(chans) < len(s.ch_names):
            log.info("%s: %d of %d channels are in the model's vocabulary", s.dataset,
                     len(chans), len(s.ch_names))
        return chans

    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for s in train_stores:  # validation: val_size of each training dataset's subjects
        keys = subject_keys(s.index).to_numpy()
        subs = np.array(sorted(set(keys)))
        n_val = max(1, int(round(protocol.val_size * len(subs)))) if len(subs) > 1 else 0
        val_subs = subs[rng.permutation(len(subs))[:n_val]]
        val = np.isin(keys, val_subs)
        train_parts.append(WindowDataset(s, np.flatnonzero(~val), vocab, known(s)))
        if val.any():
            val_parts.append(WindowDataset(s, np.flatnonzero(val), vocab, known(s)))
    test = WindowDataset(store, None, vocab, known(store))
    sp = Split(np.arange(sum(len(d) for d in train_parts)), np.arange(len(store)),
               np.arange(sum(len(d) for d in val_parts)),
               name=f"cross-dataset/{'+'.join(names)}->{store.dataset}")
    return (sp, ConcatDataset(train_parts), ConcatDataset(val_parts) if val_parts else None,
            test, store.index)


def _flat(*datasets: Dataset | None) -> list[WindowDataset]:
    """The WindowDatasets inside ``datasets`` (ConcatDatasets opened, None skipped)."""
    out = []
    for d in datasets:
        if isinstance(d, ConcatDataset):
            out.extend(_flat(*d.datasets))
        elif d is not None:
            out.append(d)
    return out


def baseline_fold(train_ds: Dataset, val_ds: Dataset, test_ds: Dataset, n_classes: int,
                   seed: int) -> dict[str, float]:
    """The DE band-power baseline (logistic regression) trained on the fold's training and
    validation windows, tested on its test windows."""
    from ..evaluation.baseline import FeatureBaseline

    parts = _flat(train_ds, val_ds, test_ds)
    # one feature space: the channels every part has (all of them within one store)
    common = [c for c in parts[0].ch_names if all(c in p.ch_names for p in parts)]
    if not common:
        log.warning("DE baseline skipped: the training and test datasets share no channel.")
        return {k: float("nan") for k in METRICS}

    def windows(*ds) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for p in _flat(*ds):
            ids = np.sort(p.indices)
            xs.append(p.store.get(ids)[:, [p.store.ch_names.index(c) for c in common]])
            ys.append(p.store.labels[ids])
        return np.concatenate(xs), np.concatenate(ys)

    sfreq = parts[-1].store.sfreq
    xtr, ytr = windows(train_ds, val_ds)
    xte, yte = windows(test_ds)
    model = FeatureBaseline(kind="de", sfreq=sfreq, random_state=seed).fit(xtr, ytr)
    probs = np.zeros((len(xte), n_classes))
    probs[:, model.classes_.astype(int)] = model.predict_proba(xte)
    return classification_metrics(yte, probs, labels=list(range(n_classes)))


@dataclass
class _FoldContext:
    """What every fold of one fine-tuning call shares."""

    m: Method
    prof: Profile
    variant: str
    mode: str
    state: dict[str, torch.Tensor] | None
    vocab: ChannelVocabulary
    cfg: Any
    device: str
    channels: Sequence[str] | None
    resume: bool
    lora_rank: int
    class_weight: str | None = None
    selection_metric: str | None = None

    def build(self, store: WindowStore, n_classes: int) -> tuple[nn.Module, dict]:
        head = {"linear": "linear"}.get(self.mode, "default")
        return self.m.build_classifier(self.variant, self.prof.preset, store, self.vocab,
                                       n_classes, self.state, head=head)

    def run_fold(self, sp: Split, train_ds, val_ds, test_ds, n_classes: int, seed: int,
                 fold_dir: Path, store: WindowStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seed_everything(seed)
        if self.mode in ("probe", "mlp"):
            return self._probe(train_ds, val_ds, test_ds, n_classes, store)
        model, spec = self.build(store, n_classes)
        metric = self.selection_metric or self.m.selection_metric(n_classes)
        cfg = dataclasses.replace(self.cfg, seed=seed, progress=self.prof.progress,
                                  monitor=f"val_{metric}", monitor_mode="max")
        enc = self.m.encoder_parameter_names(model)
        if self.mode == "linear":
            freeze(model, enc)
        elif self.mode == "lora":
            apply_lora(model, enc, r=self.lora_rank)
        groups = self.m.finetune_param_groups(model, self.prof, pretrained=self.state is not None)
        if self.mode == "lora":
            groups = _adapters_at_new_layer_rate(model, groups, cfg.lr)
        pin = get_device(self.device).type == "cuda"  # pinned pages: asynchronous copies
        train = make_loader(train_ds, cfg.batch_size, shuffle=True, seed=seed, pin_memory=pin)
        val = make_loader(val_ds or train_ds, 256, shuffle=False, pin_memory=pin)
        test = make_loader(test_ds, 256, shuffle=False, pin_memory=pin)
        objective = self.m.finetune_objective(store)
        if self.class_weight == "balanced":
            objective = _balanced(objective, train_ds, n_classes)
        trainer = Trainer(model, objective, cfg, fold_dir,
                          device=self.device, param_groups=groups, model_spec=spec,
                          val_metrics=selection_metrics(metric))
        trainer.fit(train, val, resume=self.resume)
        paths = trainer.top_k.best_paths() or [trainer.last_path]
        return ensemble_predict_proba(trainer.model, paths, test, device=self.device)

    def _probe(self, train_ds, val_ds, test_ds, n_classes, store):
        from ..evaluation.probes import linear_probe, mlp_probe

        model, _ = self.build(store, n_classes)
        xtr, ytr, _ = extract_features(self.m, model, ConcatDataset(_flat(train_ds, val_ds)),
                                       self.device)
        xte, yte, ite = extract_features(self.m, model, test_ds, self.device)
        probe = (mlp_probe if self.mode == "mlp" else linear_probe)(xtr, ytr, xte)
        probs = np.zeros((len(xte), n_classes))
        probs[:, probe.classes.astype(int)] = probe.proba  # classes absent from training get 0
        return probs, yte, ite


def _balanced(objective: nn.Module, train_ds: Dataset, n_classes: int) -> nn.Module:
    """``objective`` with the cross entropy weighted by ``n / (K * n_k)`` of ``train_ds``."""
    from ..objectives.classification import ClassificationObjective

    if not isinstance(objective, ClassificationObjective):
        raise ValueError(f"class_weight='balanced' needs the cross-entropy objective; the "
                         f"method's is {type(objective).__name__}.")
    y = np.concatenate([d.labels for d in _flat(train_ds)])
    counts = np.bincount(y[y >= 0], minlength=n_classes).astype(float)
    # a class absent from training keeps weight 1 (it contributes no loss either way)
    weight = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 1.0)
    return ClassificationObjective(objective.label_smoothing, class_weight=weight)


def _adapters_at_new_layer_rate(model: nn.Module, groups: list[dict] | None,
                                default_lr: float) -> list[dict] | None:
    """LoRA adapters are new parameters: give them the largest learning rate among the
    method's groups (not the small rate that protects pre-trained weights)."""
    if not groups:
        return groups
    ids = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    top = max(g.get("lr", default_lr) for g in groups)
    out = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in groups]
    out.append({"name": "lora", "params": [p for n, p in model.named_parameters()
                                           if "lora_" in n], "lr": top,
                "weight_decay": groups[0].get("weight_decay", 0.0)})
    return [g for g in out if g["params"]]


@torch.no_grad()
def extract_features(m: Method, model: nn.Module, dataset: Dataset, device: str = "auto",
                     batch_size: int = 256, fn=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-window features ``m.features(model, batch)`` (or ``fn(model, batch)``) over
    ``dataset``: returns features (N, F), labels (N,) and window ids (N,)."""
    fn = fn or m.features
    dev = get_device(device)
    model = model.to(dev).eval()
    feats, ys, ids = [], [], []
    for batch in make_loader(dataset, batch_size, shuffle=False):
        b = {k: v.to(dev) for k, v in batch.items()}
        feats.append(fn(model, b).float().cpu().numpy())
        ys.append(batch["y"].numpy())
        ids.append(batch["index"].numpy())
    return np.concatenate(feats), np.concatenate(ys), np.concatenate(ids)
