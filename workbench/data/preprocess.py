"""The MNE preprocessing pipeline: Recording -> cleaned Recording -> windows in a WindowStore.

One recording goes through :func:`preprocess_recording`:

1. finite check (NaN/inf is an error naming the recording and the channels);
2. channel types (EOG/ECG/misc kept out of the EEG picks; EEG channels without a 10-05
   position are set to ``misc``), montage from :func:`workbench.channels.make_montage`;
3. bad EEG channels: flat (std below ``flat_std`` after band-pass) or of extreme variance
   (std more than ``bad_ratio`` times above or below the median), interpolated (spherical
   splines);
4. average reference; notch and band-pass filters;
5. ICA (picard with extended infomax-equivalent settings by default, or extended infomax)
   fitted on a copy band-passed as ICLabel expects (1-100 Hz, capped below Nyquist); every
   component whose top ICLabel class is not in ``keep_classes`` (and whose probability reaches
   ``exclude_threshold``) is removed; labels and all seven class probabilities are reported;
6. resampling, optional bipolar derivation; EEG channels only are returned, events unchanged.

:func:`run_pipeline` maps it over many recordings (in parallel with joblib, ``n_jobs``), caches
each cleaned recording under a hash of its content (or file bytes) and of the signal-shaping part
of the config (written atomically: an interrupted run resumes where it stopped, a second
identical run is served from the cache), windows the results (fixed length with overlap, or
inside labelled events), scales them and writes one :class:`~workbench.data.store.WindowStore`
with the config and the per-recording reports in its provenance.

Rates: the One Model for All recipe keeps native rates (128 Hz DEAP/DREAMER, 200 Hz SEED), and a
store holds one rate, so run the pipeline once per dataset (one store per rate); recipes with
``resample`` set bring every recording to that rate.

References
----------
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
Ablin P., Cardoso J.-F., Gramfort A. (2018). Faster independent component analysis by
preconditioning with Hessian approximations. IEEE Trans. Signal Process. 66(15). (picard)
Lee T.-W., Girolami M., Sejnowski T. J. (1999). Independent component analysis using an extended
infomax algorithm for mixed subgaussian and supergaussian sources. Neural Comput. 11(2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import typing
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..channels import (
    BIPOLAR_16,
    bipolar_derivation,
    channel_positions,
    make_montage,
    normalize_channel_name,
)
from ..config import from_dict, to_dict
from ..utils import (
    atomic_path,
    atomic_write_json,
    check_option,
    check_positive,
    file_digest,
    get_logger,
    stable_hash,
)
from .recording import Recording
from .store import WindowStore, WindowStoreWriter
from .windowing import SCALINGS, make_windows, scale_windows

log = get_logger("preprocess")

PIPELINE_VERSION = 1  # bump when a change alters the cleaned signals: invalidates caches
ICLABEL_CLASSES = ("brain", "muscle artifact", "eye blink", "heart beat", "line noise",
                   "channel noise", "other")
# Fields that only shape windows: changing them reuses the cached cleaned recordings.
WINDOW_FIELDS = ("name", "window_s", "overlap_s", "window_mode", "scale", "reject_ptp")


# ============================================================================ configuration
@dataclass
class PreprocessConfig:
    """Every knob of the pipeline; validated by :func:`workbench.config.from_dict`.

    Frequencies in Hz, amplitudes in volts, durations in seconds.
    """

    name: str = "custom"
    # channels
    channel_types: dict[str, str] = field(default_factory=dict)  # name -> eeg/eog/ecg/emg/misc
    montage: str | None = "colin27_1005"  # None: no positions (no interpolation, no ICLabel)
    # bad channels
    detect_bads: bool = True
    flat_std: float = 1e-7       # V; std (after band-pass) below this = flat
    bad_ratio: float = 10.0      # std > ratio x median (or < median / ratio) = extreme variance
    max_bad_frac: float = 0.3    # more bad EEG channels than this fraction: error naming them
    interpolate: bool = True     # interpolate bads (spherical splines); else drop them
    # reference and filters
    reference: typing.Literal["average", "none"] = "average"
    l_freq: float | None = 1.0
    h_freq: float | None = 49.0
    notch: list[float] = field(default_factory=list)
    # ICA + ICLabel
    ica: bool = True
    ica_method: typing.Literal["picard", "infomax"] = "picard"
    ica_n_components: float | None = None  # None: the data rank; >= 1: a count; < 1: variance
    ica_fit_band: list[float] | None = field(default_factory=lambda: [1.0, 100.0])  # None: l/h
    ica_max_iter: int = 500
    ica_decim: int = 1
    keep_classes: list[str] = field(default_factory=lambda: ["brain"])
    exclude_threshold: float = 0.0  # a non-kept top class must reach this probability
    max_exclude_frac: float = 1.0   # cap on the share of components removed (most confident)
    # output
    resample: float | None = None   # Hz; None keeps the native rate
    bipolar: typing.Literal["none", "banana16"] = "none"
    window_s: float = 2.0
    overlap_s: float = 0.2
    window_mode: typing.Literal["auto", "fixed", "events"] = "auto"
    scale: str | None = "microvolts"  # None, microvolts, percentile95, minmax
    reject_ptp: float | None = None  # V; windows with a larger peak-to-peak are dropped
    seed: int = 42

    def __post_init__(self) -> None:
        check_option("scale", self.scale, SCALINGS)
        for t in self.channel_types.values():
            check_option("channel_types", t, ("eeg", "eog", "ecg", "emg", "misc", "stim"))
        for k in self.keep_classes:
            check_option("keep_classes", k, ICLABEL_CLASSES)
        for name in ("flat_std", "window_s", "ica_max_iter", "ica_decim"):
            check_positive(name, getattr(self, name))
        if self.bad_ratio <= 1:
            raise ValueError(f"Invalid value for the 'bad_ratio' parameter: expected > 1, got "
                             f"{self.bad_ratio!r}.")
        check_positive("overlap_s", self.overlap_s, strict=False)
        for name in ("max_bad_frac", "exclude_threshold", "max_exclude_frac"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"Invalid value for the '{name}' parameter: expected a number "
                                 f"in [0, 1], got {v!r}.")
        if self.overlap_s >= self.window_s:
            raise ValueError(f"Invalid value for the 'overlap_s' parameter: must be smaller than "
                             f"window_s={self.window_s}, got {self.overlap_s}.")
        for name in ("l_freq", "h_freq", "resample", "reject_ptp", "ica_n_components"):
            v = getattr(self, name)
            if v is not None:
                check_positive(name, v)
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ValueError(f"Invalid values for the 'l_freq'/'h_freq' parameters: l_freq must "
                             f"be below h_freq, got {self.l_freq} and {self.h_freq}.")
        for f in self.notch:
            check_positive("notch", f)
        if self.ica_fit_band is not None:
            b = list(self.ica_fit_band)
            if len(b) != 2 or not 0 < b[0] < b[1]:
                raise ValueError(f"Invalid value for the 'ica_fit_band' parameter: expected "
                                 f"[low, high] with 0 < low < high, got {b!r}.")
        if self.ica and self.montage is None:
            raise ValueError("Invalid value for the 'montage' parameter: ICA + ICLabel needs "
                             "electrode positions; set a montage or ica=False.")

    def signal_dict(self) -> dict[str, Any]:
        """The fields that shape the cleaned signal (the cache key of a recording)."""
        return {k: v for k, v in to_dict(self).items() if k not in WINDOW_FIELDS}


_OMFA = dict(name="omfa", l_freq=1.0, h_freq=49.0, reference="average", ica=True,
             keep_classes=["brain"], resample=None, window_s=2.0, overlap_s=0.2,
             scale="microvolts")
RECIPES: dict[str, dict[str, Any]] = {
    # One Model for All: average ref, 1-49 Hz, ICA + ICLabel (every non-brain component out),
    # 2 s windows with 0.2 s overlap, native rates. Scaling to microvolts: our default.
    "omfa": _OMFA,
    # STELAR: 0.3-75 Hz, notch at 60 Hz, 200 Hz, 30 s windows scaled to [-1, 1].
    "stelar": dict(name="stelar", l_freq=0.3, h_freq=75.0, notch=[60.0], ica=False,
                   resample=200.0, window_s=30.0, overlap_s=0.0, scale="minmax"),
    # Trace: 0.1-75 Hz, notch, 200 Hz, non-overlapping windows. The text lost the numbers of
    # the notch and the window: our defaults 50 Hz (LaBraM/CBraMod protocol) and 10 s.
    "trace": dict(name="trace", l_freq=0.1, h_freq=75.0, notch=[50.0], ica=False,
                  resample=200.0, window_s=10.0, overlap_s=0.0, scale="microvolts"),
    # EEGM2: 128 Hz, per-channel 95th-percentile scaling, 10 s windows; the band and the notch
    # are our defaults (the text says "band-pass filtered"); bipolar="banana16" for TUAB.
    "eegm2": dict(name="eegm2", l_freq=0.5, h_freq=50.0, notch=[60.0], ica=False,
                  resample=128.0, window_s=10.0, overlap_s=0.0, scale="percentile95"),
    # Fast and simple: average ref, 0.5-45 Hz, no ICA, native rate, 2 s windows.
    "minimal": dict(name="minimal", l_freq=0.5, h_freq=45.0, ica=False, window_s=2.0,
                    overlap_s=0.0, scale="microvolts"),
}


def get_recipe(name: str, **overrides: Any) -> PreprocessConfig:
    """The named recipe (see :data:`RECIPES`) with ``overrides``, validated.

    >>> get_recipe("omfa").h_freq
    49.0
    """
    check_option("recipe", name, RECIPES)
    return from_dict(PreprocessConfig, {**RECIPES[name], **overrides}, where=f"recipe {name!r}")


def as_config(cfg: PreprocessConfig | str | dict[str, Any]) -> PreprocessConfig:
    """A config from a config, a recipe name or a dict of fields (validated)."""
    if isinstance(cfg, PreprocessConfig):
        return cfg
    if isinstance(cfg, str):
        return get_recipe(cfg)
    if isinstance(cfg, dict):
        return from_dict(PreprocessConfig, cfg)
    raise TypeError(f"Invalid type for the 'cfg' parameter: expected PreprocessConfig, a recipe "
                    f"name {sorted(RECIPES)} or a dict, got {type(cfg).__name__}.")


# ============================================================================ one recording
@dataclass
class RecordingReport:
    """What happened to one recording (one row of ``PipelineResult.reports``)."""

    key: str
    dataset: str = ""
    subject: str = ""
    session: str = ""
    recording: str = ""
    source: str = ""
    sfreq_in: float = 0.0
    sfreq_out: float = 0.0
    duration_s: float = 0.0
    n_channels_in: int = 0
    n_eeg: int = 0
    non_eeg_channels: list[str] = field(default_factory=list)
    flat_channels: list[str] = field(default_factory=list)
    noisy_channels: list[str] = field(default_factory=list)
    bad_channels: list[str] = field(default_factory=list)
    bad_action: str = ""  # interpolated / dropped / ""
    ica_method: str = ""
    n_components: int = 0
    excluded: list[int] = field(default_factory=list)
    excluded_labels: list[str] = field(default_factory=list)
    ica_labels: list[dict[str, Any]] = field(default_factory=list)
    n_windows: int = 0
    n_rejected_windows: int = 0
    seconds: float = 0.0
    from_cache: bool = False
    cache_key: str = ""
    cache_item: int = 0  # index of this recording within its cache entry (a file -> several)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_row(self) -> dict[str, Any]:
        """A flat row: lists joined with ``;``, the ICA table left out (see ``ica``)."""
        d = self.to_dict()
        d.pop("ica_labels")
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = ";".join(str(x) for x in v)
        return d


def _source(rec: Recording) -> str:
    return str(rec.meta.get("source", rec.key))


def _clip_band(lo: float | None, hi: float | None, sfreq: float, notes: list[str],
               what: str) -> tuple[float | None, float | None]:
    """Drop a low-pass at or above 0.9 Nyquist (no room for its transition band)."""
    nyq = sfreq / 2
    if hi is not None and hi >= 0.9 * nyq:
        notes.append(f"{what}: low-pass {hi:g} Hz skipped (>= 0.9 x Nyquist {nyq:g} Hz)")
        hi = None
    if lo is not None and lo >= 0.9 * nyq:
        raise ValueError(f"{what}: high-pass {lo:g} Hz is above 0.9 x Nyquist ({nyq:g} Hz).")
    return lo, hi


def detect_bad_channels(data: np.ndarray, ch_names: list[str], *, flat_std: float = 1e-7,
                        bad_ratio: float = 10.0) -> tuple[list[str], list[str]]:
    """Flat and extreme-variance channels of band-passed EEG ``data`` (C, T) in volts.

    A channel is flat when its std is below ``flat_std``; among the others, a channel is noisy
    when its std is more than ``bad_ratio`` times the median std of those channels, or less
    than the median divided by ``bad_ratio``. The rule is deliberately coarse: occipital alpha
    or frontal blinks raise a channel's std a few-fold, and must not make it "bad".

    Returns
    -------
    flat, noisy : list of str
    """
    sd = data.std(axis=1)
    flat_mask = sd < flat_std
    flat = [ch_names[i] for i in np.flatnonzero(flat_mask)]
    noisy: list[str] = []
    live = np.flatnonzero(~flat_mask)
    if len(live) >= 3:
        dev = np.abs(np.log(sd[live] / np.median(sd[live])))
        noisy = [ch_names[live[i]] for i in np.flatnonzero(dev > np.log(bad_ratio))]
    return flat, noisy


def _eeg_positions(rec: Recording, types: list[str], montage: str | None,
                   notes: list[str]) -> list[str]:
    """Set EEG channels with no template position to ``misc`` (in ``types``), return names."""
    if montage is None:
        return [n for n, t in zip(rec.ch_names, types) if t == "eeg"]
    for i, (n, t) in enumerate(zip(rec.ch_names, types)):
        if t != "eeg":
            continue
        try:
            channel_positions([n], montage)
        except ValueError:
            types[i] = "misc"
            notes.append(f"channel {n!r} has no position in {montage}: kept out as misc")
    return [n for n, t in zip(rec.ch_names, types) if t == "eeg"]


def _n_components(cfg: PreprocessConfig, rank: int) -> int | float:
    if cfg.ica_n_components is None:
        return rank
    if cfg.ica_n_components >= 1:
        return min(int(cfg.ica_n_components), rank)
    return float(cfg.ica_n_components)


def _fit_ica(det, cfg: PreprocessConfig, rank: int):
    from mne.preprocessing import ICA

    if cfg.ica_method == "picard":  # ortho=False + extended=True: extended infomax's solution
        method, fit_params = "picard", {"ortho": False, "extended": True}
    else:
        method, fit_params = "infomax", {"extended": True}
    ica = ICA(n_components=_n_components(cfg, rank), method=method, fit_params=fit_params,
              max_iter=cfg.ica_max_iter, random_state=cfg.seed, verbose="warning")
    ica.fit(det, picks="eeg", decim=cfg.ica_decim if cfg.ica_decim > 1 else None,
            verbose="warning")
    return ica


def iclabel_table(det, ica, cfg: PreprocessConfig) -> pd.DataFrame:
    """ICLabel probabilities of every component and the exclusion decision.

    Columns: ``component``, ``label`` (top class), ``probability`` (of the top class), one
    column per ICLabel class, ``excluded``.
    """
    from mne_icalabel.iclabel import iclabel_label_components

    probs = np.asarray(iclabel_label_components(det, ica, inplace=False))  # (K, 7)
    top = probs.argmax(axis=1)
    table = pd.DataFrame(probs, columns=list(ICLABEL_CLASSES))
    table.insert(0, "component", np.arange(len(top)))
    table.insert(1, "label", [ICLABEL_CLASSES[k] for k in top])
    table.insert(2, "probability", probs[np.arange(len(top)), top])
    cand = ~table["label"].isin(cfg.keep_classes) & (table["probability"]
                                                    >= cfg.exclude_threshold)
    cap = int(np.floor(cfg.max_exclude_frac * len(table)))
    if cand.sum() > cap:  # keep the most confident non-kept components only
        order = table[cand].sort_values("probability", ascending=False).index[:cap]
        cand = table.index.isin(order)
    table["excluded"] = np.asarray(cand, bool)
    return table


def _preprocess(rec: Recording, cfg: PreprocessConfig) -> tuple[Recording, RecordingReport, Any]:
    """:func:`preprocess_recording` that also returns the fitted ICA (or None)."""
    import mne

    t0 = time.perf_counter()
    src = _source(rec)
    rep = RecordingReport(key=rec.key, dataset=rec.dataset, subject=rec.subject,
                          session=rec.session, recording=rec.recording, source=src,
                          sfreq_in=rec.sfreq, duration_s=rec.duration,
                          n_channels_in=len(rec.ch_names))
    notes = rep.notes
    rec.check_finite()

    types = [cfg.channel_types.get(n, t) for n, t in zip(rec.ch_names, rec.ch_types)]
    eeg = _eeg_positions(rec, types, cfg.montage, notes)
    rep.non_eeg_channels = [n for n, t in zip(rec.ch_names, types) if t != "eeg"]
    if not eeg:
        raise ValueError(f"{src}: no EEG channel with a position among {rec.ch_names} "
                         f"(types {types}).")
    info = mne.create_info(rec.ch_names, rec.sfreq, types, verbose="error")
    raw = mne.io.RawArray(rec.data.astype(np.float64), info, verbose="error")
    raw.pick(eeg)  # EOG/ECG/misc are kept out of everything below
    if cfg.montage is not None:
        canon = [normalize_channel_name(n) or n for n in eeg]
        montage = make_montage(eeg, cfg.montage)
        montage.rename_channels(dict(zip(canon, eeg)))
        raw.set_montage(montage, verbose="error")

    # bad channels, on a band-passed copy (also the ICA fitting copy when ICA is on)
    det, band = None, (None, None)
    if cfg.detect_bads or cfg.ica:
        band = (tuple(cfg.ica_fit_band) if cfg.ica and cfg.ica_fit_band
                else (cfg.l_freq or 1.0, cfg.h_freq))
        band = _clip_band(*band, rec.sfreq, notes, "detection/ICA band")
        det = raw.copy().filter(*band, verbose="error")
    copies = [raw] if det is None else [raw, det]
    if det is not None and cfg.detect_bads:
        rep.flat_channels, rep.noisy_channels = detect_bad_channels(
            det.get_data(), eeg, flat_std=cfg.flat_std, bad_ratio=cfg.bad_ratio)
        bads = [n for n in eeg if n in set(rep.flat_channels) | set(rep.noisy_channels)]
        if len(bads) > cfg.max_bad_frac * len(eeg):
            raise ValueError(f"{src}: {len(bads)} of {len(eeg)} EEG channels are bad (flat: "
                             f"{rep.flat_channels}, extreme variance: {rep.noisy_channels}); "
                             f"more than max_bad_frac={cfg.max_bad_frac}.")
        rep.bad_channels = bads
    n_rank = len(eeg)
    if rep.bad_channels:
        if cfg.interpolate and cfg.montage is not None:
            for r in copies:  # spatial ops commute with filtering: same matrix on both
                r.info["bads"] = list(rep.bad_channels)
                r.interpolate_bads(reset_bads=True, origin="auto", verbose="error")
            rep.bad_action = "interpolated"
            n_rank -= len(rep.bad_channels)
        else:
            for r in copies:
                r.drop_channels(rep.bad_channels)
            rep.bad_action = "dropped"
            n_rank -= len(rep.bad_channels)
    if cfg.reference == "average":
        for r in copies:
            r.set_eeg_reference("average", projection=False, verbose="error")
        n_rank -= 1

    # notch + band-pass on the data we keep
    lo, hi = _clip_band(cfg.l_freq, cfg.h_freq, rec.sfreq, notes, "band-pass")
    notch = [f for f in cfg.notch if f < rec.sfreq / 2]
    if len(notch) < len(cfg.notch):
        notes.append(f"notch {sorted(set(cfg.notch) - set(notch))} Hz above Nyquist: skipped")
    if notch:
        raw.notch_filter(notch, verbose="error")
    if lo is not None or hi is not None:
        raw.filter(lo, hi, verbose="error")

    ica = None
    if cfg.ica:
        if n_rank < 2:
            raise ValueError(f"{src}: only {n_rank} independent EEG channels left; ICA needs 2.")
        ica = _fit_ica(det, cfg, n_rank)
        table = iclabel_table(det, ica, cfg)
        excl = table.loc[table["excluded"], "component"].astype(int).tolist()
        ica.exclude = excl
        if excl:
            ica.apply(raw, exclude=excl, verbose="error")
        rep.ica_method = cfg.ica_method
        rep.n_components = int(ica.n_components_)
        rep.excluded = excl
        rep.excluded_labels = table.loc[table["excluded"], "label"].tolist()
        rep.ica_labels = table.to_dict("records")
        if band[0] != 1.0 or (band[1] or rec.sfreq / 2) < 100.0:
            notes.append(f"ICLabel features from a {band[0]}-{band[1] or rec.sfreq / 2:g} Hz "
                         "copy (ICLabel was trained on 1-100 Hz)")

    if cfg.resample is not None and abs(cfg.resample - raw.info["sfreq"]) > 1e-9:
        raw.resample(cfg.resample, verbose="error")
    data = raw.get_data().astype(np.float32)  # (C, T) volts
    names = list(raw.ch_names)
    if cfg.bipolar == "banana16":
        data, names = bipolar_derivation(data, names, BIPOLAR_16)
    meta = {**rec.meta, "preprocess": {"recipe": cfg.name, "version": PIPELINE_VERSION,
                                       "bad_channels": rep.bad_channels,
                                       "excluded_components": rep.excluded}}
    clean = rec.replace(data=data, sfreq=float(raw.info["sfreq"]), ch_names=names,
                        ch_types=None, meta=meta)
    rep.sfreq_out = clean.sfreq
    rep.n_eeg = len(names)
    rep.seconds = time.perf_counter() - t0
    return clean, rep, ica


def preprocess_recording(rec: Recording, cfg: PreprocessConfig | str = "omfa"
                         ) -> tuple[Recording, RecordingReport]:
    """Clean one recording (a pure function; see the module docstring for the steps).

    Parameters
    ----------
    rec : Recording
    cfg : PreprocessConfig or str
        A config or a recipe name (``"omfa"``, ``"stelar"``, ``"trace"``, ``"eegm2"``,
        ``"minimal"``).

    Returns
    -------
    clean : Recording
        EEG channels only, in volts, at ``cfg.resample`` (or the native rate), events unchanged.
    report : RecordingReport
        Bad channels, ICA components with their ICLabel labels and probabilities, what was
        excluded, notes (skipped filters), MNE warnings and the time taken.
    """
    clean, rep, _ = _preprocess_logged(rec, as_config(cfg))
    return clean, rep


def _preprocess_logged(rec: Recording, cfg: PreprocessConfig):
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: ICA on tens of channels is faster single-threaded (far faster on a
    # loaded machine); run_pipeline parallelises over recordings instead.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):
        warnings.simplefilter("always")
        clean, rep, ica = _preprocess(rec, cfg)
    msgs = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    rep.notes.extend(f"warning: {m}" for m in msgs[:10])
    log.info("%s: %d bad %s, %d/%d components excluded %s, %.1f s", rep.key,
             len(rep.bad_channels), rep.bad_channels, len(rep.excluded), rep.n_components,
             rep.excluded_labels, rep.seconds)
    return clean, rep, ica


# ============================================================================ caching
def recording_digest(rec: Recording) -> str:
    """SHA-256 (16 hex digits) of a recording's samples and of everything a reader set."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rec.data).tobytes())
    h.update(stable_hash({
        "shape": rec.data.shape, "sfreq": rec.sfreq, "ch_names": rec.ch_names,
        "ch_types": rec.ch_types, "key": rec.key, "label": rec.label,
        "label_names": rec.label_names,
        "events": None if rec.events is None else rec.events.to_dict("list"),
    }, n=64).encode())
    return h.hexdigest()[:16]


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))


def _rec_fields(rec: Recording) -> dict[str, Any]:
    return {"sfreq": rec.sfreq, "ch_names": rec.ch_names, "ch_types": rec.ch_types,
            "dataset": rec.dataset, "subject": rec.subject, "session": rec.session,
            "recording": rec.recording, "label": rec.label,
            "label_names": None if rec.label_names is None else
            {str(k): v for k, v in rec.label_names.items()},
            "events": None if rec.events is None else rec.events.to_dict("list"),
            "meta": json.loads(json.dumps(rec.meta, default=str))}


def _rec_from(fields: dict[str, Any], data: np.ndarray) -> Recording:
    f = dict(fields)
    if f["label_names"] is not None:
        f["label_names"] = {int(k): v for k, v in f["label_names"].items()}
    if f["events"] is not None:
        f["events"] = pd.DataFrame(f["events"])
    return Recording(data=data, **f)


@dataclass
class _Job:
    """One unit of work: an in-memory recording, or a file of a dataset (-> 1+ recordings)."""

    key: str
    hash: str
    rec: Recording | None = None
    file: str | None = None
    reader: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _cache_paths(cache_dir: Path, h: str) -> tuple[Path, Path]:
    return cache_dir / f"{h}.npz", cache_dir / f"{h}.json"


def _load_cached(cache_dir: Path, h: str) -> list[tuple[Recording, dict]] | None:
    npz, js = _cache_paths(cache_dir, h)
    if not (js.exists() and npz.exists()):
        return None
    try:
        entry = json.loads(js.read_text())
        with np.load(npz) as arrays:
            out = []
            for i, item in enumerate(entry["items"]):
                rep = dict(item["report"], from_cache=True)
                out.append((_rec_from(item["recording"], arrays[f"data_{i}"]), rep))
        return out
    except (OSError, ValueError, KeyError) as e:  # a corrupt entry is recomputed
        log.warning("cache entry %s unreadable (%s): recomputing", js, e)
        return None


def _save_cached(cache_dir: Path, h: str, job_key: str,
                 items: list[tuple[Recording, dict]], icas: list[Any]) -> None:
    npz, js = _cache_paths(cache_dir, h)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for i, ica in enumerate(icas):
        if ica is not None:
            ica.save(cache_dir / f"{h}-{i}-ica.fif", overwrite=True, verbose="error")
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"data_{i}": rec.data for i, (rec, _) in enumerate(items)})
    # the JSON is written last: its presence marks a complete entry
    atomic_write_json(js, {"job": job_key, "version": PIPELINE_VERSION,
                           "items": [{"recording": _rec_fields(rec), "report": rep}
                                     for rec, rep in items]})


def _run_job(job: _Job, cfg: PreprocessConfig, cache_dir: str | None
             ) -> tuple[list[tuple[Recording, dict]], list[dict]]:
    """Clean one job (from the cache when possible); never raises for a bad recording."""
    cdir = Path(cache_dir) if cache_dir else None
    if cdir is not None:
        hit = _load_cached(cdir, job.hash)
        if hit is not None:
            return hit, []
    failures: list[dict] = []
    if job.rec is not None:
        recs = [job.rec]
    else:
        from .readers import get_reader

        try:
            recs = list(get_reader(job.reader).read_file(job.file, **job.options))
        except Exception as e:  # noqa: BLE001 - a broken file is reported, the batch goes on
            log.error("%s: cannot read: %s", job.file, e)
            return [], [{"key": job.key, "source": job.file, "stage": "read",
                         "error": f"{type(e).__name__}: {e}"}]
    items, icas = [], []
    for rec in recs:
        try:
            clean, rep, ica = _preprocess_logged(rec, cfg)
        except Exception as e:  # noqa: BLE001
            log.error("%s: preprocessing failed: %s", rec.key, e)
            failures.append({"key": rec.key, "source": _source(rec), "stage": "preprocess",
                             "error": f"{type(e).__name__}: {e}"})
            continue
        rep.cache_key = job.hash
        rep.cache_item = len(items)
        items.append((clean, rep.to_dict()))
        icas.append(ica)
    if cdir is not None and not failures and items:
        _save_cached(cdir, job.hash, job.key, items, icas)
    return items, failures


# ============================================================================ the pipeline
@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced.

    Attributes
    ----------
    store : WindowStore or None
        The windows of every good recording (None with ``window=False`` or no windows).
    reports : DataFrame
        One row per cleaned recording (:meth:`RecordingReport.to_row`).
    failures : DataFrame
        ``key, source, stage, error`` of every recording that was skipped.
    ica : dict of str -> DataFrame
        Per recording key, the ICLabel table of :func:`iclabel_table`.
    """

    store: WindowStore | None
    reports: pd.DataFrame
    failures: pd.DataFrame
    ica: dict[str, pd.DataFrame]
    config: PreprocessConfig
    out_dir: Path
    cache_dir: Path | None
    seconds: float = 0.0
    recordings: dict[str, Recording] | None = None
    reader_options: dict[str, Any] = field(default_factory=dict)

    def _entry(self, key: str) -> tuple[str, int]:
        rows = self.reports[self.reports["key"] == key]
        if rows.empty:
            raise KeyError(f"No cleaned recording {key!r}; known: {self.reports['key'].tolist()}.")
        return str(rows["cache_key"].iloc[0]), int(rows["cache_item"].iloc[0])

    def cleaned(self, key: str) -> Recording:
        """The cleaned continuous recording ``key`` (from memory or the cache)."""
        if self.recordings is not None and key in self.recordings:
            return self.recordings[key]
        if self.cache_dir is None:
            raise ValueError("run_pipeline(cache=False, keep_cleaned=False) kept no cleaned "
                             "recordings.")
        h, i = self._entry(key)
        items = _load_cached(self.cache_dir, h)
        if items is None:
            raise FileNotFoundError(f"cache entry {h} of {key!r} missing in {self.cache_dir}.")
        return items[i][0]

    def load_ica(self, key: str):
        """The fitted ``mne.preprocessing.ICA`` of ``key`` (None when ICA was off)."""
        from mne.preprocessing import read_ica

        if self.cache_dir is None:
            raise ValueError("run_pipeline(cache=False) saved no ICA.")
        h, i = self._entry(key)
        path = self.cache_dir / f"{h}-{i}-ica.fif"
        return read_ica(path, verbose="error") if path.exists() else None


def _jobs(recordings: Iterable[Recording] | None, dataset: str | None, data_path: str | None,
          sig: dict[str, Any], limit: int | None, options: dict[str, Any]) -> Iterator[_Job]:
    if recordings is not None:
        for i, rec in enumerate(recordings):
            if limit is not None and i >= limit:
                return
            if not isinstance(rec, Recording):
                raise TypeError(f"run_pipeline: item {i} of 'recordings' is a "
                                f"{type(rec).__name__}, expected a Recording.")
            yield _Job(rec.key, stable_hash({"content": recording_digest(rec), "cfg": sig,
                                             "version": PIPELINE_VERSION}), rec=rec)
        return
    from .readers import get_reader

    files = list(get_reader(dataset).list_files(data_path, **options))
    if not files:
        raise FileNotFoundError(f"run_pipeline: no {dataset} files under {data_path}.")
    for f in files[:limit]:
        f = str(f)
        yield _Job(f, stable_hash({"file": os.path.basename(f), "digest": file_digest(f),
                                   "reader": dataset, "options": options, "cfg": sig,
                                   "version": PIPELINE_VERSION}),
                   file=f, reader=dataset, options=options)


def _results(jobs: Iterator[_Job], cfg: PreprocessConfig, cache_dir: Path | None, n_jobs: int):
    """(job, items, failures) in job order; in parallel with joblib for ``n_jobs > 1``."""
    cdir = str(cache_dir) if cache_dir is not None else None
    if n_jobs == 1:
        for job in jobs:
            yield (job, *_run_job(job, cfg, cdir))
        return
    from joblib import Parallel, delayed

    pending: list[_Job] = []

    def tasks():
        for job in jobs:
            pending.append(job)
            yield delayed(_run_job)(job, cfg, cdir)

    out = Parallel(n_jobs=n_jobs, return_as="generator")(tasks())
    for k, (items, failures) in enumerate(out):
        job = pending[k]
        job.rec = None  # free the input once it has been processed
        yield job, items, failures


def run_pipeline(recordings: Iterable[Recording] | None = None, *, dataset: str | None = None,
                 data_path: str | os.PathLike | None = None,
                 cfg: PreprocessConfig | str | dict[str, Any] = "omfa",
                 out_dir: str | os.PathLike = "runs/preprocess", n_jobs: int = 1,
                 cache_dir: str | os.PathLike | None = None, cache: bool = True,
                 save_fif: bool = False, window: bool = True, limit: int | None = None,
                 keep_cleaned: bool = False,
                 reader_options: dict[str, Any] | None = None) -> PipelineResult:
    """Preprocess many recordings, window them and write one WindowStore.

    Parameters
    ----------
    recordings : iterable of Recording, optional
        In-memory recordings (e.g. the synthetic corpus); consumed lazily, so an iterator that
        fails midway leaves the finished recordings in the cache.
    dataset, data_path : str
        Instead of ``recordings``: a reader name and its folder; each file is a cache unit keyed
        by its bytes, so a cached file is not even read again.
    cfg : PreprocessConfig, recipe name or dict
    out_dir : path
        Receives ``store/`` (the WindowStore), ``reports.csv``, ``failures.csv``,
        ``ica_labels.csv``, ``config.json`` and, with ``save_fif``, ``epochs/*-epo.fif``.
    n_jobs : int
        Recordings processed in parallel (joblib processes); 1 runs in this process.
    cache_dir : path, optional
        Defaults to ``out_dir/cache``. Entries are named by a hash of the input and of
        :meth:`PreprocessConfig.signal_dict`, so window settings can change without recomputing.
    cache : bool
        False: neither read nor write the cache (benchmarks).
    save_fif : bool
        Also write each recording's windows as MNE epochs (volts, before scaling).
    window : bool
        False: clean and cache only, no store.
    limit : int, optional
        Only the first ``limit`` recordings (or files).
    keep_cleaned : bool
        Keep the cleaned recordings in ``result.recordings``.
    reader_options : dict, optional
        Passed to the reader's ``list_files`` and ``read_file`` (part of the cache key).

    Returns
    -------
    PipelineResult

    Raises
    ------
    ValueError
        When windows of different rates would land in one store (native-rate recipes): the
        message names the recording; a recording that fails to read or clean is not an error,
        it is logged and listed in ``result.failures``.
    """
    t0 = time.perf_counter()
    cfg = as_config(cfg)
    check_positive("n_jobs", n_jobs)
    if (recordings is None) == (dataset is None):
        raise ValueError("run_pipeline: give either 'recordings' or 'dataset' (with "
                         "'data_path'), not both or neither.")
    if dataset is not None and not data_path:
        raise ValueError(f"run_pipeline: dataset={dataset!r} needs 'data_path', the folder "
                         "of its files.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cdir = (Path(cache_dir) if cache_dir is not None else out / "cache") if cache else None
    atomic_write_json(out / "config.json", to_dict(cfg))
    sig = cfg.signal_dict()

    reports: list[dict] = []
    failures: list[dict] = []
    kept: dict[str, Recording] = {}
    seen: set[str] = set()
    writer: WindowStoreWriter | None = None
    try:
        jobs = _jobs(recordings, dataset, data_path, sig, limit, dict(reader_options or {}))
        for _job, items, fails in _results(jobs, cfg, cdir, n_jobs):
            failures.extend(fails)
            for clean, rep in items:
                if clean.key in seen:
                    failures.append({"key": clean.key, "source": rep["source"],
                                     "stage": "assemble", "error": "duplicate recording key"})
                    continue
                seen.add(clean.key)
                if window:
                    writer, msg = _add_windows(writer, clean, rep, cfg, out, save_fif)
                    if msg:
                        failures.append({"key": clean.key, "source": rep["source"],
                                         "stage": "window", "error": msg})
                        continue
                reports.append(rep)
                if keep_cleaned:
                    kept[clean.key] = clean
        store = None
        if writer is not None:
            writer.meta["provenance"] = _provenance(cfg, reports, failures)
            store = writer.close()
        elif window:
            log.warning("run_pipeline: no windows from %d recordings; no store written.",
                        len(reports))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    rep_df = pd.DataFrame([RecordingReport(**r).to_row() for r in reports],
                          columns=[f.name for f in dataclasses.fields(RecordingReport)
                                   if f.name != "ica_labels"])
    fail_df = pd.DataFrame(failures, columns=["key", "source", "stage", "error"])
    ica_cols = ["component", "label", "probability", *ICLABEL_CLASSES, "excluded"]
    ica = {r["key"]: pd.DataFrame(r["ica_labels"])[ica_cols] for r in reports if r["ica_labels"]}
    rep_df.to_csv(out / "reports.csv", index=False)
    fail_df.to_csv(out / "failures.csv", index=False)
    if ica:
        pd.concat([t.assign(key=k) for k, t in ica.items()], ignore_index=True).to_csv(
            out / "ica_labels.csv", index=False)
    seconds = time.perf_counter() - t0
    log.info("run_pipeline(%s): %d recordings (%d from cache), %d failures, %.1f s", cfg.name,
             len(rep_df), int(rep_df["from_cache"].sum()) if len(rep_df) else 0, len(fail_df),
             seconds)
    return PipelineResult(store=store, reports=rep_df, failures=fail_df, ica=ica, config=cfg,
                          out_dir=out, cache_dir=cdir, seconds=seconds,
                          recordings=kept if keep_cleaned else None,
                          reader_options=dict(reader_options or {}))


def _within_events(rec: Recording, mode: str) -> bool:
    if mode == "fixed":
        return False
    if mode == "events":
        return True
    return rec.events is not None and bool((rec.events["label"] >= 0).any())


def _add_windows(writer: WindowStoreWriter | None, rec: Recording, rep: dict,
                 cfg: PreprocessConfig, out: Path, save_fif: bool
                 ) -> tuple[WindowStoreWriter | None, str | None]:
    """Window, reject, export and scale ``rec`` into ``writer`` (created on first use).

    Returns the writer and an error message when ``rec`` cannot join the store.
    """
    if writer is not None:
        if abs(rec.sfreq - writer.sfreq) > 1e-6:
            raise ValueError(
                f"{rec.key}: sampling rate {rec.sfreq:g} Hz differs from the store's "
                f"{writer.sfreq:g} Hz. Recipe {cfg.name!r} keeps native rates (resample=None) and "
                "a store holds one rate: run one pipeline per rate, or set resample.")
        if rec.ch_names != writer.ch_names:
            return writer, (f"channels {rec.ch_names} differ from the store's {writer.ch_names}; "
                            "a store holds one channel layout")
    win, rows = make_windows(rec, window_s=cfg.window_s, overlap_s=cfg.overlap_s,
                             within_events=_within_events(rec, cfg.window_mode), scale=None)
    if cfg.reject_ptp is not None and len(win):
        keep = np.ptp(win, axis=-1).max(axis=-1) <= cfg.reject_ptp  # (n,)
        win, rows = win[keep], rows[keep].reset_index(drop=True)
        rep["n_rejected_windows"] = int((~keep).sum())
    rep["n_windows"] = len(win)
    if save_fif and len(win):
        _save_epochs(win, rows, rec, out / "epochs" / f"{_safe(rec.key)}-epo.fif")
    if writer is None:
        writer = WindowStore.writer(out / "store", rec.ch_names, rec.sfreq, win.shape[-1],
                                    dataset=rec.dataset, label_names=rec.label_names,
                                    overwrite=True)
    writer.add(scale_windows(win, cfg.scale).astype(np.float32, copy=False), rows)
    return writer, None


def _save_epochs(win: np.ndarray, rows: pd.DataFrame, rec: Recording, path: Path) -> None:
    import mne

    info = mne.create_info(rec.ch_names, rec.sfreq, "eeg", verbose="error")
    labels = rows["label"].to_numpy(np.int64)
    events = np.c_[rows["start"].to_numpy(np.int64), np.zeros(len(rows), np.int64),
                   np.where(labels >= 0, labels + 1, 0)]  # (n, 3); MNE event ids: label + 1
    names = rec.label_names or {}
    event_id = {(names.get(int(v) - 1, str(int(v) - 1)) if v > 0 else "unlabelled"): int(v)
                for v in np.unique(events[:, 2])}
    # window starts can repeat across events only if events overlap; MNE needs unique samples
    _, first = np.unique(events[:, 0], return_index=True)
    epochs = mne.EpochsArray(win[first].astype(np.float64), info, events=events[first],
                             event_id=event_id, verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, overwrite=True, verbose="error")


def _provenance(cfg: PreprocessConfig, reports: list[dict], failures: list[dict]) -> dict:
    import mne

    try:
        import mne_icalabel

        icalabel_version = mne_icalabel.__version__
    except ImportError:  # pragma: no cover - a dependency
        icalabel_version = None
    return {"pipeline": "workbench.data.preprocess", "version": PIPELINE_VERSION,
            "recipe": cfg.name, "config": to_dict(cfg),
            "config_hash": stable_hash(to_dict(cfg)), "mne": mne.__version__,
            "mne_icalabel": icalabel_version, "reports": reports, "failures": failures}
