"""Reading models back out of runs: pre-trained representations, named outputs, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import Profile
from ..data.datasets import WindowDataset, make_loader
from ..data.store import WindowStore
from ..methods import Method, get_method
from ..utils import get_device, seed_everything
from .finetune import extract_features
from .pretrain import as_profile, load_pretrained


def pretrained_embeddings(method: str | Method, store: WindowStore, *,
                          pretrained: str | Path | None, profile: str | Profile = "smoke",
                          variant: str | None = None, indices: np.ndarray | None = None,
                          device: str = "auto", seed: int = 42
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Representations of ``store``'s windows by the pre-trained model, or by the same model
    at random initialisation when ``pretrained`` is None (the "scratch" reference)."""
    m, prof = get_method(method), as_profile(profile)
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
    feats, _, idx = extract_features(m, model, WindowDataset(store, ids, vocab), device,
                                     fn=m.pretrain_features)
    return feats, idx


@torch.no_grad()
def collect_outputs(model: torch.nn.Module, store: WindowStore, indices: np.ndarray, key: str,
                    vocab=None, device: str = "auto",
                    batch_size: int = 128) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
    """One named model output (e.g. ``"attention"``, a list per layer) over windows.

    Returns the output concatenated over batches (per layer for lists) and the window ids;
    ``KeyError`` naming the outputs the model has when it has no ``key``.
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


def finetuned_model(fold_dir: str | Path) -> torch.nn.Module:
    """The best checkpoint (by the run's own monitor) of one fold's run folder."""
    from ..training import build_model_from_checkpoint, load_checkpoint

    fold_dir = Path(fold_dir)
    last = fold_dir / "last.pt"
    if not last.exists():
        raise FileNotFoundError(f"No checkpoint in {fold_dir} (run the fine-tuning first).")
    monitor = load_checkpoint(last)["train_config"]["monitor"]
    top = {int(p.stem.removeprefix("epoch")): p for p in (fold_dir / "top").glob("epoch*.pt")}
    path = last
    hist_path = fold_dir / "history.csv"
    if top and hist_path.exists():
        hist = pd.read_csv(hist_path)
        hist = hist[hist["epoch"].isin(top)]
        if monitor in hist and len(hist):
            path = top[int(hist.loc[hist[monitor].idxmax(), "epoch"])]
    return build_model_from_checkpoint(path)
