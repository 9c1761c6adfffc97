"""Generic reader (any MNE-readable file or folder) and the layer every reader builds on.

The shared layer turns a file into :class:`~workbench.data.recording.Recording` objects the same
way for every dataset:

* :class:`DatasetInfo` describes a dataset (classes, rate, channels, licence, folder layout).
* :func:`classify_channel` names and types a raw channel: canonical 10-05 names
  (:func:`workbench.channels.normalize_channel_name`) for EEG electrodes, ``"Fp1-F7"`` for bipolar
  pairs of two electrodes, and ``eog``/``ecg``/``emg``/``misc`` for everything else. Nothing is
  dropped silently: a dropped channel is logged and listed in ``meta["dropped_channels"]``.
* :func:`read_edf_header` parses an EDF/BDF header without reading samples (``workbench data
  check``) and :func:`read_edf` refuses truncated files and handles channels recorded at
  different rates inside one file (``mixed_rates``); both live in :mod:`.edf`, re-exported here.
* labels tables (:mod:`.labels`) label files of formats that carry no labels.
* :func:`finalize` applies the bad-input policy to every Recording: NaN/inf samples raise
  (``nonfinite="raise"``) and flat channels are flagged in ``meta["flat_channels"]``
  (``flat="flag"``).

The generic reader itself accepts EDF/BDF/GDF/EEGLAB/BrainVision/FIF/CNT files (or a folder of
them, searched recursively, e.g. a BIDS tree) with an optional labels table.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...channels import normalize_channel_name
from ...utils import check_option, get_logger
from ..recording import Recording, make_events
from .edf import EdfHeader, _read_raw, read_edf, read_edf_header
from .labels import label_rows, load_labels, table_problems

__all__ = ["CH_TYPES", "EXTENSIONS", "INFO", "DatasetInfo", "EdfHeader", "annotations_to_events",
           "bipolar_name", "check_eeg_count", "check_file", "classify_channel",
           "classify_channels", "clip_events", "file_subject", "finalize", "label_problems",
           "list_files", "raw_to_recording", "read_edf", "read_edf_header", "read_file",
           "stim_events", "_read_raw"]

log = get_logger("readers")

CH_TYPES = ("eeg", "eog", "ecg", "emg", "misc", "stim")


# ----------------------------------------------------------------------------- dataset info
@dataclass(frozen=True)
class DatasetInfo:
    """What a reader knows about its dataset.

    Parameters
    ----------
    name : str
        Registry name (``workbench data ... NAME``).
    description : str
        One line.
    label_names : dict or None
        Class index -> name (the default task of the reader).
    sfreq : float or None
        Native sampling rate (None when it varies between files).
    channels : tuple of str or None
        The EEG channels in file order, when fixed.
    public : bool
        True when the data can be downloaded without a licence agreement.
    licence : str
    url : str
        Home page of the dataset.
    request_url : str
        Where to request access (licence-gated data) or download it.
    download_hint : str
        How ``workbench data download`` gets it, or how to get it by hand.
    layout : str
        The folder layout :func:`list_files` expects.
    citation : str
    """

    name: str
    description: str
    label_names: dict[int, str] | None = None
    sfreq: float | None = None
    channels: tuple[str, ...] | None = None
    public: bool = True
    licence: str = ""
    url: str = ""
    request_url: str = ""
    download_hint: str = ""
    layout: str = ""
    citation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)


# ----------------------------------------------------------------------------- channels
_EOG = re.compile(r"^([HV]?EOG.*|LOC|ROC|EOGL|EOGR)$")
_ECG = re.compile(r"^(ECG|EKG).*$")
_EMG = re.compile(r"^[A-Z]?EMG.*$")
_MISC = re.compile(r"^(RESP.*|TEMP.*|PHOTIC.*|IBI|BURSTS|SUPPR|GSR|PLETH.*|PULSE|SPO2|EVENT|"
                   r"MARKER|STATUS|TRIGGER|STI\d*|STIM|RESPIRATION|TEMPERATURE|"
                   r"PLETHYSMOGRAPH|VNS)$")
_PREFIX = re.compile(r"^(EEG|EOG|ECG|EMG)[\s_:]+", re.IGNORECASE)


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^A-Za-z0-9]+", name.upper()) if t]


def bipolar_name(name: str) -> str | None:
    """``"Fp1-F7"`` when ``name`` is a pair of 10-05 electrodes (``"EEG FP1-F7"``), else None."""
    s = _PREFIX.sub("", str(name).strip()).strip().rstrip(".")
    parts = s.split("-")
    if len(parts) != 2:
        return None
    a, b = (normalize_channel_name(p) for p in parts)
    return f"{a}-{b}" if a and b else None


def classify_channel(name: str, mne_type: str = "eeg") -> tuple[str, str, bool]:
    """Name and type one raw channel.

    A type that MNE already knows (``eog``, ``ecg``, ``emg``, ``stim``, ``misc``: FIF files,
    BrainVision) is kept. A channel MNE calls ``eeg`` (every EDF channel) is typed by its name:
    an EOG/ECG/EMG word anywhere in it (``EOG horizontal``, ``EEG EKG1-REF``, ``hEOG``, ``EEG
    LOC-REF``) or a recognised non-EEG word (``Resp``, ``Temp``, ``PHOTIC``, ``GSR``, ``VNS`` ...)
    decides; otherwise a 10-05 electrode becomes ``eeg`` with its canonical name and a pair of
    two electrodes (``FP1-F7``, ``EEG Fpz-Cz``) ``eeg`` named ``"Fp1-F7"``. The ear-to-ear
    reference derivation ``A2-A1`` is ``misc``.

    Returns
    -------
    name : str
        Canonical name (EEG), ``"A-B"`` (bipolar EEG) or the stripped original name.
    ch_type : str
        One of ``eeg, eog, ecg, emg, misc, stim``.
    known : bool
        False for a channel that is neither an electrode nor a recognised non-EEG channel
        (typed ``misc``).
    """
    raw_name = str(name).strip()
    if mne_type != "eeg":
        return raw_name, (mne_type if mne_type in CH_TYPES else "misc"), True
    toks = _tokens(raw_name)
    for pattern, typ in ((_EOG, "eog"), (_ECG, "ecg"), (_EMG, "emg"), (_MISC, "misc")):
        if any(pattern.match(t) for t in toks):
            return raw_name, typ, True
    canon = normalize_channel_name(raw_name)
    if canon is not None:
        return canon, "eeg", True
    bip = bipolar_name(raw_name)
    if bip is not None:
        if set(bip.split("-")) <= {"A1", "A2"}:
            return raw_name, "misc", True
        return bip, "eeg", True
    return raw_name, "misc", False


def classify_channels(names: Sequence[str], mne_types: Sequence[str] | None = None, *,
                      source: str = "", unknown: str = "misc"
                      ) -> tuple[list[str], list[str], list[str]]:
    """Classify every channel of a file; raise on duplicates after normalisation.

    ``unknown="misc"`` keeps unrecognised channels typed ``misc`` (listed in the third return
    value), ``"raise"`` raises ``ValueError`` naming them.
    """
    check_option("unknown", unknown, ("misc", "raise"))
    mne_types = list(mne_types) if mne_types is not None else ["eeg"] * len(names)
    out_names, out_types, unknowns = [], [], []
    for n, t in zip(names, mne_types):
        cn, ct, known = classify_channel(n, t)
        out_names.append(cn)
        out_types.append(ct)
        if not known:
            unknowns.append(str(n))
    if unknowns and unknown == "raise":
        raise ValueError(f"{source}: unknown channel names {unknowns}: not 10-05 electrodes, "
                         "bipolar pairs of electrodes or recognised EOG/ECG/EMG/misc channels.")
    seen: dict[str, str] = {}
    for raw, cn in zip(names, out_names):
        if cn in seen:
            raise ValueError(f"{source}: channels {seen[cn]!r} and {raw!r} both normalise to "
                             f"{cn!r}; the file has a duplicated electrode.")
        seen[cn] = str(raw)
    return out_names, out_types, unknowns



# ----------------------------------------------------------------------------- Raw -> Recording
def annotations_to_events(raw, event_labels: dict[str, int] | None = None) -> pd.DataFrame:
    """The annotations of ``raw`` as an events table (label from ``event_labels`` or -1)."""
    ann = raw.annotations
    event_labels = event_labels or {}
    first = raw.first_time if raw.annotations.orig_time is not None else 0.0
    onset = np.asarray(ann.onset, float) - first
    labels = [int(event_labels.get(d, -1)) for d in ann.description]
    return make_events(onset, np.asarray(ann.duration, float), labels, list(ann.description))


def stim_events(raw, names: Sequence[str]) -> pd.DataFrame:
    """Events from stim (trigger) channels: one row per onset, label -1, description ``ch:code``."""
    import mne

    rows = []
    for n in names:
        ev = mne.find_events(raw, stim_channel=n, shortest_event=1, verbose="error")
        for s, _, code in ev:
            rows.append(((s - raw.first_samp) / raw.info["sfreq"], f"{n}:{int(code)}"))
    if not rows:
        return make_events([], 0.0, -1, [])
    onset, desc = zip(*sorted(rows))
    return make_events(onset, 0.0, -1, list(desc))


def raw_to_recording(raw, *, dataset: str, subject: str, session: str = "0",
                     recording: str = "0", source: str | Path = "",
                     events: pd.DataFrame | None = None, label: int | None = None,
                     label_names: dict[int, str] | None = None,
                     meta: dict[str, Any] | None = None, annotations_as_events: bool = True,
                     event_labels: dict[str, int] | None = None, unknown: str = "misc",
                     dropped: list[dict] | None = None) -> Recording:
    """Build a :class:`Recording` from a preloaded MNE Raw.

    Channels are named and typed by :func:`classify_channels`; stim channels become events and
    are removed from the data (listed in ``meta["dropped_channels"]``). Without ``events`` the
    annotations become the events table (``event_labels`` maps descriptions to classes).
    """
    if not source and raw.filenames and raw.filenames[0]:
        source = raw.filenames[0]
    source = str(source)
    mne_types = raw.get_channel_types()
    names, types, unknowns = classify_channels(raw.ch_names, mne_types, source=source,
                                               unknown=unknown)
    dropped = list(dropped or [])
    stim = [raw.ch_names[i] for i, t in enumerate(types) if t == "stim"]
    keep = [i for i, t in enumerate(types) if t != "stim"]
    ev_tables = []
    if events is not None:
        ev_tables.append(events)
    elif annotations_as_events and len(raw.annotations):
        ev_tables.append(annotations_to_events(raw, event_labels))
    if stim:
        ev_tables.append(stim_events(raw, stim))
        dropped += [{"name": n, "reason": "stim channel, turned into events"} for n in stim]
    ev = (pd.concat(ev_tables, ignore_index=True).sort_values("onset", kind="stable")
          .reset_index(drop=True) if ev_tables else None)
    if unknowns:
        log.info("%s: channels %s are not EEG electrodes; kept as misc.", Path(source).name,
                 unknowns)
    meta = dict(meta or {})
    meta.setdefault("source", source)
    meta["unknown_channels"] = unknowns
    meta["dropped_channels"] = dropped
    data = raw.get_data(picks=keep) if keep else np.zeros((0, raw.n_times))  # (C, T) volts
    return Recording(data=data, sfreq=raw.info["sfreq"], ch_names=[names[i] for i in keep],
                     dataset=dataset, subject=subject, session=session, recording=recording,
                     ch_types=[types[i] for i in keep], events=ev, label=label,
                     label_names=label_names, meta=meta)


def clip_events(events: pd.DataFrame, duration: float) -> pd.DataFrame:
    """Drop events that start at or after ``duration`` s and shorten those that run past it."""
    ev = events[events["onset"] < duration].copy()
    ev["duration"] = np.minimum(ev["duration"], duration - ev["onset"])
    return ev.reset_index(drop=True)


# ----------------------------------------------------------------------------- bad input
def check_eeg_count(rec: Recording, expected: int, file: str | Path) -> None:
    """Raise ``ValueError`` naming ``file`` unless ``rec`` has ``expected`` EEG channels."""
    n_eeg = sum(t == "eeg" for t in rec.ch_types)
    if n_eeg != expected:
        raise ValueError(f"{file}: {n_eeg} EEG channels after normalisation, expected "
                         f"{expected} (channels: {rec.ch_names}; unknown: "
                         f"{rec.meta.get('unknown_channels', [])}).")


def finalize(recordings: list[Recording], *, nonfinite: str = "raise", flat: str = "flag",
             flat_tol: float = 1e-9) -> list[Recording]:
    """Apply the bad-input policy to freshly read Recordings.

    Parameters
    ----------
    nonfinite : {"raise", "flag"}
        NaN or inf samples raise ``ValueError`` naming the file and the channels (default), or
        are kept and counted per channel in ``meta["nonfinite"]``.
    flat : {"flag", "raise", "drop"}
        Channels whose peak-to-peak amplitude is at most ``flat_tol`` (volts; a disconnected
        electrode) are listed in ``meta["flat_channels"]`` and logged (default), raise, or are
        removed (listed in ``meta["dropped_channels"]``).
    """
    check_option("nonfinite", nonfinite, ("raise", "flag"))
    check_option("flat", flat, ("flag", "raise", "drop"))
    out = []
    for rec in recordings:
        src = rec.meta.get("source", rec.key)
        bad = ~np.isfinite(rec.data)
        if bad.any():
            if nonfinite == "raise":
                rec.check_finite()
            counts = bad.sum(axis=1)
            rec.meta["nonfinite"] = {rec.ch_names[i]: int(counts[i])
                                     for i in np.flatnonzero(counts)}
            log.warning("%s: NaN/inf samples kept (nonfinite='flag'): %s", src,
                        rec.meta["nonfinite"])
        with warnings.catch_warnings():  # all-NaN channels (nonfinite="flag") count as flat
            warnings.simplefilter("ignore", RuntimeWarning)
            ptp = np.nanmax(rec.data, axis=1) - np.nanmin(rec.data, axis=1) if rec.n_times else None
        flat_idx = [] if ptp is None else [i for i in range(len(ptp)) if not ptp[i] > flat_tol]
        names = [rec.ch_names[i] for i in flat_idx]
        rec.meta["flat_channels"] = names
        if names:
            if flat == "raise":
                raise ValueError(f"{src}: flat channels {names} (peak-to-peak <= {flat_tol} V).")
            log.warning("%s: flat channels %s (peak-to-peak <= %g V)%s.", src, names, flat_tol,
                        "; dropped" if flat == "drop" else "")
            if flat == "drop":
                keep = [i for i in range(len(rec.ch_names)) if i not in set(flat_idx)]
                meta = dict(rec.meta)
                meta["dropped_channels"] = list(meta.get("dropped_channels", [])) + [
                    {"name": n, "reason": "flat"} for n in names]
                rec = rec.replace(data=rec.data[keep], ch_names=[rec.ch_names[i] for i in keep],
                                  ch_types=[rec.ch_types[i] for i in keep], meta=meta)
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- generic reader
INFO = DatasetInfo(
    name="generic",
    description="Any MNE-readable recording (EDF/BDF/GDF/EEGLAB/BrainVision/FIF/CNT), one file "
                "or a folder searched recursively (BIDS trees included).",
    public=True,
    layout="A file, or a folder holding files ending in .edf .bdf .gdf .set .vhdr .fif "
           ".fif.gz .cnt (at any depth). An optional labels table (CSV/TSV) has a 'file' column "
           "(file name, path relative to the folder, or stem) and either 'label' (one class per "
           "recording) or 'onset', 'duration', 'label' (labelled events).",
)

EXTENSIONS = (".edf", ".bdf", ".gdf", ".set", ".vhdr", ".fif", ".fif.gz", ".cnt")
_NOT_RAW_FIF = ("-epo.fif", "_epo.fif", "-ave.fif", "_ave.fif", "-ica.fif", "_ica.fif",
                "-trans.fif", "-cov.fif", "-fwd.fif", "-inv.fif", "-annot.fif", "-sol.fif")


def _is_recording(p: Path) -> bool:
    name = p.name.lower()
    return (p.is_file() and name.endswith(EXTENSIONS)
            and not name.endswith(tuple(s for s in _NOT_RAW_FIF))
            and not name.endswith(tuple(s + ".gz" for s in _NOT_RAW_FIF)))


def list_files(path: str | Path, **options: Any) -> list[Path]:
    """The recordings under ``path`` (a file or a folder searched recursively)."""
    path = Path(path)
    if path.is_file():
        if not _is_recording(path):
            raise ValueError(f"{path}: not a recording file MNE reads; expected one of "
                             f"{', '.join(EXTENSIONS)}.")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    files = sorted(p for p in path.rglob("*") if _is_recording(p))
    if not files:
        raise FileNotFoundError(f"{path}: no recording files ({', '.join(EXTENSIONS)}) found at "
                                "any depth.")
    return files


def _bids_entity(name: str, key: str) -> str | None:
    m = re.search(rf"(?:^|_){key}-([A-Za-z0-9]+)", name)
    return m.group(1) if m else None


def file_subject(file: str | Path) -> str | None:
    """Subject of a file: the BIDS ``sub-`` entity, else the file stem."""
    name = Path(file).name
    return _bids_entity(name, "sub") or name.split(".")[0]


def _duration(file: Path) -> float:
    import mne

    if file.suffix.lower() in (".edf", ".bdf"):
        return read_edf_header(file).duration
    raw = mne.io.read_raw(file, preload=False, verbose="error")
    return raw.n_times / raw.info["sfreq"]


def label_problems(path: str | Path, *, labels: str | Path | pd.DataFrame | None = None,
                   durations: bool = True, files: list[Path] | None = None,
                   **options: Any) -> list[tuple[str, str]]:
    """``(file, message)`` for every labels-table row that names no file under ``path`` and,
    with ``durations``, every file whose table events lie outside the recording."""
    if labels is None:
        return []
    files = files if files is not None else list_files(path, **options)
    return table_problems(path, labels, files, _duration if durations else None)


def read_file(file: str | Path, *, labels: str | Path | pd.DataFrame | None = None,
              event_labels: dict[str, int] | None = None,
              label_names: dict[int, str] | None = None, dataset: str = "generic",
              subject: str | None = None, session: str | None = None, unknown: str = "misc",
              mixed_rates: str = "drop", nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """Read one MNE-readable file into a Recording.

    Parameters
    ----------
    labels : path or DataFrame, optional
        Labels table (see ``INFO.layout``). A file without a row in the table is an error;
        events outside the recording are logged and listed in ``meta["label_problems"]``
        (rows naming no file: :func:`label_problems`).
    event_labels : dict, optional
        Annotation description -> class id (others get -1), e.g. ``{"square": 0, "rt": 1}``.
    subject, session : str, optional
        Default: the BIDS ``sub-``/``ses-`` entities of the file name, else its stem / ``"0"``.
    unknown : {"misc", "raise"}
        Channels that are not electrodes or recognised non-EEG channels.
    mixed_rates : {"drop", "resample", "raise"}
        EDF/BDF channels at different rates (see :func:`read_edf`).
    """
    file = Path(file)
    if file.suffix.lower() in (".edf", ".bdf"):
        raw, dropped = read_edf(file, mixed_rates=mixed_rates)
    else:
        raw, dropped = _read_raw(file), []
    rec_label, events, problems = None, None, []
    if labels is not None:
        rec_label, events, problems = label_rows(load_labels(labels), file,
                                                 raw.n_times / raw.info["sfreq"])
        for m in problems:
            log.warning("%s: %s", file, m)
    if events is None and len(raw.annotations):
        events = annotations_to_events(raw, event_labels)
    stem = file.name.split(".")[0]
    rec = raw_to_recording(
        raw, dataset=dataset, subject=subject or file_subject(file) or stem,
        session=session or _bids_entity(file.name, "ses") or "0", recording=stem, source=file,
        events=events, label=rec_label, label_names=label_names, unknown=unknown,
        dropped=dropped, meta={"format": file.suffix.lower().lstrip("."),
                               "label_problems": problems})
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Header-only check: EDF/BDF headers are parsed; other formats opened without samples."""
    import mne

    file = Path(file)
    if file.suffix.lower() in (".edf", ".bdf"):
        hdr = read_edf_header(file)
        hdr.check_complete()
        return (f"{len(hdr.signal_idx)} channels, {sorted(set(hdr.sfreqs))} Hz, "
                f"{hdr.duration:g} s")
    try:
        raw = mne.io.read_raw(file, preload=False, verbose="error")
    except Exception as e:
        raise ValueError(f"{file}: MNE cannot read this file ({type(e).__name__}: {e}).") from e
    return f"{len(raw.ch_names)} channels, {raw.info['sfreq']:g} Hz, {raw.times[-1]:g} s"

