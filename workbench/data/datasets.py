"""PyTorch Datasets over WindowStores.

Each dataset implements ``__getitems__`` so a ``DataLoader`` fetches a whole batch with one
sorted slicing call into the memory-mapped store and no per-sample collation; use
:func:`make_loader` to get such a loader. Batches follow the contract in ``docs/contracts.md``:
``x`` (B, C, T), ``y``, ``ch_ids`` (B, C), ``ch_mask`` (B, C), ``rate_id`` (B,), ``index`` (B,).

* :class:`WindowDataset` - multichannel windows of one store.
* :class:`SingleChannelDataset` - every (window, channel) pair as a univariate sample, for
  univariate pre-training across montages (One Model for All, EEGM2 probes).
* :class:`MixedMontageDataset` - several stores at once; batches group windows of equal length
  and pad the channel axis, with channel ids into a shared :class:`ChannelVocabulary` and masks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..channels import ChannelVocabulary, rate_index
from .store import WindowStore


class WindowDataset(Dataset):
    """Multichannel windows of one store.

    Parameters
    ----------
    store : WindowStore
    indices : array of int, optional
        Window ids (e.g. ``split.train``); all windows by default.
    vocab : ChannelVocabulary, optional
        Channel ids come from it (UCS); local ids 0..C-1 otherwise.
    channels : list of str, optional
        Keep only these channels, in this order (e.g. a channel intersection).
    """

    def __init__(self, store: WindowStore, indices: Sequence[int] | None = None,
                 vocab: ChannelVocabulary | None = None, channels: Sequence[str] | None = None):
        self.store = store
        self.indices = (np.arange(len(store), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(store)):
            raise IndexError(f"Window ids out of range 0..{len(store) - 1} for {store}.")
        self.channel_idx = None
        names = store.ch_names
        if channels is not None:
            pos = {n: i for i, n in enumerate(names)}
            missing = [c for c in channels if c not in pos]
            if missing:
                raise ValueError(f"Channels {missing} are not in store {store.root} "
                                 f"({names}).")
            self.channel_idx = np.array([pos[c] for c in channels])
            names = list(channels)
        self.ch_names = list(names)
        base_ids = (np.arange(len(names), dtype=np.int64) if vocab is None else vocab.ids(names))
        self.ch_ids = torch.from_numpy(base_ids)
        self.rate_id = rate_index(store.sfreq)
        self.labels = store.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        # The order inside a batch is irrelevant: sort so the memory map is read sequentially.
        ids = np.sort(self.indices[np.asarray(items, dtype=np.int64)])
        x = self.store.get(ids)  # (B, C, T)
        if self.channel_idx is not None:
            x = x[:, self.channel_idx]
        b, c = x.shape[:2]
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(self.store.labels[ids]),
                "ch_ids": self.ch_ids.expand(b, c).clone(),
                "ch_mask": torch.ones(b, c, dtype=torch.bool),
                "rate_id": torch.full((b,), self.rate_id, dtype=torch.int64),
                "index": torch.from_numpy(ids)}


class SingleChannelDataset(Dataset):
    """Every (window, channel) pair of one store as a univariate sample ``x`` (1, T).

    ``channels`` restricts the view to some channels (e.g. a channel intersection).
    """

    def __init__(self, store: WindowStore, indices: Sequence[int] | None = None,
                 vocab: ChannelVocabulary | None = None, channels: Sequence[str] | None = None):
        self.store = store
        self.indices = (np.arange(len(store), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        names = store.ch_names
        if channels is None:
            self.channel_idx = np.arange(len(names))
        else:
            pos = {n: i for i, n in enumerate(names)}
            missing = [c for c in channels if c not in pos]
            if missing:
                raise ValueError(f"Channels {missing} are not in store {store.root} ({names}).")
            self.channel_idx = np.array([pos[c] for c in channels], dtype=np.int64)
        self.n_chans = len(self.channel_idx)
        kept = [names[i] for i in self.channel_idx]
        self.ch_ids = (np.arange(len(kept), dtype=np.int64) if vocab is None
                       else vocab.ids(kept))
        self.rate_id = rate_index(store.sfreq)

    def __len__(self) -> int:
        return len(self.indices) * self.n_chans

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        items = np.sort(np.asarray(items, dtype=np.int64))
        win = self.indices[items // self.n_chans]
        ch = items % self.n_chans  # position among the kept channels
        uniq, inv = np.unique(win, return_inverse=True)
        block = self.store.get(uniq)  # (U, C, T)
        x = block[inv, self.channel_idx[ch]][:, None, :]  # (B, 1, T)
        b = len(items)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)),
                "y": torch.from_numpy(self.store.labels[win]),
                "ch_ids": torch.from_numpy(self.ch_ids[ch][:, None]),
                "ch_mask": torch.ones(b, 1, dtype=torch.bool),
                "rate_id": torch.full((b,), self.rate_id, dtype=torch.int64),
                "index": torch.from_numpy(win)}


class ConcatDataset(Dataset):
    """Several datasets of the classes above; batches never mix window lengths.

    Batches that mix datasets of equal window length but different channel counts are padded
    on the channel axis (``ch_mask`` False, ``ch_ids`` 0 on padding). ``index`` holds window
    ids local to each store; ``source`` says which dataset of ``datasets`` a sample came from.
    Like the other datasets, a batch's samples are not in the order of the requested items.
    """

    def __init__(self, datasets: Sequence[Dataset]):
        if not datasets:
            raise ValueError("ConcatDataset needs at least one dataset.")
        self.datasets = list(datasets)
        self.lengths = np.array([len(d) for d in self.datasets])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.n_times = np.array([d.store.n_times for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def groups(self) -> np.ndarray:
        """Group id per sample: samples in one group share a window length."""
        _, g = np.unique(self.n_times, return_inverse=True)
        return np.repeat(g, self.lengths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, items: Sequence[int]) -> dict[str, torch.Tensor]:
        items = np.asarray(items, dtype=np.int64)
        src = np.searchsorted(self.offsets, items, side="right") - 1
        parts = []
        for s in np.unique(src):
            m = np.flatnonzero(src == s)
            part = self.datasets[s].__getitems__(items[m] - self.offsets[s])
            part["source"] = torch.full((len(m),), int(s), dtype=torch.int64)
            parts.append(part)
        lengths = {p["x"].shape[-1] for p in parts}
        if len(lengths) > 1:
            raise ValueError(f"A batch mixes window lengths {sorted(lengths)}; use "
                             "make_loader(..., which groups batches by window length).")
        max_c = max(p["x"].shape[1] for p in parts)
        for p in parts:
            pad = max_c - p["x"].shape[1]
            if pad:
                p["x"] = torch.nn.functional.pad(p["x"], (0, 0, 0, pad))
                p["ch_ids"] = torch.nn.functional.pad(p["ch_ids"], (0, pad))
                p["ch_mask"] = torch.nn.functional.pad(p["ch_mask"], (0, pad), value=False)
        # Samples come grouped by source (the order inside a batch carries no meaning).
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices, shuffled as a function of ``(seed, epoch)`` only.

    Samples with different ``groups`` never share a batch. Under torchrun each rank takes every
    ``world_size``-th batch. Call :meth:`set_epoch` before each epoch (the Trainer does), so an
    interrupted run resumes with exactly the batches it would have seen.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, groups: np.ndarray | None = None, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"Invalid value for the 'batch_size' parameter: expected >= 1, "
                             f"got {batch_size}.")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last
        self.groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for g in np.unique(self.groups):
            idx = np.flatnonzero(self.groups == g)
            if self.shuffle:
                idx = idx[rng.permutation(len(idx))]
            for a in range(0, len(idx), self.batch_size):
                b = idx[a:a + self.batch_size]
                if len(b) == self.batch_size or (not self.drop_last and len(b)):
                    batches.append(b)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._batches())


def _passthrough(batch):
    return batch


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader that fetches each batch with one ``__getitems__`` call.

    Uses :class:`EpochBatchSampler` (deterministic per epoch, groups by window length for a
    :class:`ConcatDataset`, sharded by rank under torchrun).
    """
    import torch.distributed as dist

    rank, world = 0, 1
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    groups = dataset.groups() if hasattr(dataset, "groups") else None
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed,
                                drop_last=drop_last, groups=groups, rank=rank, world_size=world)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_passthrough,
                      num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0)
