"""Cut Recordings into fixed-length windows and scale their amplitudes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..utils import check_option, check_positive, get_logger
from .recording import Recording

log = get_logger("windowing")

SCALINGS = (None, "microvolts", "percentile95", "minmax")


def check_finite_windows(x: np.ndarray, name: str = "X",
                         ch_names: list[str] | None = None) -> None:
    """Raise ``ValueError`` naming the first windows and channels of ``x`` (n, C, ...) that
    hold NaN or inf samples."""
    finite = np.isfinite(x)
    if finite.all():
        return
    bad = ~finite.reshape(finite.shape[0], finite.shape[1], -1).all(axis=-1)  # (n, C)
    wins, chans = np.nonzero(bad)
    where = [f"window {w} channel {ch_names[c] if ch_names else c}"
             for w, c in zip(wins[:5], chans[:5])]
    more = f" and {len(wins) - 5} more" if len(wins) > 5 else ""
    raise ValueError(f"Invalid value for the '{name}' parameter: NaN or inf samples in "
                     f"{', '.join(where)}{more} ({int((~finite).sum())} values); clean or drop "
                     "them first.")


def window_starts(n_times: int, win: int, stride: int) -> np.ndarray:
    """Start samples of every full window of ``win`` samples every ``stride`` samples."""
    if n_times < win:
        return np.zeros(0, np.int64)
    return np.arange(0, n_times - win + 1, stride, dtype=np.int64)


def scale_windows(x: np.ndarray, scale: str | None) -> np.ndarray:
    """Amplitude scaling of windows (n, C, T) in volts.

    ``microvolts`` multiplies by 1e6; ``percentile95`` divides each channel of each window by
    the 95th percentile of its absolute value (EEGM2); ``minmax`` maps each channel of each
    window to [-1, 1] (STELAR).
    """
    check_option("scale", scale, SCALINGS)
    if scale is None:
        return x
    if scale == "microvolts":
        return x * np.float32(1e6)
    if scale == "percentile95":
        q = np.percentile(np.abs(x), 95, axis=-1, keepdims=True)
        return x / np.maximum(q, np.finfo(np.float32).tiny)
    lo = x.min(axis=-1, keepdims=True)
    hi = x.max(axis=-1, keepdims=True)
    return 2 * (x - lo) / np.maximum(hi - lo, np.finfo(np.float32).tiny) - 1


def events_outside(rec: Recording) -> int:
    """Number of labelled events that end after the recording (clipped or left out)."""
    if rec.events is None or not len(rec.events):
        return 0
    ev = rec.events[rec.events["label"] >= 0]
    end = ev["onset"].to_numpy(float) + ev["duration"].to_numpy(float)
    return int((end > rec.duration + 0.5 / rec.sfreq).sum())


def make_windows(rec: Recording, *, window_s: float, overlap_s: float = 0.0,
                 within_events: bool = True, scale: str | None = None
                 ) -> tuple[np.ndarray, pd.DataFrame]:
    """Fixed-length windows of the EEG channels of ``rec`` and their index rows.

    With ``within_events`` (and an events table) windows are cut inside each labelled event
    (trial) and carry its label and trial number; otherwise over the whole recording with
    ``rec.label`` (or -1). The ``trial`` column groups windows that share signal: splits keep a
    trial on one side. Events that end after the recording are clipped (those that start after
    it give no window), with a warning naming the recording.

    Returns
    -------
    windows : ndarray, shape (n, C, T), float32
    rows : DataFrame with dataset, subject, session, recording, trial, label, start, start_s

    Raises
    ------
    ValueError
        When the EEG channels hold NaN or inf samples (naming the recording and channels).
    """
    check_positive("window_s", window_s)
    check_positive("overlap_s", overlap_s, strict=False)
    if overlap_s >= window_s:
        raise ValueError(f"Invalid value for the 'overlap_s' parameter: must be smaller than "
                         f"window_s={window_s}, got {overlap_s}.")
    win = int(round(window_s * rec.sfreq))
    stride = max(1, win - int(round(overlap_s * rec.sfreq)))
    data = rec.data[rec.eeg_picks]
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        names = [rec.ch_names[i] for i in rec.eeg_picks[bad]]
        raise ValueError(f"{rec.meta.get('source', rec.key)}: NaN or inf samples in channels "
                         f"{names}; windows of non-finite data are refused (clean or drop them "
                         "first).")
    n_out = events_outside(rec)
    if n_out and within_events:
        log.warning("%s: %d labelled events end after the recording (%.3g s): clipped or left "
                    "out.", rec.key, n_out, rec.duration)
    segments: list[tuple[int, int, int, int]] = []  # (start, stop, label, trial)
    if within_events and rec.events is not None and len(rec.events):
        ev = rec.events[rec.events["label"] >= 0]
        for trial, (_, e) in enumerate(ev.iterrows()):
            a = int(round(e["onset"] * rec.sfreq))
            b = min(rec.n_times, a + int(round(e["duration"] * rec.sfreq)))
            segments.append((a, b, int(e["label"]), trial))
    else:
        lab = -1 if rec.label is None else int(rec.label)
        segments.append((0, rec.n_times, lab, 0))
    starts, labels, trials = [], [], []
    for a, b, lab, trial in segments:
        s = a + window_starts(b - a, win, stride)
        starts.append(s)
        labels.append(np.full(len(s), lab))
        trials.append(np.full(len(s), trial))
    starts_a = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    idx = starts_a[:, None] + np.arange(win)[None, :]  # (n, T)
    windows = np.ascontiguousarray(data[:, idx].transpose(1, 0, 2), dtype=np.float32)
    windows = scale_windows(windows, scale).astype(np.float32, copy=False)
    rows = pd.DataFrame({
        "dataset": rec.dataset, "subject": rec.subject, "session": rec.session,
        "recording": rec.recording,
        "trial": np.concatenate(trials).astype(np.int64) if trials else np.zeros(0, np.int64),
        "label": np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
        "start": starts_a, "start_s": starts_a / rec.sfreq,
    })
    return windows, rows
