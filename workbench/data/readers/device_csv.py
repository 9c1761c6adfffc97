"""CSV/TSV reader (dataset name ``csv``): sample tables exported by consumer devices.

Muse (muse-lsl, Mind Monitor raw), OpenBCI GUI and Emotiv exports, and any table with one
row per sample, become :class:`~workbench.data.recording.Recording` objects: one file = one
recording, the files of one device in one folder.

Column mapping (each an option, each with a default that reads the common layouts):

* rate: ``sfreq``, else a ``%Sample Rate = 250 Hz`` header line (OpenBCI; a declared rate is
  trusted over per-packet timestamps and then times are row / rate), else estimated from
  the time column (``timestamps``, ``timestamp``, ``time``; ``time_unit`` s or ms) as
  ``(n - 1) / (t_last - t_first)``, snapped to the nearest integer when within 0.1 % (LSL clock
  jitter: 256.02 Hz is 256 Hz), the estimate kept in ``meta["sfreq_estimated"]``;
* channels: every numeric column that is not time, marker or a known device column (sample
  index, accelerometer, analog, ``Other``), or ``columns``; ``channels`` renames them (a list in
  column order, or a dict column -> name), e.g. OpenBCI's ``EXG Channel 0`` -> ``Fp1``. Names are
  typed as in every reader (10-05 electrodes ``eeg``, ``Right AUX`` ``misc``);
* events: the marker column (``Marker``, ``Marker0``, ``Markers``, ``Marker Channel``, ...;
  or ``marker_column``): each non-zero, non-empty value is an event at that row's time,
  labelled by ``event_labels`` (value -> class) and ``event_duration`` s long; or a labels
  table (``labels``, as for the generic reader);
* units: ``units`` of the samples (``uV`` default, as all three devices write; ``mV``, ``V``,
  ``nV``), converted to volts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...utils import check_option, get_logger
from ..recording import Recording, make_events
from .generic import DatasetInfo, classify_channels, finalize
from .labels import label_rows, load_labels, table_problems

log = get_logger("readers")

INFO = DatasetInfo(
    name="csv",
    description="CSV/TSV sample tables of consumer devices (Muse, OpenBCI, Emotiv) or any "
                "one-row-per-sample export.",
    public=True,
    layout="A file, or a folder of .csv/.tsv/.txt files of one device (one file per "
           "recording; subject = file stem unless `subject` is given). Header row of column "
           "names; lines starting with '%' are comments (OpenBCI). Options: sfreq, "
           "time_column, time_unit, columns, channels, marker_column, event_labels, "
           "event_duration, units, labels (a labels table as for `generic`).",
)

EXTENSIONS = (".csv", ".tsv", ".txt")
UNITS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
RATE_SNAP = 1e-3  # relative distance to an integer rate under which an estimate is snapped
_TIME = re.compile(r"^(timestamps?|time|time_?s|time \(s\)|timestamp \(s\))$", re.IGNORECASE)
_MARKER = re.compile(r"^(markers?\d*|marker channel|events?|trigger)$", re.IGNORECASE)
_DEVICE = re.compile(r"^(sample index|index|sample|counter|accel.*|gyro.*|analog.*|"
                     r"other(\.\d+)?|battery.*|hsi.*|timestamp \(formatted\)|.*formatted.*)$",
                     re.IGNORECASE)
_RATE_LINE = re.compile(r"sample rate\s*=\s*([0-9.]+)", re.IGNORECASE)


def list_files(path: str | Path, **options: Any) -> list[Path]:
    """The tables under ``path`` (a file, or a folder's ``.csv/.tsv/.txt`` files, recursively)."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in EXTENSIONS:
            raise ValueError(f"{path}: not a CSV/TSV table; expected one of {EXTENSIONS}.")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{path}: no .csv/.tsv/.txt files found at any depth.")
    return files


def file_subject(file: str | Path) -> str | None:
    """Subject of a file: its stem."""
    return Path(file).name.split(".")[0]


def _header(file: Path, skiprows: int) -> tuple[list[str], str]:
    """The ``%`` comment lines and the column separator of ``file``."""
    comments, sep = [], ","
    with open(file, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i < skiprows:
                continue
            if line.startswith("%"):
                comments.append(line[1:].strip())
                continue
            counts = {s: line.count(s) for s in ("\t", ",", ";")}
            sep = max(counts, key=counts.get) if max(counts.values()) else ","
            break
    return comments, sep


def read_table(file: str | Path, *, skiprows: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """The table of ``file`` (column names stripped) and its ``%`` comment lines."""
    file = Path(file)
    comments, sep = _header(file, skiprows)
    try:
        table = pd.read_csv(file, sep=sep, comment="%", skipinitialspace=True,
                            skiprows=skiprows, low_memory=False)
    except Exception as e:
        raise ValueError(f"{file}: cannot read the table ({type(e).__name__}: {e}).") from e
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise ValueError(f"{file}: the table has no rows.")
    return table, comments


def _find(columns: list[str], pattern: re.Pattern, given: str | None, what: str,
          file: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise ValueError(f"{file}: no {what} column {given!r}; columns: {columns}.")
        return given
    return next((c for c in columns if pattern.match(c)), None)


def _rate(table: pd.DataFrame, comments: list[str], sfreq: float | None, time_col: str | None,
          time_unit: str, file: Path, meta: dict) -> tuple[float, np.ndarray | None]:
    """The sampling rate and the times (s, from 0) of the rows when the rate is estimated
    from them (a declared rate is trusted: device timestamps are often per packet)."""
    if sfreq is not None:
        return float(sfreq), None
    for line in comments:
        m = _RATE_LINE.search(line)
        if m:
            meta["sfreq_source"] = "header"
            return float(m.group(1)), None
    t = (pd.to_numeric(table[time_col], errors="coerce").to_numpy(float)
         if time_col is not None else np.zeros(0))
    if len(t) < 2 or not np.isfinite(t).all():
        raise ValueError(f"{file}: no sampling rate: give sfreq=..., or a time column of numbers "
                         f"(time_column=...; columns: {list(table.columns)}).")
    times = (t - t[0]) * (1e-3 if time_unit == "ms" else 1.0)
    if (np.diff(times) <= 0).any():
        raise ValueError(f"{file}: time column {time_col!r} is not increasing at "
                         f"{int((np.diff(times) <= 0).sum())} rows; give sfreq=... instead.")
    est = (len(times) - 1) / times[-1]
    meta["sfreq_estimated"] = float(est)
    meta["sfreq_source"] = f"time column {time_col!r}"
    d = np.diff(times)
    gaps = int((d > 2.5 / est).sum())
    if gaps:
        meta["time_gaps"] = gaps
        log.warning("%s: %d gaps in the time column (dropped samples?); rate estimated as %.4g "
                    "Hz over the whole file.", file.name, gaps, est)
    snapped = float(round(est))
    return (snapped if abs(est - snapped) <= RATE_SNAP * est else float(est)), times


def _marker_events(values: pd.Series, onsets: np.ndarray, event_labels: dict[str, int],
                   duration: float) -> pd.DataFrame:
    raw = values.astype(str).str.strip()
    num = pd.to_numeric(values, errors="coerce")
    is_event = ~(raw.isin(["", "nan", "NaN", "None"]) | (num == 0))
    # a numeric marker 1.0 and a text marker "1" are the same event value "1"
    desc = [str(int(n)) if pd.notna(n) and float(n).is_integer() else t
            for t, n in zip(raw[is_event], num[is_event])]
    labels = [int(event_labels.get(d, -1)) for d in desc]
    return make_events(onsets[is_event.to_numpy()], duration, labels, desc)


def read_file(file: str | Path, *, sfreq: float | None = None, time_column: str | None = None,
              time_unit: str = "s", columns: list[str] | None = None,
              channels: list[str] | dict[str, str] | None = None,
              marker_column: str | None = None, event_labels: dict | None = None,
              event_duration: float = 0.0, units: str = "uV",
              labels: str | Path | pd.DataFrame | None = None,
              label_names: dict[int, str] | None = None, dataset: str = "csv",
              subject: str | None = None, session: str = "0", skiprows: int = 0,
              nonfinite: str = "raise", flat: str = "flag") -> list[Recording]:
    """Read one CSV/TSV table of samples into a Recording (see the module docstring).

    Parameters
    ----------
    sfreq : float, optional
        Sampling rate; default: the header's, else estimated from the time column.
    time_column, time_unit
        The time column (default: ``timestamps``/``timestamp``/``time``) and its unit.
    columns : list of str, optional
        The signal columns (default: every numeric column that is not time, marker or device
        bookkeeping).
    channels : list or dict, optional
        New names of the signal columns (a list in column order, or column -> name).
    marker_column : str, optional
        The event column (default: ``Marker``, ``Marker0``, ``Markers``, ...).
    event_labels : dict, optional
        Marker value (as text, ``"1"``) -> class; others get -1.
    event_duration : float
        Length of a marker event in seconds (windows are cut inside labelled events).
    units : {"uV", "mV", "V", "nV"}
        Units of the samples.
    labels : path or DataFrame, optional
        A labels table as for the generic reader (``file`` + ``label``, or ``onset``,
        ``duration``, ``label``), instead of markers.
    skiprows : int
        Lines before the header row (Emotiv's metadata line: 1).
    """
    file = Path(file)
    check_option("units", units, tuple(UNITS))
    check_option("time_unit", time_unit, ("s", "ms"))
    table, comments = read_table(file, skiprows=skiprows)
    cols = list(table.columns)
    meta: dict[str, Any] = {"format": "csv", "units": units}
    time_col = _find(cols, _TIME, time_column, "time", file)
    marker_col = _find(cols, _MARKER, marker_column, "marker", file)
    rate, times = _rate(table, comments, sfreq, time_col, time_unit, file, meta)
    if columns is None:
        columns = [c for c in cols if c not in (time_col, marker_col) and not _DEVICE.match(c)
                   and pd.api.types.is_numeric_dtype(table[c])]
    missing = [c for c in columns if c not in cols]
    if missing:
        raise ValueError(f"{file}: columns {missing} not in the table; columns: {cols}.")
    if isinstance(channels, dict):
        names = [str(channels.get(c, c)) for c in columns]
    elif channels is not None:
        if len(channels) != len(columns):
            raise ValueError(f"{file}: {len(channels)} channel names for {len(columns)} signal "
                             f"columns {columns}; give one name per column (or a dict).")
        names = [str(n) for n in channels]
    else:  # Emotiv writes "EEG.AF3"
        names = [re.sub(r"^EEG\.", "", c) for c in columns]
    names, types, unknowns = classify_channels(names, source=str(file))
    if "eeg" not in types:
        raise ValueError(f"{file}: none of the signal columns {columns} is an EEG electrode "
                         f"(10-05 names); name them with channels=[...] (one per column, e.g. "
                         "OpenBCI 'EXG Channel 0' -> 'Fp1') or pick them with columns=[...].")
    data = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float).T  # (C, T)
    data = data * UNITS[units]
    onsets = times if times is not None else np.arange(data.shape[1]) / rate
    events, rec_label = None, None
    if labels is not None:
        rec_label, events, problems = label_rows(load_labels(labels), file,
                                                 data.shape[1] / rate)
        meta["label_problems"] = problems
        for m in problems:
            log.warning("%s: %s", file, m)
    elif marker_col is not None:
        events = _marker_events(table[marker_col], onsets, {str(k): int(v) for k, v in
                                                            (event_labels or {}).items()},
                                event_duration)
    meta.update(source=str(file), unknown_channels=unknowns, dropped_channels=[],
                time_column=time_col, marker_column=marker_col)
    rec = Recording(data=data, sfreq=rate, ch_names=names, dataset=dataset,
                    subject=subject or file_subject(file), session=session,
                    recording=file.name.split(".")[0], ch_types=types, events=events,
                    label=rec_label, label_names=label_names, meta=meta)
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Read the file (a table has no header-only check) and summarise it."""
    rec = read_file(file, **{k: v for k, v in options.items() if k != "labels"})[0]
    n_ev = 0 if rec.events is None else len(rec.events)
    return (f"{len(rec.ch_names)} channels ({sum(t == 'eeg' for t in rec.ch_types)} EEG), "
            f"{rec.sfreq:g} Hz, {rec.duration:g} s, {n_ev} events")


def label_problems(path: str | Path, *, labels: str | Path | pd.DataFrame | None = None,
                   durations: bool = True, files: list[Path] | None = None,
                   **options: Any) -> list[tuple[str, str]]:
    """Labels-table rows naming no file, and (``durations``) table events outside their
    recording (a table has no header: each file is read)."""
    if labels is None:
        return []
    files = files if files is not None else list_files(path)
    duration = (lambda f: read_file(f, **options)[0].duration) if durations else None
    return table_problems(path, labels, files, duration)
