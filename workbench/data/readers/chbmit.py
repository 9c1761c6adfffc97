"""CHB-MIT Scalp EEG Database (PhysioNet ``chbmit``): paediatric seizure recordings.

Layout: one folder per case, ``chb01/`` ... ``chb24/``, holding about one-hour EDF files
(``chb01_03.edf``; case 17 uses ``chb17a_03.edf``...) and a summary ``chb01-summary.txt``. The
summary has a header (``Data Sampling Rate: 256 Hz``, ``Channels in EDF Files:``, ``Channel 1:
FP1-F7`` ...) and one block per file::

    File Name: chb01_03.edf
    File Start Time: 13:43:04
    File End Time: 14:43:04
    Number of Seizures in File: 1
    Seizure Start Time: 2996 seconds
    Seizure End Time: 3036 seconds

(some cases write ``Seizure 1 Start Time:``). Channels are bipolar pairs of the double-banana
montage (``FP1-F7`` -> ``Fp1-F7``, typed eeg), plus ``ECG``, ``VNS``, ``LOC-ROC`` and dummy ``-``
channels in some cases (typed, not dropped; dummy channels are flat and flagged). ``T8-P8``
appears twice in many files (MNE renames the copies ``T8-P8-0``/``T8-P8-1``): the first is kept
as ``T8-P8``, the copy dropped and listed in ``meta["dropped_channels"]``.

Each EDF is one Recording; events are the seizures (label 1) and, with ``background_events``
(default), the seizure-free stretches between them (label 0). A file whose seizure count
disagrees with its listed intervals, or that the summary does not list, is an error. Case
``chb21`` is the same patient as ``chb01`` 1.5 years later (``meta["patient"]``).

References
----------
Shoeb A. (2009). Application of machine learning to epileptic seizure onset detection and
treatment. PhD thesis, MIT.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize, raw_to_recording, read_edf
from .generic import check_file as _check_edf

LABEL_NAMES = {0: "background", 1: "seizure"}
BASE_URL = "https://physionet.org/files/chbmit/1.0.0/"
_FILE = re.compile(r"^(chb\d{2})[a-z]?_\d+[a-z+]*\.edf$", re.IGNORECASE)
_DUP = re.compile(r"^(.+)-(\d+)$")

INFO = DatasetInfo(
    name="chbmit",
    description="CHB-MIT Scalp EEG: 23 paediatric cases, bipolar 10-20 montage, 256 Hz; "
                "seizure vs background.",
    label_names=LABEL_NAMES,
    sfreq=256.0,
    public=True,
    licence="ODC-By 1.0 (PhysioNet)",
    url="https://physionet.org/content/chbmit/1.0.0/",
    request_url=BASE_URL,
    download_hint="workbench data download chbmit PATH (files fetched from PhysioNet with "
                  "pooch; about 43 GB for all cases)",
    layout="PATH/chb01/chb01_01.edf ... and PATH/chb01/chb01-summary.txt, one folder per case.",
    citation="Shoeb (2009) PhD thesis, MIT; Goldberger et al. (2000) Circulation 101(23)",
)


def file_subject(file: str | Path) -> str:
    m = _FILE.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not a CHB-MIT file name (expected chbNN_MM.edf).")
    return m.group(1).lower()


def summary_path(file: str | Path) -> Path:
    file = Path(file)
    return file.parent / f"{file_subject(file)}-summary.txt"


def parse_summary(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """File name -> list of (start, end) seizure times in seconds, from a summary file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: summary file not found (expected next to the EDF "
                                "files).")
    out: dict[str, list[tuple[float, float]]] = {}
    current, declared = None, {}
    starts: list[float] = []
    ends: list[float] = []

    def close() -> None:
        if current is None:
            return
        if len(starts) != len(ends):
            raise ValueError(f"{path}: {current}: {len(starts)} seizure starts but {len(ends)} "
                             "ends.")
        n = declared.get(current)
        if n is not None and n != len(starts):
            raise ValueError(f"{path}: {current}: 'Number of Seizures in File: {n}' but "
                             f"{len(starts)} seizure intervals listed.")
        out[current] = list(zip(starts, ends))

    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if m := re.match(r"^File Name:\s*(\S+)", line):
            close()
            current, starts, ends = m.group(1), [], []
        elif m := re.match(r"^Number of Seizures in File:\s*(\d+)", line):
            declared[current] = int(m.group(1))
        elif m := re.match(r"^Seizure\s*\d*\s*Start Time:\s*([\d.]+)\s*seconds", line):
            starts.append(float(m.group(1)))
        elif m := re.match(r"^Seizure\s*\d*\s*End Time:\s*([\d.]+)\s*seconds", line):
            ends.append(float(m.group(1)))
    close()
    if not out:
        raise ValueError(f"{path}: no 'File Name:' entries; not a CHB-MIT summary file.")
    return out


def list_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in path.rglob("chb*.edf") if _FILE.match(p.name))
    if not files:
        raise FileNotFoundError(f"{path}: no chbNN_MM.edf files. Expected layout: {INFO.layout}")
    return files


def layout_problems(path: str | Path, **options: Any) -> list[tuple[str, str]]:
    """Cases without a summary, and files a summary lists that are absent."""
    out = []
    cases = {p.parent for p in Path(path).rglob("chb*.edf")} if Path(path).is_dir() else set()
    for case in sorted(cases):
        summary = case / f"{case.name}-summary.txt"
        if not summary.exists():
            out.append((str(summary), "summary file not found"))
            continue
        try:
            listed = parse_summary(summary)
        except ValueError as e:
            out.append((str(summary), str(e)))
            continue
        out += [(str(case / f), "listed in the summary, not found") for f in listed
                if not (case / f).exists()]
    return out


def _dedupe(raw, file: Path) -> list[dict]:
    """Rename the first MNE-numbered copy of a duplicated channel back, drop the others."""
    groups: dict[str, list[str]] = {}
    for n in raw.ch_names:
        m = _DUP.match(n)
        if m and "-" in m.group(1):
            groups.setdefault(m.group(1), []).append(n)
    dropped, drop = [], []
    for stem, copies in groups.items():
        if len(copies) < 2 or stem in raw.ch_names:
            continue
        first, rest = copies[0], copies[1:]
        same = all(np.array_equal(raw.get_data(picks=[first]), raw.get_data(picks=[c]))
                   for c in rest)
        raw.rename_channels({first: stem})
        drop += rest
        dropped += [{"name": c, "reason": f"duplicate of {stem}" + ("" if same else
                     " (samples differ; first copy kept)")} for c in rest]
    if drop:
        raw.drop_channels(drop)
    return dropped


def read_file(file: str | Path, *, background_events: bool = True, nonfinite: str = "raise",
              flat: str = "flag") -> list[Recording]:
    """One EDF; events = seizures (1) and, optionally, the background between them (0)."""
    file = Path(file)
    subject = file_subject(file)
    seizures = parse_summary(summary_path(file))
    if file.name not in seizures:
        raise ValueError(f"{file}: not listed in {summary_path(file).name}; its seizure times "
                         "are unknown.")
    raw, dropped = read_edf(file)
    dropped += _dedupe(raw, file)
    dur = raw.n_times / raw.info["sfreq"]
    sz = sorted(seizures[file.name])
    bad = [(a, b) for a, b in sz if not 0 <= a < b <= dur + 1]
    if bad:
        raise ValueError(f"{file}: seizure intervals {bad} fall outside the recording "
                         f"(0-{dur:g} s).")
    segments: list[tuple[float, float, int]] = []  # (start, stop, label)
    t = 0.0
    for a, b in sz:
        if background_events and a > t:
            segments.append((t, a, 0))
        segments.append((a, min(b, dur), 1))
        t = min(b, dur)
    if background_events and t < dur:
        segments.append((t, dur, 0))
    onset = [a for a, _, _ in segments]
    duration = [b - a for a, b, _ in segments]
    label = [v for _, _, v in segments]
    events = make_events(onset, duration, label, [LABEL_NAMES[v] for v in label])
    rec = raw_to_recording(raw, dataset="chbmit", subject=subject, session="0",
                           recording=file.stem, source=file, events=events,
                           label_names=LABEL_NAMES, dropped=dropped,
                           meta={"n_seizures": len(sz), "seizures": sz,
                                 "patient": "chb01" if subject == "chb21" else subject})
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    file = Path(file)
    seizures = parse_summary(summary_path(file))
    if file.name not in seizures:
        raise ValueError(f"{file}: not listed in {summary_path(file).name}.")
    return f"{_check_edf(file)}, {len(seizures[file.name])} seizures"


def download(path: str | Path, subjects=None) -> Path:
    """Fetch cases from PhysioNet with pooch (``subjects``: case numbers 1-24, default all)."""
    import pooch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    records = pooch.retrieve(BASE_URL + "RECORDS", known_hash=None, fname="RECORDS", path=path,
                             progressbar=False)
    names = [ln.strip() for ln in Path(records).read_text().splitlines() if ln.strip()]
    cases = sorted({n.split("/")[0] for n in names})
    if subjects is not None:
        wanted = {f"chb{int(s):02d}" for s in subjects}
        cases = [c for c in cases if c in wanted]
    from .physionet import fetch

    files = [n for case in cases for n in
             [m for m in names if m.startswith(case + "/")] + [f"{case}/{case}-summary.txt"]]
    fetch(BASE_URL, files, path)  # each file checked against PhysioNet's SHA-256
    return path
