"""Method-agnostic drivers: pre-train, fine-tune or probe under a protocol, run ablations.

The stage notebooks call these with ``method=...`` and ``variant=...``; everything
method-specific comes from the :class:`~workbench.methods.base.Method`. Results are tidy pandas
tables (one row per subject and seed) that :mod:`workbench.evaluation.metrics` aggregates.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .channels import ChannelVocabulary
from .config import Profile, get_profile
from .data.datasets import WindowDataset, make_loader
from .data.splits import Split, within_subject_split
from .data.store import WindowStore
from .evaluation.metrics import aggregate, classification_metrics
from .methods import Method, get_method
from .training import Trainer, ensemble_predict_proba, load_checkpoint
from .utils import atomic_write_json, file_digest, get_device, get_logger, seed_everything

log = get_logger("experiments")


def _method(method: str | Method) -> Method:
    return get_method(method) if isinstance(method, str) else method


def _profile(profile: str | Profile) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


# ============================================================================ run folders
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _same_run(out_dir: Path, settings: dict[str, Any], finished: str) -> bool:
    """Whether ``out_dir`` holds a finished run (file ``finished`` present) of ``settings``."""
    path = out_dir / "settings.json"
    return ((out_dir / finished).is_file() and path.is_file()
            and json.loads(path.read_text()) == _jsonable(settings))


def _claim_run_dir(out_dir: Path, settings: dict[str, Any]) -> bool:
    """Record ``settings`` in ``out_dir/settings.json``; return whether a run there may resume.

    A folder whose recorded settings differ (another model, data, schedule or pre-trained
    checkpoint) is not resumed, since its checkpoints belong to another experiment: it is
    trained afresh, with a warning.
    """
    settings = _jsonable(settings)
    path = out_dir / "settings.json"
    old = json.loads(path.read_text()) if path.is_file() else None
    if old == settings:
        return True
    if old is not None:
        changed = sorted(k for k in {*old, *settings} if old.get(k) != settings.get(k))
        log.warning("%s holds a run with other settings (%s differ): training afresh.",
                    out_dir, ", ".join(changed))
    atomic_write_json(path, settings)
    return old is None


def _train_settings(cfg: Any) -> dict[str, Any]:
    """A TrainConfig as run settings (the progress bar does not change a run)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"}


# ============================================================================ pre-training
@dataclass
class PretrainResult:
    """What a pre-training run leaves: its history, checkpoint and channel vocabulary."""

    method: str
    variant: str
    history: pd.DataFrame
    checkpoint: Path
    vocab: ChannelVocabulary
    seconds: float
    out_dir: Path

    @property
    def samples_per_s(self) -> float:
        return float(self.history["samples_per_s"].mean())


def pretrain(method: str | Method, stores: Sequence[WindowStore], *, out_dir: str | Path,
             profile: str | Profile = "smoke", variant: str | None = None, seed: int = 42,
             device: str = "auto", resume: bool = True, val_fraction: float = 0.1,
             vocab: ChannelVocabulary | None = None,
             reuse: str | Path | None = None) -> PretrainResult:
    """Pre-train ``method`` on the windows of ``stores`` (several datasets at once).

    ``val_fraction`` of the windows (whole subjects are not needed: pre-training is
    label-free) are held out to report a validation loss. ``vocab`` is the channel schema
    (default: the UCS of the stores); methods that model single channels pre-train only on
    the channels it holds.

    The run's settings (model, data, schedule, seed) are recorded in
    ``out_dir/settings.json``. A finished run with the same settings is returned as it is; a
    folder holding a run of other settings is trained afresh. ``reuse`` names another run
    folder (e.g. the 03_pretrain notebook's) to use instead when it holds a finished run
    with the same settings (nothing in it is retrained or changed).
    """
    m, prof = _method(method), _profile(profile)
    variant = variant or m.default_variant
    m.variant(variant)
    cfg = dataclasses.replace(m.pretrain_config(prof), seed=seed, progress=prof.progress)
    vocab = vocab or m.vocabulary(stores)
    seed_everything(seed)
    model, spec, objective = m.build_pretrain(variant, prof.preset, vocab, stores)
    settings = {
        "kind": "pretrain", "method": m.name, "model_spec": spec, "seed": seed,
        "stores": [str(s.root) for s in stores], "vocab": list(vocab.names),
        "val_fraction": val_fraction, "train_config": _train_settings(cfg)}
    record = "pretrain.json"  # written when a run finishes
    if reuse is not None and resume and _same_run(Path(reuse), settings, record):
        out_dir = Path(reuse)
    out_dir = Path(out_dir)
    resume = _claim_run_dir(out_dir, settings) and resume
    finished = resume and (out_dir / record).is_file()
    if finished:
        log.info("reusing the finished pre-training run in %s", out_dir)
    else:
        vocab.save(out_dir / "vocab.json")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for s in stores:
        perm = rng.permutation(len(s))
        n_val = max(1, int(round(val_fraction * len(s))))
        val_idx.append(np.sort(perm[:n_val]))
        train_idx.append(np.sort(perm[n_val:]))
    train = make_loader(m.pretrain_dataset(stores, vocab, train_idx), cfg.batch_size,
                        shuffle=True, seed=seed, drop_last=True, num_workers=cfg.num_workers)
    val = make_loader(m.pretrain_dataset(stores, vocab, val_idx), cfg.batch_size, shuffle=False)
    t0 = time.perf_counter()
    trainer = Trainer(model, objective, cfg, out_dir, device=device, model_spec=spec)
    history = trainer.fit(train, val, resume=resume)
    if finished:
        seconds = float(json.loads((out_dir / record).read_text())["seconds"])
        return PretrainResult(m.name, variant, history, trainer.last_path, vocab, seconds, out_dir)
    seconds = time.perf_counter() - t0
    log.info("pre-trained %s/%s in %.1f s: loss %.4g -> %.4g", m.name, variant, seconds,
             history["loss"].iloc[0], history["loss"].iloc[-1])
    atomic_write_json(out_dir / record, {
        "method": m.name, "variant": variant, "seconds": seconds, "seed": seed,
        "stores": [str(s.root) for s in stores], "model_spec": spec,
        "train_config": dataclasses.asdict(cfg)})
    return PretrainResult(m.name, variant, history, trainer.last_path, vocab, seconds, out_dir)


def _checkpoint_id(path: str | Path) -> str:
    """Content digest of a pre-training run's checkpoint (its identity in run settings)."""
    path = Path(path)
    return file_digest(path / "last.pt" if path.is_dir() else path)


def load_pretrained(path: str | Path) -> tuple[dict[str, torch.Tensor], ChannelVocabulary]:
    """The model weights and channel vocabulary of a pre-training run folder or checkpoint."""
    path = Path(path)
    ckpt = path / "last.pt" if path.is_dir() else path
    state = load_checkpoint(ckpt)["model"]
    vocab = ChannelVocabulary.load(ckpt.parent / "vocab.json")
    return state, vocab


# ============================================================================ fine-tuning
@dataclass
class FinetuneResult:
    """Per-subject (and seed) metrics and per-window test predictions."""

    method: str
    variant: str
    results: pd.DataFrame  # one row per subject and seed
    predictions: pd.DataFrame  # window_id, subject, seed, y, pred, p0..pK
    out_dir: Path

    def summary(self, metrics: Sequence[str] = ("accuracy", "balanced_accuracy")) -> pd.DataFrame:
        """Mean and std over subjects and seeds."""
        return aggregate(self.results, by=None, metrics=list(metrics))


def _subjects(store: WindowStore, prof: Profile, subjects: Sequence[str] | None) -> list[str]:
    if subjects:
        return [str(s) for s in subjects]
    allsub = list(dict.fromkeys(store.index["subject"].astype(str)))
    return allsub[:prof.max_subjects] if prof.max_subjects else allsub


def finetune(method: str | Method, store: WindowStore, *, out_dir: str | Path,
             profile: str | Profile = "smoke", variant: str | None = None,
             pretrained: str | Path | None = None, seeds: Sequence[int] = (42,),
             subjects: Sequence[str] | None = None, device: str = "auto",
             mode: str | None = None, channels: Sequence[str] | None = None,
             test_size: float = 0.2, val_size: float = 0.1,
             reuse: str | Path | None = None) -> FinetuneResult:
    """Within-subject fine-tuning (or probing) of ``method`` on ``store``.

    For each subject and seed: a leakage-free split (:func:`within_subject_split`: whole trials
    or purged blocks held out), a classifier initialised from ``pretrained`` (unless the variant
    is from scratch), training with the top-k checkpoints kept by validation accuracy, and a
    test prediction that averages the softmax of those checkpoints (checkpoint ensembling).
    With ``mode="probe"`` the pre-trained model is frozen and a linear model is fitted on its
    features (``m.features``) instead; ``mode="mlp"`` fits a two-hidden-layer MLP on them.

    The run's settings (variant, mode, data, schedule, the pre-trained checkpoint's digest)
    are recorded in ``out_dir/settings.json``; per-subject runs that finished with the same
    settings are not retrained, and a folder of other settings is trained afresh.

    Parameters
    ----------
    channels : list of str, optional
        Use only these channels (e.g. a channel intersection for cross-dataset transfer).
    reuse : path, optional
        Another fine-tuning folder (e.g. the 04_finetune notebook's) whose per-subject runs
        are used, not retrained, when it holds finished runs of the same settings for every
        requested seed and subject; the tables are still written to ``out_dir``.
    """
    m, prof = _method(method), _profile(profile)
    variant = variant or m.default_variant
    spec = m.variant(variant)
    mode = mode or m.downstream
    if mode not in ("fine", "probe", "mlp"):
        raise ValueError(f"Invalid value for the 'mode' parameter: expected 'fine', 'probe' or "
                         f"'mlp', got {mode!r}.")
    out_dir = Path(out_dir)
    state, vocab = (None, None)
    if spec.get("pretrained", True):
        if pretrained is None:
            raise ValueError(f"Variant {variant!r} of {m.name} fine-tunes a pre-trained model: "
                             "pass 'pretrained' (a pre-training run folder or checkpoint).")
        state, vocab = load_pretrained(pretrained)
    if vocab is None:
        vocab = m.vocabulary([store])
    n_classes = store.n_classes
    settings = {
        "kind": "finetune", "method": m.name, "variant": variant, "mode": mode,
        "store": str(store.root), "preset": prof.preset,
        "train_config": _train_settings(m.finetune_config(prof)),
        "pretrained": None if state is None else _checkpoint_id(pretrained),
        "channels": None if channels is None else list(channels),
        "test_size": test_size, "val_size": val_size}
    # per-subject runs live under run_root: out_dir, or a matching finished folder (`reuse`)
    # that holds every requested seed and subject; results are written to out_dir either way
    run_root, resume = out_dir, True
    if reuse is not None and _same_run(Path(reuse), settings, "results.csv"):
        done = pd.read_csv(Path(reuse) / "results.csv", dtype={"subject": str})
        done = set(zip(done["seed"], done["subject"]))
        if {(s, sub) for s in seeds for sub in _subjects(store, prof, subjects)} <= done:
            run_root = Path(reuse)
            log.info("reusing the finished fine-tuning runs in %s", run_root)
    if run_root == out_dir:
        resume = _claim_run_dir(out_dir, settings)
    rows, preds = [], []
    for seed in seeds:
        splits = within_subject_split(store.index, store.n_times, test_size=test_size,
                                      val_size=val_size, seed=seed,
                                      subjects=_subjects(store, prof, subjects))
        for sp in splits:
            run_dir = run_root / f"seed{seed}" / f"subject{sp.subject}"
            if mode in ("probe", "mlp"):
                probs, y, idx = _probe_split(m, store, sp, state, vocab, variant, prof, n_classes,
                                             device, channels, mlp=mode == "mlp")
            else:
                probs, y, idx = _finetune_split(m, store, sp, state, vocab, variant, prof,
                                                n_classes, seed, device, run_dir, channels, resume)
            met = classification_metrics(y, probs, labels=list(range(n_classes)))
            rows.append({"method": m.name, "variant": variant, "dataset": store.dataset,
                         "subject": sp.subject, "seed": seed, "mode": mode,
                         "n_train": len(sp.train), "n_test": len(sp.test), **met})
            p = pd.DataFrame(probs, columns=[f"p{k}" for k in range(probs.shape[1])])
            p.insert(0, "window_id", idx)
            p.insert(1, "subject", sp.subject)
            p.insert(2, "seed", seed)
            p.insert(3, "y", y)
            p.insert(4, "pred", probs.argmax(1))
            preds.append(p)
            log.info("%s/%s subject %s seed %d: accuracy %.3f", m.name, variant, sp.subject,
                     seed, met["accuracy"])
    res = FinetuneResult(m.name, variant, pd.DataFrame(rows), pd.concat(preds, ignore_index=True),
                         out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res.results.to_csv(out_dir / "results.csv", index=False)
    res.predictions.to_csv(out_dir / "predictions.csv", index=False)
    return res


def _finetune_split(m: Method, store: WindowStore, sp: Split, state, vocab, variant: str,
                    prof: Profile, n_classes: int, seed: int, device: str, run_dir: Path,
                    channels, resume: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .objectives.classification import ClassificationObjective

    seed_everything(seed)
    cfg = dataclasses.replace(m.finetune_config(prof), seed=seed, progress=prof.progress,
                              monitor="val_acc", monitor_mode="max")
    model, spec = m.build_classifier(variant, prof.preset, store, vocab, n_classes, state)
    train = make_loader(WindowDataset(store, sp.train, vocab, channels), cfg.batch_size,
                        shuffle=True, seed=seed)
    val_ids = sp.val if len(sp.val) else sp.train
    val = make_loader(WindowDataset(store, val_ids, vocab, channels), 256, shuffle=False)
    test = make_loader(WindowDataset(store, sp.test, vocab, channels), 256, shuffle=False)
    groups = m.finetune_param_groups(model, prof, pretrained=state is not None)
    trainer = Trainer(model, ClassificationObjective(), cfg, run_dir, device=device,
                      param_groups=groups, model_spec=spec)
    trainer.fit(train, val, resume=resume)
    paths = trainer.top_k.best_paths() or [trainer.last_path]
    return ensemble_predict_proba(trainer.model, paths, test, device=device)


@torch.no_grad()
def extract_features(m: Method, model: torch.nn.Module, store: WindowStore,
                     indices: np.ndarray, vocab: ChannelVocabulary | None = None,
                     device: str = "auto", channels=None, batch_size: int = 256,
                     fn=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-window features ``m.features(model, batch)`` (or ``fn(model, batch)``) for
    ``indices``: returns (features (N, F), window ids (N,))."""
    fn = fn or m.features
    dev = get_device(device)
    model = model.to(dev).eval()
    feats, ids = [], []
    loader = make_loader(WindowDataset(store, indices, vocab, channels), batch_size,
                         shuffle=False)
    for batch in loader:
        b = {k: v.to(dev) for k, v in batch.items()}
        feats.append(fn(model, b).float().cpu().numpy())
        ids.append(batch["index"].numpy())
    return np.concatenate(feats), np.concatenate(ids)


def pretrained_embeddings(method: str | Method, store: WindowStore, *,
                          pretrained: str | Path | None, profile: str | Profile = "smoke",
                          variant: str | None = None, indices: np.ndarray | None = None,
                          device: str = "auto", seed: int = 42
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Representations of ``store``'s windows by the pre-trained model, or by the same model
    at random initialisation when ``pretrained`` is None (the "scratch" reference)."""
    m, prof = _method(method), _profile(profile)
    variant = variant or m.default_variant
    if pretrained is not None:
        state, vocab = load_pretrained(pretrained)
    else:
        state, vocab = None, m.vocabulary([store])
    seed_everything(seed)
    model, _, _ = m.build_pretrain(variant, prof.preset, vocab, [store])
    if state is not None:
        model.load_state_dict(state)
    ids = np.arange(len(store)) if indices is None else np.asarray(indices)
    return extract_features(m, model, store, ids, vocab, device, fn=m.pretrain_features)


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, store: WindowStore, indices: np.ndarray, key: str,
                    vocab: ChannelVocabulary | None = None, device: str = "auto",
                    batch_size: int = 128) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
    """One named model output (e.g. ``"attention"``, a list per layer) over windows.

    Returns the output concatenated over batches (per layer for lists) and the window ids.
    """
    dev = get_device(device)
    model = model.to(dev).eval()
    parts, ids = [], []
    for batch in make_loader(WindowDataset(store, indices, vocab), batch_size, shuffle=False):
        b = {k: v.to(dev) for k, v in batch.items()}
        out = model(b["x"], ch_ids=b["ch_ids"], rate_id=b["rate_id"], ch_mask=b["ch_mask"])
        if key not in out:
            raise KeyError(f"The model returns no {key!r} output; it returns {sorted(out)}.")
        val = out[key]
        parts.append([v.float().cpu().numpy() for v in val] if isinstance(val, list | tuple)
                     else val.float().cpu().numpy())
        ids.append(batch["index"].numpy())
    if isinstance(parts[0], list):
        merged = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    else:
        merged = np.concatenate(parts)
    return merged, np.concatenate(ids)


def finetuned_model(run_dir: str | Path) -> torch.nn.Module:
    """The best fine-tuned checkpoint of one subject's run folder (``.../subjectS``)."""
    from .training import build_model_from_checkpoint

    run_dir = Path(run_dir)
    top = {int(p.stem.removeprefix("epoch")): p for p in (run_dir / "top").glob("epoch*.pt")}
    path = run_dir / "last.pt"
    hist_path = run_dir / "history.csv"
    if top and hist_path.exists():
        hist = pd.read_csv(hist_path)
        hist = hist[hist["epoch"].isin(top)]
        if "val_acc" in hist and len(hist):
            path = top[int(hist.loc[hist["val_acc"].idxmax(), "epoch"])]
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint in {run_dir} (run the fine-tuning first).")
    return build_model_from_checkpoint(path)


def _probe_split(m: Method, store: WindowStore, sp: Split, state, vocab, variant: str,
                 prof: Profile, n_classes: int, device: str, channels, mlp: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .evaluation.probes import linear_probe, mlp_probe

    model, _ = m.build_classifier(variant, prof.preset, store, vocab, n_classes, state)
    train_ids = np.concatenate([sp.train, sp.val])
    xtr, itr = extract_features(m, model, store, train_ids, vocab, device, channels)
    xte, ite = extract_features(m, model, store, sp.test, vocab, device, channels)
    probe = (mlp_probe if mlp else linear_probe)(xtr, store.labels[itr], xte)
    probs = np.zeros((len(xte), n_classes))
    probs[:, probe.classes.astype(int)] = probe.proba  # classes absent from training get 0
    return probs, store.labels[ite], ite


# ============================================================================ ablations
def ablation_study(method: str | Method, pretrain_stores: Sequence[WindowStore],
                   store: WindowStore, *, out_dir: str | Path, profile: str | Profile = "smoke",
                   variants: Sequence[str] | None = None, seeds: Sequence[int] = (42,),
                   device: str = "auto", reuse_pretrained: dict[str, str | Path] | None = None,
                   reuse_finetuned: str | Path | None = None) -> pd.DataFrame:
    """Pre-train (once per distinct pre-training setup) and fine-tune every variant.

    Variants that share the same ``pretrain_key`` reuse one pre-trained model. Returns one row
    per variant, subject and seed.

    Parameters
    ----------
    reuse_pretrained : dict, optional
        ``{pretrain_key: run folder}``: finished pre-training runs (e.g. 03_pretrain's) to use
        when their settings equal what this study would run (see ``reuse`` in
        :func:`pretrain`). Runs are otherwise trained in ``out_dir/pretrain-<key>``.
    reuse_finetuned : path, optional
        Parent of finished fine-tuning folders named by variant (04_finetune's layout) to use
        when their settings, the pre-trained checkpoint included, equal this study's.
        Runs are otherwise trained in ``out_dir/finetune-<variant>``.
    """
    m, prof = _method(method), _profile(profile)
    variants = list(variants or m.variants)
    out_dir = Path(out_dir)
    reuse_pretrained = reuse_pretrained or {}
    pretrained: dict[str, Path] = {}
    tables = []
    for v in variants:
        spec = m.variant(v)
        ckpt = None
        if spec.get("pretrained", True):
            key = spec.get("pretrain_key", "default")
            if key not in pretrained:
                pre = pretrain(m, pretrain_stores, out_dir=out_dir / f"pretrain-{key}",
                               profile=prof, variant=v, seed=seeds[0], device=device,
                               reuse=reuse_pretrained.get(key))
                pretrained[key] = pre.out_dir
            ckpt = pretrained[key]
        res = finetune(m, store, out_dir=out_dir / f"finetune-{v}", profile=prof, variant=v,
                       pretrained=ckpt, seeds=seeds, device=device,
                       reuse=Path(reuse_finetuned) / v if reuse_finetuned else None)
        tables.append(res.results)
    table = pd.concat(tables, ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "ablations.csv", index=False)
    return table


def cross_dataset_transfer(method: str | Method, pretrain_stores: Sequence[WindowStore],
                           store: WindowStore, *, out_dir: str | Path,
                           profile: str | Profile = "smoke",
                           schemas: Sequence[str] = ("intersection", "ucs"),
                           seeds: Sequence[int] = (42,), device: str = "auto") -> pd.DataFrame:
    """Pre-train on ``pretrain_stores``, fine-tune within-subject on ``store``, once per channel
    schema: ``"ucs"`` (the union of all datasets' channels) or ``"intersection"`` (only the
    channels every dataset has, in pre-training and fine-tuning). One Model for All, Table I.
    """
    m, prof = _method(method), _profile(profile)
    out_dir = Path(out_dir)
    names = [s.ch_names for s in [*pretrain_stores, store]]
    tables = []
    for schema in schemas:
        if schema == "ucs":
            vocab = ChannelVocabulary.union(*names)
        elif schema == "intersection":
            vocab = ChannelVocabulary.intersection(*names)
        else:
            raise ValueError(f"Invalid value for the 'schemas' parameter: expected 'ucs' or "
                             f"'intersection', got {schema!r}.")
        pre = pretrain(m, pretrain_stores, out_dir=out_dir / f"pretrain-{schema}", profile=prof,
                       seed=seeds[0], device=device, vocab=vocab)
        channels = [c for c in store.ch_names if c in vocab]
        res = finetune(m, store, out_dir=out_dir / f"finetune-{schema}", profile=prof,
                       pretrained=pre.out_dir, seeds=seeds, device=device, channels=channels)
        tables.append(res.results.assign(schema=schema, n_channels=len(channels),
                                          vocab_size=len(vocab)))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out_dir / "transfer.csv", index=False)
    return table


def paper_comparison(method: str | Method, table: pd.DataFrame, dataset_alias: str) -> pd.DataFrame:
    """Our mean ± std accuracy per variant next to the paper's number for ``dataset_alias``."""
    m = _method(method)
    agg = aggregate(table, by="variant", metrics=["accuracy"]).set_index("variant")
    rows = []
    for v in table["variant"].unique():
        paper = m.paper_results.get(v, {}).get(dataset_alias, np.nan)
        rows.append({"variant": v, "description": m.variants[v].get("description", ""),
                     "ours_mean": agg.loc[v, "mean"] * 100, "ours_std": agg.loc[v, "std"] * 100,
                     f"paper_{dataset_alias}": paper})
    return pd.DataFrame(rows)


def save_json(obj: Any, path: str | Path) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj, default=str)))
