"""WindowStore: windows written once to a float32 memory-mapped file plus an index table.

Layout of a store folder::

    windows.f32   float32, C-order, shape (N, C, T)  (memory-mapped when read)
    index.csv     one row per window: window_id, dataset, subject, session, recording,
                  trial, label, start, start_s
    meta.json     ch_names, sfreq, n_times, n_windows, dataset, label_names, provenance

A store is written into a temporary sibling folder ``.<name>.XXXXXXXX`` and renamed into place
when complete, so a reader never sees a half-written store and an interrupted write leaves
nothing behind; a killed write leaves its temporary folder, which the next writer of a store in
the same folder removes (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import atomic_write_json, get_logger

log = get_logger("store")

INDEX_COLUMNS = ("window_id", "dataset", "subject", "session", "recording", "trial", "label",
                 "start", "start_s")
_STR_COLUMNS = ("dataset", "subject", "session", "recording")
FORMAT_VERSION = 1
STALE_AGE_S = 24 * 3600  # a temporary of another machine (or without owner) this old is stale
_OWNER = ".owner.json"  # pid and host of the process writing a temporary store folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _is_stale(path: Path, max_age_s: float) -> bool:
    try:
        owner = json.loads((path / _OWNER).read_text())
        if owner.get("host") == socket.gethostname() and owner.get("pid") != os.getpid():
            return not _pid_alive(int(owner["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return time.time() - path.stat().st_mtime > max_age_s
    except OSError:
        return False


def remove_stale_temporaries(folder: str | os.PathLike, name: str, *,
                             max_age_s: float = STALE_AGE_S) -> list[Path]:
    """Remove the temporary folders that killed writers of store ``name`` left in ``folder``.

    Only ours, by name pattern: ``.<name>.XXXXXXXX`` (a store being written) and
    ``.<name>.old`` (a replaced store). One is stale when the process that wrote it (recorded
    in it, on this machine) is gone, or, without that record or from another machine, when it
    is older than ``max_age_s``. Returns the removed paths.
    """
    folder = Path(folder)
    pattern = re.compile(rf"^\.{re.escape(name)}\.([a-z0-9_]{{8}}|old)$")
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.is_dir() and pattern.match(p.name) and _is_stale(p, max_age_s):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.warning("removed %s, left by an interrupted store write", p)
    return removed


class WindowStoreWriter:
    """Stream windows into a new store; :meth:`close` publishes it atomically.

    Use as a context manager: an exception inside the block discards the partial store.
    """

    def __init__(self, root: str | os.PathLike, ch_names: Sequence[str], sfreq: float,
                 n_times: int, *, dataset: str, label_names: dict[int, str] | None = None,
                 provenance: dict[str, Any] | None = None, overwrite: bool = False):
        self.root = Path(root)
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"WindowStore {self.root} already exists; pass overwrite=True "
                                  "to replace it.")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root.parent, self.root.name)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        atomic_write_json(self._tmp / _OWNER, {"pid": os.getpid(), "host": socket.gethostname()})
        self._f = open(self._tmp / "windows.f32", "wb")
        self.ch_names = list(ch_names)
        self.sfreq = float(sfreq)
        self.n_times = int(n_times)
        self.meta = {"dataset": dataset, "label_names": {str(k): v for k, v in
                                                         (label_names or {}).items()},
                     "provenance": provenance or {}}
        self._rows: list[pd.DataFrame] = []
        self._n = 0

    def add(self, windows: np.ndarray, rows: pd.DataFrame) -> None:
        """Append ``windows`` (n, C, T) with their index ``rows`` (n rows)."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        expect = (len(self.ch_names), self.n_times)
        if windows.ndim != 3 or windows.shape[1:] != expect:
            raise ValueError(f"WindowStore {self.root}: windows must have shape (n, {expect[0]}, "
                             f"{expect[1]}), got {windows.shape}.")
        if len(rows) != len(windows):
            raise ValueError(f"WindowStore {self.root}: {len(rows)} index rows for "
                             f"{len(windows)} windows.")
        missing = [c for c in INDEX_COLUMNS if c not in rows.columns and c != "window_id"]
        if missing:
            raise ValueError(f"WindowStore {self.root}: index rows lack columns {missing}.")
        if not np.isfinite(windows).all():
            raise ValueError(f"WindowStore {self.root}: windows contain NaN or inf "
                             f"(recordings {sorted(set(rows['recording']))}).")
        rows = rows.copy()
        rows["window_id"] = np.arange(self._n, self._n + len(rows))
        self._rows.append(rows)
        self._f.write(windows.tobytes())
        self._n += len(windows)

    def close(self) -> WindowStore:
        """Finish the files and rename the folder into place; returns the opened store."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        index = (pd.concat(self._rows, ignore_index=True) if self._rows
                 else pd.DataFrame(columns=list(INDEX_COLUMNS)))
        extra = [c for c in index.columns if c not in INDEX_COLUMNS]
        index = index[list(INDEX_COLUMNS) + extra]
        index.to_csv(self._tmp / "index.csv", index=False)
        meta = {**self.meta, "format_version": FORMAT_VERSION, "ch_names": self.ch_names,
                "sfreq": self.sfreq, "n_times": self.n_times, "n_windows": self._n,
                "n_channels": len(self.ch_names), "dtype": "float32"}
        atomic_write_json(self._tmp / "meta.json", meta)
        (self._tmp / _OWNER).unlink(missing_ok=True)
        if self.root.exists():
            old = self.root.with_name(f".{self.root.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.root, old)
            os.replace(self._tmp, self.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.root)
        log.info("wrote WindowStore %s: %d windows x %d channels x %d samples", self.root,
                 self._n, len(self.ch_names), self.n_times)
        return WindowStore(self.root)

    def abort(self) -> None:
        """Discard the partial store."""
        if not self._f.closed:
            self._f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> WindowStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._f.closed:
            self.close()


class WindowStore:
    """A read-only, memory-mapped store of fixed-length windows (see module docstring).

    Attributes
    ----------
    windows : np.memmap, shape (N, C, T), float32
    index : DataFrame, one row per window
    meta : dict
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.root} is not a WindowStore (no meta.json).")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        shape = (self.meta["n_windows"], self.meta["n_channels"], self.meta["n_times"])
        data_path = self.root / "windows.f32"
        expected = int(np.prod(shape)) * 4
        actual = data_path.stat().st_size if data_path.exists() else -1
        if actual != expected:
            raise ValueError(f"{data_path}: expected {expected} bytes for windows of shape "
                             f"{shape}, found {actual}; the store is corrupt, rebuild it.")
        # A plain ndarray view of the read-only memory map (numpy's memmap subclass makes
        # fancy indexing an order of magnitude slower).
        self.windows = (np.memmap(data_path, dtype=np.float32, mode="r", shape=shape)
                        .view(np.ndarray) if shape[0] else np.zeros(shape, np.float32))
        self.index = pd.read_csv(self.root / "index.csv",
                                 dtype={c: str for c in _STR_COLUMNS})
        if len(self.index) != shape[0]:
            raise ValueError(f"{self.root}: index.csv has {len(self.index)} rows for "
                             f"{shape[0]} windows.")

    # ---------------------------------------------------------------- writing
    @classmethod
    def writer(cls, root: str | os.PathLike, ch_names: Sequence[str], sfreq: float,
               n_times: int, **kw: Any) -> WindowStoreWriter:
        """A :class:`WindowStoreWriter` for a new store at ``root``."""
        return WindowStoreWriter(root, ch_names, sfreq, n_times, **kw)

    @classmethod
    def from_arrays(cls, root: str | os.PathLike, windows: np.ndarray, index: pd.DataFrame,
                    ch_names: Sequence[str], sfreq: float, **kw: Any) -> WindowStore:
        """Write a store from in-memory arrays in one go."""
        with cls.writer(root, ch_names, sfreq, windows.shape[-1], **kw) as w:
            w.add(windows, index)
            return w.close()

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        return int(self.meta["n_windows"])

    def __repr__(self) -> str:
        return (f"WindowStore({str(self.root)!r}: {len(self)} windows, "
                f"{self.meta['n_channels']} ch x {self.n_times} samples @ {self.sfreq:g} Hz)")

    @property
    def ch_names(self) -> list[str]:
        return list(self.meta["ch_names"])

    @property
    def sfreq(self) -> float:
        return float(self.meta["sfreq"])

    @property
    def n_times(self) -> int:
        return int(self.meta["n_times"])

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta.get("label_names", {}).items()}

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(np.int64)

    @property
    def n_classes(self) -> int:
        names = self.label_names
        lab = self.labels
        return len(names) if names else int(lab[lab >= 0].max() + 1 if (lab >= 0).any() else 0)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Windows at ``indices`` as one (n, C, T) array (one ``np.take`` on the memory map).

        Sorted indices read the file sequentially; the datasets sort each batch first.
        """
        return np.take(self.windows, np.asarray(indices, dtype=np.int64), axis=0)

    def subset_index(self, **equals: Any) -> np.ndarray:
        """Window ids whose index columns equal the given values (``subject="3"``)."""
        mask = np.ones(len(self), bool)
        for col, val in equals.items():
            mask &= (self.index[col] == val).to_numpy()
        return np.flatnonzero(mask)


def subset_store(store: WindowStore, keep: Sequence[int], tag: str,
                 provenance: dict | None = None) -> WindowStore:
    """A store of the windows ``keep`` (sorted ids) of ``store``, written once beside it as
    ``<store folder>-<tag>`` and found there afterwards (a data fraction, the training subjects
    of a fold). ``provenance`` says what the subset is; the parent's is kept under ``parent``.
    """
    root = store.root.parent / f"{store.root.name}-{tag}"
    if (root / "meta.json").exists():
        return WindowStore(root)
    keep = np.asarray(keep, dtype=np.int64)
    if not len(keep):
        raise ValueError(f"Invalid value for the 'keep' parameter: no window of {store} kept.")
    index = store.index.iloc[keep].reset_index(drop=True)
    prov = {"subset_of": store.root.name, **(provenance or {}),
            "parent": store.meta.get("provenance", {})}
    return WindowStore.from_arrays(root, store.get(keep), index, store.ch_names, store.sfreq,
                                   dataset=store.dataset, label_names=store.label_names,
                                   provenance=prov, overwrite=True)


def build_store(recordings: Iterable, root: str | os.PathLike, *, window_s: float,
                overlap_s: float = 0.0, within_events: bool = True, scale: str | None = None,
                provenance: dict[str, Any] | None = None, overwrite: bool = False,
                ch_names: Sequence[str] | None = None, reject_ptp: float | None = None,
                sfreq: float | None = None, channel_policy: str = "reorder") -> WindowStore:
    """Window ``recordings`` (one layout and rate) and write them to a new store.

    The windowing path of :func:`workbench.data.preprocess.run_pipeline`
    (:class:`workbench.data.assemble.StoreAssembler`) with recordings as they are.

    Parameters
    ----------
    recordings : iterable of Recording
        Their EEG channels are put in the store's order (the same set in another order is
        reordered); a recording at another rate (beyond 0.1 %) without ``sfreq``, or with other
        channels than ``channel_policy`` allows, raises
        :class:`~workbench.data.assemble.LayoutError` (a ``ValueError``) naming the recording,
        and nothing is written.
    window_s, overlap_s : float
        Window length and overlap in seconds.
    within_events : bool
        Cut windows inside labelled events (trials); otherwise over the whole recording with
        the recording-level label.
    scale : str, optional
        Amplitude scaling, see :func:`workbench.data.windowing.scale_windows`.
    ch_names : sequence of str, optional
        The store's channel layout (default: the first recording's EEG channels).
    reject_ptp : float, optional
        Drop windows with a larger peak-to-peak amplitude (volts).
    sfreq : float, optional
        Resample every recording to this rate (polyphase, :meth:`Recording.resample`).
    channel_policy : {"reorder", "subset", "interpolate"}
        See :class:`~workbench.data.assemble.StoreAssembler`.
    """
    from .assemble import StoreAssembler

    asm = StoreAssembler(root, window_s=window_s, overlap_s=overlap_s,
                         window_mode="events" if within_events else "fixed", scale=scale,
                         reject_ptp=reject_ptp, ch_names=ch_names, provenance=provenance,
                         overwrite=overwrite, sfreq=sfreq, channel_policy=channel_policy)
    try:
        for rec in recordings:
            asm.add(rec)
        store = asm.close()
    except BaseException:
        asm.abort()
        raise
    if store is None:
        raise ValueError(f"build_store({root}): no recordings given.")
    return store
