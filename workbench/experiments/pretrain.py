"""Pre-training of any method, in a run folder keyed by its settings."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..channels import ChannelVocabulary
from ..config import Profile, get_profile
from ..data.datasets import make_loader
from ..data.store import WindowStore
from ..methods import Method, get_method
from ..runs import RunFolder, RunLayout
from ..training import Trainer, load_checkpoint
from ..utils import file_digest, get_device, get_logger, seed_everything

log = get_logger("experiments")


def as_profile(profile: str | Profile) -> Profile:
    return get_profile(profile) if isinstance(profile, str) else profile


def as_layout(run_dir: str | Path | RunLayout) -> RunLayout:
    return run_dir if isinstance(run_dir, RunLayout) else RunLayout(run_dir)


def store_id(store: WindowStore) -> dict[str, Any]:
    """A store's identity in run settings: its folder name (cached stores are named by a hash of
    what determines their content) and its shape, not its absolute path, so a moved cache
    still finds its runs."""
    return {"name": store.root.name, "dataset": store.dataset, "windows": len(store),
            "channels": len(store.ch_names), "sfreq": store.sfreq}


def train_settings(cfg: Any) -> dict[str, Any]:
    """A TrainConfig as run settings (the progress bar does not change a run)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"}


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


def pretrain(method: str | Method, stores: Sequence[WindowStore], *,
             run_dir: str | Path | RunLayout = "runs/manual", out_dir: str | Path | None = None,
             profile: str | Profile = "smoke", variant: str | None = None, seed: int = 42,
             device: str = "auto", resume: bool = True, val_fraction: float = 0.1,
             vocab: ChannelVocabulary | None = None) -> PretrainResult:
    """Pre-train ``method`` on the windows of ``stores`` (several datasets at once).

    ``val_fraction`` of the windows (pre-training is label-free, so not whole subjects) are
    held out to report a validation loss. ``vocab`` is the channel schema (default: the UCS of
    the stores); methods that model single channels pre-train only on the channels it holds.

    The run lives in the folder of its settings (model and objective spec, data, schedule,
    seed; see :class:`workbench.runs.RunLayout`) under ``run_dir``, or in ``out_dir`` when
    given. A finished run of the same settings is returned as it is (no training), so every
    notebook that needs a pre-training asks for it this way.
    """
    m, prof = get_method(method), as_profile(profile)
    variant = variant or m.default_variant
    v = m.variant(variant)
    cfg = dataclasses.replace(m.pretrain_config(prof), seed=seed, progress=prof.progress)
    vocab = vocab or m.vocabulary(stores)
    seed_everything(seed)
    model, spec, objective = m.build_pretrain(variant, prof.preset, vocab, stores)
    settings = {
        "kind": "pretrain", "method": m.name, "model_spec": spec,
        "objective": dict(v.objective), "seed": seed, "stores": [store_id(s) for s in stores],
        "vocab": list(vocab.names), "val_fraction": val_fraction,
        "train_config": train_settings(cfg)}
    run = (RunFolder(Path(out_dir), settings) if out_dir is not None else
           as_layout(run_dir).run("pretrain", m.name, spec["name"], settings))
    run = RunFolder(run.path, run.settings)
    finished = resume and run.finished
    resume = run.claim() and resume
    if finished:
        log.info("reusing the finished pre-training run in %s", run.path)
    else:
        vocab.save(run.path / "vocab.json")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for s in stores:
        perm = rng.permutation(len(s))
        n_val = max(1, int(round(val_fraction * len(s))))
        val_idx.append(np.sort(perm[:n_val]))
        train_idx.append(np.sort(perm[n_val:]))
    pin = get_device(device).type == "cuda"  # pinned pages: asynchronous host-to-GPU copies
    train = make_loader(m.pretrain_dataset(stores, vocab, train_idx), cfg.batch_size,
                        shuffle=True, seed=seed, drop_last=True, num_workers=cfg.num_workers,
                        pin_memory=pin)
    val = make_loader(m.pretrain_dataset(stores, vocab, val_idx), cfg.batch_size, shuffle=False,
                      pin_memory=pin)
    t0 = time.perf_counter()
    trainer = Trainer(model, objective, cfg, run.path, device=device, model_spec=spec)
    history = trainer.fit(train, val, resume=resume)
    if finished:
        seconds = float(run.summary().get("seconds", float("nan")))
    else:
        seconds = time.perf_counter() - t0
        log.info("pre-trained %s/%s in %.1f s: loss %.4g -> %.4g", m.name, variant, seconds,
                 history["loss"].iloc[0], history["loss"].iloc[-1])
        run.mark_finished({"method": m.name, "variant": variant, "seconds": seconds})
    return PretrainResult(m.name, variant, history, trainer.last_path, vocab, seconds, run.path)


def checkpoint_id(path: str | Path) -> str:
    """Content digest of a pre-training run's checkpoint (its identity in run settings)."""
    path = Path(path)
    return file_digest(path / "last.pt" if path.is_dir() else path)


def load_pretrained(path: str | Path) -> tuple[dict[str, torch.Tensor], ChannelVocabulary]:
    """The model weights and channel vocabulary of a pre-training run folder or checkpoint."""
    path = Path(path)
    ckpt = path / "last.pt" if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"No pre-training checkpoint at {ckpt}: run the pre-training "
                                "first (notebook 03_pretrain or workbench.experiments.pretrain).")
    state = load_checkpoint(ckpt)["model"]
    vocab = ChannelVocabulary.load(ckpt.parent / "vocab.json")
    return state, vocab
