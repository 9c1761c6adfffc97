"""Recordings -> one WindowStore: the one windowing path of the workbench.

:class:`StoreAssembler` takes recordings one at a time, checks that each fits the store's layout
(channels and rate), cuts its windows (:func:`workbench.data.windowing.make_windows`), drops
windows above a peak-to-peak threshold, scales them and appends them to a
:class:`~workbench.data.store.WindowStoreWriter`. Both :func:`workbench.data.store.build_store`
(recordings as they are) and :func:`workbench.data.preprocess.run_pipeline` (cleaned recordings)
go through it, so they follow the same rules:

* a store holds one rate: rates within :data:`RATE_RTOL` (0.1 %) of the store's are the same
  rate (a rate estimated from timestamps, 250.003 Hz, is 250 Hz); with ``sfreq`` set, every
  recording at another rate is resampled (:meth:`Recording.resample`); otherwise a recording at
  another rate raises :class:`LayoutError`;
* a store holds one channel layout (the EEG channels of the first recording, or ``ch_names``).
  ``channel_policy`` says what happens to a recording with other channels: ``"reorder"``
  (default) puts the same set of channels in the store's order and refuses another set;
  ``"subset"`` also drops channels the store does not hold (what the pipeline's
  ``"intersection"`` policy uses once it knows the channels common to every recording);
  ``"interpolate"`` also fills channels the recording lacks by spherical-spline interpolation
  from the montage positions. A recording that cannot fit raises :class:`LayoutError` naming
  the recording, the expected and the actual value and what to do;
* ``window_mode`` ``"events"`` cuts windows inside labelled events (trials) when the recording
  has an events table, ``"fixed"`` over the whole recording, ``"auto"`` inside events only when
  some event carries a label.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_option, get_logger
from .recording import Recording
from .store import WindowStore, WindowStoreWriter
from .windowing import events_outside, make_windows, scale_windows

log = get_logger("store")

WINDOW_MODES = ("auto", "fixed", "events")
CHANNEL_POLICIES = ("reorder", "subset", "interpolate")
RATE_RTOL = 1e-3  # relative: rates closer than this are one rate (clock drift, estimates)


def same_rate(a: float, b: float) -> bool:
    """Whether two sampling rates are the same within :data:`RATE_RTOL`."""
    return abs(a - b) <= RATE_RTOL * max(a, b)


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


@dataclass
class Added:
    """What :meth:`StoreAssembler.add` did with one recording."""

    windows: np.ndarray  # (n, C, T) volts, before scaling
    rows: pd.DataFrame
    n_rejected: int = 0
    notes: list[str] = field(default_factory=list)


def interpolate_channels(rec: Recording, ch_names: Sequence[str],
                         montage: str = "colin27_1005") -> Recording:
    """``rec`` with the EEG channels ``ch_names``: those it lacks interpolated (spherical
    splines from the template positions of ``montage``), in that order, others dropped."""
    import mne

    from ..channels import make_montage, normalize_channel_name

    names = [rec.ch_names[i] for i in rec.eeg_picks]
    target = list(ch_names)
    have = [n for n in target if n in names]
    if len(have) < 3:
        raise LayoutError(f"{rec.key}: only {len(have)} of the store's channels {target} are "
                          "present; interpolation needs at least 3.", "channels")
    pos = {n: i for i, n in zip(rec.eeg_picks, names)}
    data = np.zeros((len(target), rec.n_times))  # (C_target, T)
    for i, n in enumerate(target):
        if n in pos:
            data[i] = rec.data[pos[n]]
    raw = mne.io.RawArray(data, mne.create_info(target, rec.sfreq, "eeg", verbose="error"),
                          verbose="error")
    try:
        mont = make_montage(target, montage)
    except ValueError as e:
        raise LayoutError(f"{rec.key}: cannot interpolate channels without positions: {e}",
                          "channels") from e
    mont.rename_channels({normalize_channel_name(n) or n: n for n in target})
    raw.set_montage(mont, verbose="error")
    raw.info["bads"] = [n for n in target if n not in pos]
    raw.interpolate_bads(reset_bads=True, origin="auto", verbose="error")
    return rec.replace(data=raw.get_data(), ch_names=target, ch_types=["eeg"] * len(target))


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
    sfreq : float, optional
        The store's rate; recordings at another rate are resampled. Default: the first
        recording's rate, and another rate is a :class:`LayoutError`.
    channel_policy : {"reorder", "subset", "interpolate"}
        See the module docstring.
    montage : str
        Template positions for ``channel_policy="interpolate"``.

    References
    ----------
    Perrin F., Pernier J., Bertrand O., Echallier J. F. (1989). Spherical splines for scalp
    potential and current density mapping. Electroencephalogr. Clin. Neurophysiol. 72(2).
    """

    def __init__(self, root: str | os.PathLike, *, window_s: float, overlap_s: float = 0.0,
                 window_mode: str = "events", scale: str | None = None,
                 reject_ptp: float | None = None, ch_names: Sequence[str] | None = None,
                 provenance: dict[str, Any] | None = None, overwrite: bool = False,
                 sfreq: float | None = None, channel_policy: str = "reorder",
                 montage: str = "colin27_1005"):
        check_option("window_mode", window_mode, WINDOW_MODES)
        check_option("channel_policy", channel_policy, CHANNEL_POLICIES)
        self.target_sfreq, self.channel_policy, self.montage = sfreq, channel_policy, montage
        self.root, self.window_s, self.overlap_s = root, window_s, overlap_s
        self.window_mode, self.scale, self.reject_ptp = window_mode, scale, reject_ptp
        self.ch_names = None if ch_names is None else list(ch_names)
        self.provenance = dict(provenance or {})
        self.overwrite = overwrite
        self.writer: WindowStoreWriter | None = None

    @property
    def sfreq(self) -> float | None:
        """The store's rate (None before the first recording without ``sfreq``)."""
        return self.writer.sfreq if self.writer is not None else self.target_sfreq

    def conform(self, rec: Recording) -> tuple[Recording, list[str]]:
        """``rec`` brought to the store's rate and channel layout, and notes on what changed.

        Raises :class:`LayoutError` when it cannot be (see the module docstring).
        """
        notes: list[str] = []
        if self.sfreq is not None and not same_rate(rec.sfreq, self.sfreq):
            if self.target_sfreq is None:
                raise LayoutError(
                    f"{rec.key}: sampling rate {rec.sfreq:g} Hz differs from the store's "
                    f"{self.sfreq:g} Hz; a store holds one rate: set a target rate (recipe "
                    "'resample', `workbench preprocess --resample HZ`, load_store(sfreq=...)), "
                    "or build one store per rate.", "rate")
            notes.append(f"resampled {rec.sfreq:g} -> {self.target_sfreq:g} Hz")
            rec = rec.resample(self.target_sfreq)
        names = [rec.ch_names[i] for i in rec.eeg_picks]
        if self.ch_names is None or names == self.ch_names:
            return rec, notes
        missing = [n for n in self.ch_names if n not in names]
        extra = [n for n in names if n not in self.ch_names]
        refuse_extra = bool(extra) and self.channel_policy == "reorder"
        refuse_missing = bool(missing) and self.channel_policy != "interpolate"
        if refuse_extra or refuse_missing:
            raise LayoutError(
                f"{rec.key}: channels differ from the store's {len(self.ch_names)}: missing "
                f"{missing}, not in the store {extra}; a store holds one channel layout "
                f"(channel_policy={self.channel_policy!r}; 'intersection' keeps the channels "
                "common to every recording, 'interpolate' fills missing ones from the montage).",
                "channels")
        if missing:
            rec = interpolate_channels(rec, self.ch_names, self.montage)
            notes.append(f"interpolated missing channels {missing} ({self.montage})")
        if extra:
            notes.append(f"dropped channels not in the store: {extra}")
        if not missing and not extra:
            notes.append("channels reordered to the store's order")
        pos = {n: i for i, n in enumerate(rec.ch_names)}
        keep = [pos[n] for n in self.ch_names]
        rec = rec.replace(data=rec.data[keep], ch_names=list(self.ch_names),
                          ch_types=["eeg"] * len(keep))
        return rec, notes

    def check(self, rec: Recording) -> None:
        """Raise :class:`LayoutError` unless ``rec`` can join the store."""
        self.conform(rec)

    def add(self, rec: Recording) -> Added:
        """Conform ``rec`` to the store's layout and window it into the store.

        Returns
        -------
        Added
            The kept windows in volts before scaling (for exports such as MNE epochs), their
            index rows, the number rejected by ``reject_ptp`` and notes on what was changed.
        """
        rec, notes = self.conform(rec)
        n_out = events_outside(rec)
        if n_out:
            notes.append(f"{n_out} labelled events end after the recording "
                         f"({rec.duration:g} s): clipped or left out")
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
        return Added(win, rows, n_rejected, notes)

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
