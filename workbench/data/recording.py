"""The :class:`Recording`: one continuous multichannel EEG recording and its labels.

It is the one currency between readers (and the synthetic corpus) and preprocessing: readers
build Recordings and do no preprocessing; the pipeline consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EVENT_COLUMNS = ("onset", "duration", "label", "description")


def make_events(onset, duration, label, description=None) -> pd.DataFrame:
    """Build an events table: ``onset``/``duration`` in seconds, integer ``label`` (-1: none)."""
    onset = np.asarray(onset, float)
    n = len(onset)
    duration = np.broadcast_to(np.asarray(duration, float), (n,)).copy()
    label = np.broadcast_to(np.asarray(label, np.int64), (n,)).copy()
    if description is None:
        description = [str(v) for v in label]
    return pd.DataFrame({"onset": onset, "duration": duration, "label": label,
                         "description": list(description)})


@dataclass
class Recording:
    """A continuous recording.

    Parameters
    ----------
    data : ndarray, shape (C, T)
        Samples in volts (float32 after construction).
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str
        Channel names; EEG channels should be canonical 10-05 names
        (see :func:`workbench.channels.normalize_channel_name`).
    dataset, subject, session, recording : str
        Provenance; ``recording`` identifies the file or run within a session.
    ch_types : list of str, optional
        MNE channel types (``eeg``, ``eog``, ``ecg``, ``emg``, ``misc``); all ``eeg`` by default.
    events : DataFrame, optional
        Labelled segments with columns ``onset`` (s), ``duration`` (s), ``label`` (int; -1 for
        unlabelled), ``description`` (str). Trials, stimuli and sleep epochs are events.
    label : int, optional
        A recording-level label (e.g. eegmat rest = 0 / arithmetic = 1) when the whole recording
        has one class.
    label_names : dict, optional
        Class index -> human-readable name.
    meta : dict
        Anything else a reader knows (source path, original units, subject info).
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    dataset: str
    subject: str
    session: str = "0"
    recording: str = "0"
    ch_types: list[str] | None = None
    events: pd.DataFrame | None = None
    label: int | None = None
    label_names: dict[int, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.meta.get("source", f"{self.dataset}/{self.subject}/{self.session}/{self.recording}")
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"{src}: Recording.data must be 2-D (channels, samples), got shape "
                             f"{self.data.shape}.")
        self.ch_names = [str(c) for c in self.ch_names]
        if len(self.ch_names) != self.data.shape[0]:
            raise ValueError(f"{src}: {len(self.ch_names)} channel names for "
                             f"{self.data.shape[0]} data rows.")
        if self.ch_types is None:
            self.ch_types = ["eeg"] * len(self.ch_names)
        if len(self.ch_types) != len(self.ch_names):
            raise ValueError(f"{src}: {len(self.ch_types)} channel types for "
                             f"{len(self.ch_names)} channels.")
        if not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise ValueError(f"{src}: sampling rate must be a positive number, got {self.sfreq!r}.")
        self.sfreq = float(self.sfreq)
        self.subject, self.session, self.recording = (str(self.subject), str(self.session),
                                                      str(self.recording))
        if self.events is not None:
            missing = [c for c in EVENT_COLUMNS if c not in self.events.columns]
            if missing:
                raise ValueError(f"{src}: events table lacks columns {missing}.")

    # ------------------------------------------------------------------ properties
    @property
    def n_times(self) -> int:
        return self.data.shape[1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_times / self.sfreq

    @property
    def eeg_picks(self) -> np.ndarray:
        """Indices of EEG channels (EOG/ECG/misc are kept out)."""
        return np.array([i for i, t in enumerate(self.ch_types) if t == "eeg"], dtype=np.int64)

    @property
    def key(self) -> str:
        """A unique, file-system-safe id: ``dataset/subject/session/recording``."""
        return "/".join([self.dataset, self.subject, self.session, self.recording])

    # ------------------------------------------------------------------ checks
    def check_finite(self) -> None:
        """Raise ``ValueError`` naming the channels that hold NaN or inf samples."""
        bad = ~np.isfinite(self.data)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            names = [self.ch_names[i] for i in rows]
            raise ValueError(f"{self.meta.get('source', self.key)}: NaN or inf samples in "
                             f"channels {names} ({int(bad.sum())} samples).")

    # ------------------------------------------------------------------ MNE
    def to_raw(self):
        """An ``mne.io.RawArray`` with the same channels, types and events as annotations."""
        import mne

        info = mne.create_info(self.ch_names, self.sfreq, self.ch_types, verbose="error")
        raw = mne.io.RawArray(self.data.astype(np.float64), info, verbose="error")
        if self.events is not None and len(self.events):
            raw.set_annotations(mne.Annotations(self.events["onset"].to_numpy(),
                                                self.events["duration"].to_numpy(),
                                                [f"{d}|{lab}" for d, lab in
                                                 zip(self.events["description"],
                                                     self.events["label"])]))
        return raw

    def resample(self, sfreq: float, *, max_denominator: int = 1000) -> Recording:
        """A copy at ``sfreq`` Hz (polyphase FIR resampling, events unchanged in seconds).

        The ratio ``sfreq / self.sfreq`` is approximated by a fraction ``up / down`` with
        ``down <= max_denominator`` (128 -> 200 Hz is 25 / 16, exact); the recording's rate is
        then ``self.sfreq * up / down``. ``scipy.signal.resample_poly`` low-passes with a Kaiser
        window FIR before decimating, so downsampling does not alias.
        """
        from fractions import Fraction

        from scipy.signal import resample_poly

        if not np.isfinite(sfreq) or sfreq <= 0:
            raise ValueError(f"Invalid value for the 'sfreq' parameter: expected a positive "
                             f"rate in Hz, got {sfreq!r}.")
        ratio = Fraction(float(sfreq) / self.sfreq).limit_denominator(max_denominator)
        if ratio == 1:
            return self.replace()
        data = resample_poly(self.data.astype(np.float64), ratio.numerator, ratio.denominator,
                             axis=1)  # (C, T * up / down)
        meta = {**self.meta, "resampled_from": self.sfreq}
        return self.replace(data=data, sfreq=self.sfreq * ratio.numerator / ratio.denominator,
                            meta=meta)

    def replace(self, **changes: Any) -> Recording:
        """A copy with some fields replaced (data, sfreq, ch_names ...)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields["meta"] = dict(self.meta)
        fields.update(changes)
        return Recording(**fields)
