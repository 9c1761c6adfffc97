"""Joint multi-task fine-tuning: one shared encoder, one head per task, per-task metrics.

Batches come from one task at a time (tasks may differ in channel set and label space), in
turn; a batch's ``task`` entry says which head reads it, so a task's head never sees another
task's labels. EEGPT's joint fine-tuning of its task-shared electrode graph is one use; any
method whose classifier returns an ``embedding`` can run it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Profile
from ..data.datasets import WindowDataset, make_loader
from ..data.splits import Split
from ..data.store import WindowStore
from ..evaluation.honesty import recording_confound
from ..evaluation.metrics import classification_metrics
from ..evaluation.protocols import Protocol, make_splits
from ..methods import MODES, Method, get_method
from ..runs import RunFolder, RunLayout
from ..training import Trainer, ensemble_predict_proba, predict_proba
from ..training.adaptation import apply_lora, freeze
from ..utils import check_option, seed_everything
from .finetune import FinetuneResult, _prediction_table
from .pretrain import (
    as_layout,
    as_profile,
    checkpoint_id,
    load_pretrained,
    log,
    store_id,
    train_settings,
)

__all__ = ["MultiTaskClassifier", "MultiTaskObjective", "RoundRobinLoader", "finetune_multitask"]


class MultiTaskClassifier(nn.Module):
    """A shared backbone (a method's classifier; its own head is unused) and one linear head
    per task on the backbone's ``embedding``.

    ``forward(x, ..., task=t)`` returns the backbone's outputs with ``logits`` of task ``t``;
    without ``task`` it uses ``active_task`` (set it before calling code that passes only the
    standard model arguments, e.g. :func:`workbench.training.predict_proba`).
    """

    def __init__(self, backbone: nn.Module, n_classes: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(nn.Linear(embed_dim, k) for k in n_classes)
        self.active_task = 0

    def forward(self, x: torch.Tensor, task: int | torch.Tensor | None = None,
                **kwargs: Any) -> dict[str, torch.Tensor]:
        t = self.active_task if task is None else int(task)
        out = dict(self.backbone(x, **kwargs))
        out["logits"] = self.heads[t](out["embedding"])  # (B, K_t)
        return out


class MultiTaskObjective(nn.Module):
    """Cross entropy of each batch's own task head; logs ``loss``, ``acc`` and ``loss_t<k>``."""

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        task = batch["task"]
        if not bool((task == task[0]).all()):
            raise ValueError("A multi-task batch must hold windows of one task only.")
        t = int(task[0])
        out = model(batch["x"], task=t, ch_ids=batch.get("ch_ids"),
                    rate_id=batch.get("rate_id"), ch_mask=batch.get("ch_mask"))
        logits, y = out["logits"], batch["y"]
        loss = F.cross_entropy(logits.float(), y, ignore_index=-1)
        acc = (logits.argmax(1) == y).float().mean()
        return loss, {"loss": loss.detach(), "acc": acc, f"loss_t{t}": loss.detach()}


class RoundRobinLoader:
    """Batches of several loaders in turn (one task per batch), tagged with ``task``.

    One pass yields every batch of every loader; a loader that runs out is skipped.
    """

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return sum(len(ld) for ld in self.loaders)

    def set_epoch(self, epoch: int) -> None:
        for ld in self.loaders:
            sampler = getattr(ld, "batch_sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        its = [iter(ld) for ld in self.loaders]
        alive = list(range(len(its)))
        while alive:
            for t in list(alive):
                try:
                    batch = next(its[t])
                except StopIteration:
                    alive.remove(t)
                    continue
                batch["task"] = torch.full((len(batch["x"]),), t, dtype=torch.int64)
                yield batch


def _pooled(splits: list[Split]) -> Split:
    """Per-subject splits (within-subject) pooled into one: every subject's held-out trials."""
    cat = [np.concatenate([getattr(s, k) for s in splits]) for k in ("train", "test", "val")]
    return Split(*cat, name="within-subject/pooled", fold=0)


def finetune_multitask(method: str | Method, stores: Sequence[WindowStore], *,
                       run_dir: str | Path | RunLayout = "runs/manual",
                       out_dir: str | Path | None = None, profile: str | Profile = "smoke",
                       variant: str | None = None, pretrained: str | Path | None = None,
                       seeds: Sequence[int] = (42,), protocol: str | Protocol = "subject_kfold",
                       mode: str = "full", device: str = "auto",
                       lora_rank: int = 8) -> FinetuneResult:
    """Fine-tune one encoder jointly on every store (one head each) under ``protocol``.

    Each task is split by the protocol on its own subjects (a within-subject protocol is pooled
    over subjects into one fold); fold ``f`` trains on every task's fold ``f`` at once. Model
    selection uses the mean over tasks of the method's selection metric. Returns per-task rows
    (``dataset`` = the task) with ``mode`` and ``tasks`` recorded.
    """
    m, prof = get_method(method), as_profile(profile)
    protocol = Protocol.of(protocol)
    variant = variant or m.default_variant
    v = m.variant(variant)
    check_option("mode", mode, [x for x in MODES if x not in ("probe", "mlp")])
    if len({tuple(s.ch_names) for s in stores}) > 1 and not m.any_montage:
        raise ValueError(f"Method {m.name!r} takes one channel layout; the stores "
                         f"{[s.dataset for s in stores]} differ in channels.")
    state, vocab = (load_pretrained(pretrained) if v.pretrained else (None, None))
    if v.pretrained and pretrained is None:
        raise ValueError(f"Variant {variant!r} needs 'pretrained' (a pre-training run).")
    vocab = vocab or m.vocabulary(stores)
    cfg = m.finetune_config(prof, stores[0], mode)
    settings = {"kind": "multitask", "method": m.name, "variant": variant, "mode": mode,
                "stores": [store_id(s) for s in stores], "preset": prof.preset,
                "protocol": protocol.settings(), "train_config": train_settings(cfg),
                "pretrained": None if state is None else checkpoint_id(pretrained),
                "lora_rank": lora_rank}
    label = "+".join(s.dataset for s in stores) + f"-{variant}-{mode}-{protocol.name}"
    run = (RunFolder(Path(out_dir), settings) if out_dir is not None else
           as_layout(run_dir).run("multitask", m.name, label, settings))
    requested = {"seeds": sorted(int(s) for s in seeds)}
    if run.finished and run.summary().get("requested") == requested:
        log.info("reusing the finished multi-task run in %s", run.path)
        return FinetuneResult(m.name, variant, pd.read_csv(run / "results.csv"),
                              pd.read_csv(run / "predictions.csv"), run.path)
    resume = run.claim()
    metric = m.selection_metric(min(s.n_classes for s in stores))
    rows, preds = [], []
    for seed in seeds:
        per_task = []
        for s in stores:
            sp = make_splits(protocol, s.index, s.n_times, seed=seed)
            per_task.append([_pooled(sp)] if protocol.name == "within_subject" else sp)
        for f in range(min(len(x) for x in per_task)):
            folds = [x[f] for x in per_task]
            seed_everything(seed)
            backbone, _ = m.build_classifier(variant, prof.preset, stores[0], vocab,
                                                stores[0].n_classes, state)
            enc = m.encoder_parameter_names(backbone)
            with torch.no_grad():
                probe = make_loader(WindowDataset(stores[0], folds[0].train[:2], vocab), 2,
                                    shuffle=False)
                b = next(iter(probe))
                dim = backbone(b["x"], ch_ids=b["ch_ids"], rate_id=b["rate_id"],
                               ch_mask=b["ch_mask"])["embedding"].shape[-1]
            model = MultiTaskClassifier(backbone, [s.n_classes for s in stores], dim)
            enc = [f"backbone.{n}" for n in enc]
            if mode == "linear":
                freeze(model, enc)
            elif mode == "lora":
                apply_lora(model, enc, r=lora_rank)
            cfg_f = dataclasses.replace(cfg, seed=seed, progress=prof.progress,
                                        monitor=f"val_{metric}", monitor_mode="max")

            def loaders(kind: str, shuffle: bool, bs: int, folds=folds, seed=seed):
                out = []
                for s, sp in zip(stores, folds):
                    ids = getattr(sp, kind) if len(getattr(sp, kind)) else sp.train
                    out.append(make_loader(WindowDataset(s, ids, vocab), bs, shuffle=shuffle,
                                           seed=seed))
                return out

            train = RoundRobinLoader(loaders("train", True, cfg_f.batch_size))
            val_loaders = loaders("val", False, 256)

            def val_metrics(net, _loader, val_loaders=val_loaders):
                vals = []
                for t, ld in enumerate(val_loaders):
                    net.active_task = t
                    probs, y, _ = predict_proba(net, ld, next(net.parameters()).device)
                    vals.append(classification_metrics(y, probs,
                                                       labels=list(range(probs.shape[1])))[metric])
                net.active_task = 0
                vals = [-1.0 if math.isnan(x) else x for x in vals]
                return {f"val_{metric}": float(np.mean(vals))}

            fold_dir = run.path / f"seed{seed}" / f"fold{f}"
            # (no model_spec: the checkpoint holds a MultiTaskClassifier, not the backbone)
            trainer = Trainer(model, MultiTaskObjective(), cfg_f, fold_dir, device=device,
                              val_metrics=val_metrics)
            trainer.fit(train, RoundRobinLoader(val_loaders), resume=resume)
            paths = trainer.top_k.best_paths() or [trainer.last_path]
            for t, (s, sp) in enumerate(zip(stores, folds)):
                trainer.model.active_task = t
                test = make_loader(WindowDataset(s, sp.test, vocab), 256, shuffle=False)
                probs, y, idx = ensemble_predict_proba(trainer.model, paths, test, device=device)
                met = classification_metrics(y, probs, labels=list(range(s.n_classes)))
                verdict = recording_confound(s.index, np.concatenate([sp.train, sp.val]),
                                             sp.test)
                if verdict:
                    log.warning("%s fold%d: %s", s.dataset, f, verdict.reason)
                rows.append({"confounded": bool(verdict), "method": m.name, "variant": variant, "mode": mode,
                             "dataset": s.dataset, "n_classes": s.n_classes,
                             "protocol": protocol.name,
                             "fold": f"fold{f}", "subject": "", "seed": seed,
                             "tasks": "+".join(x.dataset for x in stores),
                             "n_train": len(sp.train), "n_val": len(sp.val),
                             "n_test": len(sp.test), **met})
                preds.append(_prediction_table(probs, y, idx, f"fold{f}", seed)
                             .assign(dataset=s.dataset))
            trainer.model.active_task = 0
    res = FinetuneResult(m.name, variant, pd.DataFrame(rows), pd.concat(preds, ignore_index=True),
                         run.path)
    res.results.to_csv(run / "results.csv", index=False)
    res.predictions.to_csv(run / "predictions.csv", index=False)
    run.mark_finished({"requested": requested})
    return res
