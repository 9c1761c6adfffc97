"""PhysioNet "EEG During Mental Arithmetic Tasks" (eegmat, "PhysioNet-MA").

36 subjects, two EDF+ files each: ``SubjectNN_1.edf`` is rest (the last 180 s before the task)
and ``SubjectNN_2.edf`` the first 60 s of serial subtraction. 19 EEG channels (10-20, linked-ear
reference, old names ``T3``... normalised to ``T7``...) plus ``EEG A2-A1`` (the ear-to-ear
reference derivation, typed ``misc``) and ``ECG ECG`` (typed ``ecg``), 500 Hz. Each file is one
Recording with a recording-level label (rest 0, arithmetic 1) and one event spanning it;
``subject-info.csv`` (age, gender, number of subtractions, count quality) goes into ``meta``.

References
----------
Zyma I. et al. (2019). Electroencephalograms during mental arithmetic task performance. Data
4(1):14.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ...utils import get_logger
from ..recording import Recording, make_events
from .generic import DatasetInfo, check_eeg_count, finalize, raw_to_recording, read_edf
from .generic import check_file as _check_edf

log = get_logger("readers")

LABEL_NAMES = {0: "rest", 1: "arithmetic"}
N_SUBJECTS = 36
BASE_URL = "https://physionet.org/files/eegmat/1.0.0/"
_NAME = re.compile(r"^Subject(\d{2})_([12])\.edf$", re.IGNORECASE)

INFO = DatasetInfo(
    name="eegmat",
    description="PhysioNet EEG During Mental Arithmetic Tasks (36 subjects, rest vs "
                "arithmetic, 19 EEG ch, 500 Hz).",
    label_names=LABEL_NAMES,
    sfreq=500.0,
    public=True,
    licence="ODC-By 1.0",
    url="https://physionet.org/content/eegmat/1.0.0/",
    request_url=BASE_URL,
    download_hint="workbench data download eegmat PATH (files fetched from PhysioNet with pooch)",
    layout="PATH/Subject00_1.edf, PATH/Subject00_2.edf ... PATH/Subject35_2.edf and "
           "PATH/subject-info.csv (optional, goes into meta).",
    citation="Zyma et al. (2019) Data 4(1):14",
)


def parse_name(file: str | Path) -> tuple[int, int]:
    """(subject, condition) from ``Subject03_2.edf``."""
    m = _NAME.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not an eegmat file name (expected SubjectNN_1.edf or "
                         "SubjectNN_2.edf).")
    return int(m.group(1)), int(m.group(2))


def file_subject(file: str | Path) -> str:
    return f"Subject{parse_name(file)[0]:02d}"


def list_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in path.iterdir() if _NAME.match(p.name))
    if not files:
        raise FileNotFoundError(f"{path}: no SubjectNN_1.edf / SubjectNN_2.edf files. Expected "
                                f"layout: {INFO.layout}")
    return files


def expected_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    return [path / f"Subject{s:02d}_{c}.edf" for s in range(N_SUBJECTS) for c in (1, 2)]


def _subject_info(folder: Path, subject: str) -> dict[str, Any]:
    csv = folder / "subject-info.csv"
    if not csv.exists():
        return {}
    table = pd.read_csv(csv)
    row = table[table["Subject"].astype(str) == subject]
    return {} if row.empty else {k: (v.item() if hasattr(v, "item") else v)
                                 for k, v in row.iloc[0].items() if k != "Subject"}


def read_file(file: str | Path, *, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """One Recording per file, labelled rest (``_1``, 0) or arithmetic (``_2``, 1)."""
    file = Path(file)
    subject, cond = parse_name(file)
    label = cond - 1
    raw, dropped = read_edf(file)
    duration = raw.n_times / raw.info["sfreq"]
    sub = f"Subject{subject:02d}"
    rec = raw_to_recording(
        raw, dataset="eegmat", subject=sub, session="0", recording=file.stem, source=file,
        events=make_events([0.0], duration, label, [LABEL_NAMES[label]]), label=label,
        label_names=LABEL_NAMES, dropped=dropped,
        meta={"subject_info": _subject_info(file.parent, sub),
              "file_annotations": list(raw.annotations.description)})
    check_eeg_count(rec, 19, file)
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    parse_name(file)
    return _check_edf(file)


def download(path: str | Path, subjects=None) -> Path:
    """Fetch ``SubjectNN_{1,2}.edf`` and ``subject-info.csv`` from PhysioNet, each checked
    against PhysioNet's SHA-256 (files already there and intact are kept: a re-run resumes)."""
    from .physionet import fetch

    subjects = range(N_SUBJECTS) if subjects is None else [int(s) for s in subjects]
    names = ["subject-info.csv"] + [f"Subject{s:02d}_{c}.edf" for s in subjects for c in (1, 2)]
    fetch(BASE_URL, names, path)
    return Path(path)
