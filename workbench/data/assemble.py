"""Recordings -> one WindowStore: the one windowing path of the workbench.

:class:`StoreAssembler` takes recordings one at a time, checks that each fits the store's layout
(channels and rate), cuts its windows (:func:`workbench.data.windowing.make_windows`), drops
windows above a peak-to-peak threshold, scales them and appends them to a
:class:`~workbench.data.store.WindowStoreWriter`. Both :func:`workbench.data.store.build_store`
(recordings as they are) and :func:`workbench.data.preprocess.run_pipeline` (cleaned recordings)
go through it, so they follow the same rules:

* a store holds one channel layout (the EEG channels of the first recording, or ``ch_names``)
  and one rate; a recording that does not fit raises :class:`LayoutError` naming the recording,
  the expected and the actual value and what to do;
* ``window_mode`` ``"events"`` cuts windows inside labelled events (trials) when the recording
  has an events table, ``"fixed"`` over the whole recording, ``"auto"`` inside events only when
  some event carries a label.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, get_logger
from .recording import Recording
from .store import WindowStore, WindowStoreWriter
from .windowing import make_windows, scale_windows

log = get_logger("store")

WINDOW_MODES = ("auto", "fixed", "events")


class LayoutError(ValueError):
    """A recording whose channels or rate cannot join the store (the message names it).

    ``kind`` is ``"channels"`` or ``"rate"``.
    """

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def within_events(rec: Recording, mode: str) -> bool:
    """Whether ``rec`` is windowed inside its events under ``window_mode=mode``."""
    check_option("window_mode", mode, WINDOW_MODES)
    if mode == "fixed":
        return False
    if mode == "events":
        return True
    return rec.events is not None and bool((rec.events["label"] >= 0).any())


class StoreAssembler:
    """Window recordings into a new store, one recording at a time.

    Parameters
    ----------
    root : path
        The store folder (written atomically on :meth:`close`).
    window_s, overlap_s : float
        Window length and overlap in seconds.
    window_mode : {"events", "fixed", "auto"}
        See the module docstring.
    scale : str, optional
        Amplitude scaling (:func:`workbench.data.windowing.scale_windows`), applied after the
        peak-to-peak rejection (which is in volts).
    reject_ptp : float, optional
        Windows with a larger peak-to-peak amplitude (volts, any channel) are dropped.
    ch_names : sequence of str, optional
        The store's channel layout; default: the EEG channels of the first recording.
    provenance : dict, optional
        Stored in ``meta.json`` (may be replaced through :attr:`provenance` before closing).
    overwrite : bool
        Replace an existing store at ``root``.
    """

    def __init__(self, root: str | os.PathLike, *, window_s: float, overlap_s: float = 0.0,
                 window_mode: str = "events", scale: str | None = None,
                 reject_ptp: float | None = None, ch_names: Sequence[str] | None = None,
                 provenance: dict[str, Any] | None = None, overwrite: bool = False):
        check_option("window_mode", window_mode, WINDOW_MODES)
        self.root, self.window_s, self.overlap_s = root, window_s, overlap_s
        self.window_mode, self.scale, self.reject_ptp = window_mode, scale, reject_ptp
        self.ch_names = None if ch_names is None else list(ch_names)
        self.provenance = dict(provenance or {})
        self.overwrite = overwrite
        self.writer: WindowStoreWriter | None = None

    @property
    def sfreq(self) -> float | None:
        """The store's rate (None before the first recording)."""
        return None if self.writer is None else self.writer.sfreq

    def check(self, rec: Recording) -> None:
        """Raise :class:`LayoutError` unless ``rec`` fits the store's channels and rate."""
        if self.writer is not None and abs(rec.sfreq - self.writer.sfreq) > 1e-6:
            raise LayoutError(
                f"{rec.key}: sampling rate {rec.sfreq:g} Hz differs from the store's "
                f"{self.writer.sfreq:g} Hz; a store holds one rate: resample first (recipe "
                "'resample'), or build one store per rate.", "rate")
        names = [rec.ch_names[i] for i in rec.eeg_picks]
        if self.ch_names is not None and names != self.ch_names:
            raise LayoutError(f"{rec.key}: channels {names} differ from the store's "
                              f"{self.ch_names}; a store holds one channel layout.", "channels")

    def add(self, rec: Recording) -> tuple[np.ndarray, pd.DataFrame, int]:
        """Window ``rec`` into the store.

        Returns
        -------
        windows : ndarray, shape (n, C, T)
            The kept windows in volts, before scaling (for exports such as MNE epochs).
        rows : DataFrame
            Their index rows.
        n_rejected : int
            Windows dropped by ``reject_ptp``.
        """
        self.check(rec)
        win, rows = make_windows(rec, window_s=self.window_s, overlap_s=self.overlap_s,
                                 within_events=within_events(rec, self.window_mode), scale=None)
        n_rejected = 0
        if self.reject_ptp is not None and len(win):
            keep = np.ptp(win, axis=-1).max(axis=-1) <= self.reject_ptp  # (n,)
            win, rows = win[keep], rows[keep].reset_index(drop=True)
            n_rejected = int((~keep).sum())
        if self.writer is None:
            self.ch_names = [rec.ch_names[i] for i in rec.eeg_picks]
            self.writer = WindowStore.writer(self.root, self.ch_names, rec.sfreq, win.shape[-1],
                                             dataset=rec.dataset, label_names=rec.label_names,
                                             overwrite=self.overwrite)
        self.writer.add(scale_windows(win, self.scale).astype(np.float32, copy=False), rows)
        return win, rows, n_rejected

    def close(self) -> WindowStore | None:
        """Publish the store (None when no recording was added)."""
        if self.writer is None:
            return None
        self.writer.meta["provenance"] = self.provenance
        return self.writer.close()

    def abort(self) -> None:
        """Discard the partial store."""
        if self.writer is not None:
            self.writer.abort()
