"""Clean one recording: :func:`preprocess_recording` and the :class:`RecordingReport` it writes.

The steps, in order:

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
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ...channels import (
    BIPOLAR_16,
    bipolar_derivation,
    channel_positions,
    make_montage,
    normalize_channel_name,
)
from ...utils import get_logger
from ..recording import Recording
from .recipes import ICLABEL_CLASSES, PIPELINE_VERSION, PreprocessConfig, as_config

log = get_logger("preprocess")

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

