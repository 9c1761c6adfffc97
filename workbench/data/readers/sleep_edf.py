"""Sleep-EDF Expanded (PhysioNet ``sleep-edfx``): PSG recordings with hypnograms.

Layout: pairs of EDF files, ``SC4ssNE0-PSG.edf`` + ``SC4ssNXX-Hypnogram.edf`` (sleep cassette,
subject ``ss``, night ``N``) and ``ST7ssNJ0-PSG.edf`` + ``ST7ssNXX-Hypnogram.edf`` (sleep
telemetry); the two files of a pair share their first 7 characters. The PSG holds ``EEG Fpz-Cz``
and ``EEG Pz-Oz`` (bipolar EEG, 100 Hz), ``EOG horizontal`` (100 Hz), ``EMG submental`` and in
the cassette files ``Resp oro-nasal``, ``Temp rectal``, ``Event marker`` at 1 Hz. Channels below
the highest rate are dropped and listed in ``meta["dropped_channels"]`` (``mixed_rates="drop"``;
``"resample"`` interpolates them instead). The hypnogram is an EDF+ file of annotations
``Sleep stage W/1/2/3/4/R/?`` and ``Movement time``.

Each PSG is one Recording whose events are the 30 s scoring epochs: W 0, N1 1, N2 2, N3 3 (R&K
stages 3 and 4 merged, AASM), REM 4; ``Sleep stage ?`` and ``Movement time`` epochs get label -1.
Epochs past the end of the signal are dropped. Subjects are ``SC00``... / ``ST01``..., sessions
the night (``"1"``, ``"2"``).

References
----------
Kemp B. et al. (2000). Analysis of a sleep-dependent neuronal feedback loop: the slow-wave
microcontinuity of the EEG. IEEE TBME 47(9).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize, raw_to_recording, read_edf, read_edf_header
from .generic import check_file as _check_edf

EPOCH_S = 30.0
LABEL_NAMES = {0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "REM"}
STAGES = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3,
          "Sleep stage 4": 3, "Sleep stage R": 4, "Sleep stage ?": -1, "Movement time": -1}
_PSG = re.compile(r"^(S[CT])(\d)(\d{2})(\d)[A-Z0-9]{2}-PSG\.edf$", re.IGNORECASE)

INFO = DatasetInfo(
    name="sleep_edf",
    description="Sleep-EDF Expanded: whole-night PSG, 30 s epochs scored W/N1/N2/N3/REM "
                "(stages 3 and 4 merged), EEG Fpz-Cz and Pz-Oz at 100 Hz.",
    label_names=LABEL_NAMES,
    sfreq=100.0,
    channels=("Fpz-Cz", "Pz-Oz"),
    public=True,
    licence="ODC-By 1.0 (PhysioNet)",
    url="https://physionet.org/content/sleep-edfx/1.0.0/",
    request_url="https://physionet.org/files/sleep-edfx/1.0.0/",
    download_hint="workbench data download sleep_edf PATH (mne.datasets.sleep_physionet)",
    layout="PATH/[...]/SC4ssNE0-PSG.edf with SC4ssN??-Hypnogram.edf beside it (and/or "
           "ST7ssNJ0-PSG.edf + ST7ssN??-Hypnogram.edf), at any depth.",
    citation="Kemp et al. (2000) IEEE TBME 47(9); Goldberger et al. (2000) Circulation 101(23)",
)


def parse_name(file: str | Path) -> tuple[str, str]:
    """(subject, night) from a PSG file name, e.g. ``SC4011E0-PSG.edf`` -> ("SC01", "1")."""
    m = _PSG.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not a Sleep-EDF PSG file name (expected SC4ssNE0-PSG.edf or "
                         "ST7ssNJ0-PSG.edf).")
    return f"{m.group(1).upper()}{m.group(3)}", m.group(4)


def file_subject(file: str | Path) -> str:
    return parse_name(file)[0]


def hypnogram_for(psg: str | Path) -> Path:
    """The hypnogram paired with a PSG file (same first 7 characters)."""
    psg = Path(psg)
    cands = sorted(psg.parent.glob(psg.name[:7] + "*-Hypnogram.edf"))
    if not cands:
        raise FileNotFoundError(f"{psg}: no hypnogram {psg.name[:7]}??-Hypnogram.edf beside it.")
    if len(cands) > 1:
        raise ValueError(f"{psg}: several hypnograms match: {[c.name for c in cands]}.")
    return cands[0]


def list_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in path.rglob("*-PSG.edf") if _PSG.match(p.name))
    if not files:
        raise FileNotFoundError(f"{path}: no *-PSG.edf files. Expected layout: {INFO.layout}")
    return files


def layout_problems(path: str | Path, **options: Any) -> list[tuple[str, str]]:
    out = []
    for f in (sorted(Path(path).rglob("*-PSG.edf")) if Path(path).is_dir() else []):
        if not list(f.parent.glob(f.name[:7] + "*-Hypnogram.edf")):
            out.append((str(f.parent / (f.name[:7] + "??-Hypnogram.edf")),
                        f"hypnogram for {f.name} not found"))
    return out


def read_hypnogram(hyp_file: Path):
    """The stage annotations of a hypnogram file (``mne.Annotations``)."""
    import mne

    try:
        return mne.read_annotations(hyp_file)
    except Exception as e:
        raise ValueError(f"{hyp_file}: cannot read the hypnogram annotations "
                         f"({type(e).__name__}: {e}).") from e


def stage_epochs(ann, hyp_file: Path, offset: float, duration: float
                 ) -> tuple[np.ndarray, list[str]]:
    """30 s epoch onsets and stage descriptions from hypnogram annotations.

    ``offset`` (s) is the hypnogram start relative to the PSG start; epochs before the PSG
    start or past its end (``duration``) are dropped.
    """
    unknown = sorted(set(ann.description) - set(STAGES))
    if unknown:
        raise ValueError(f"{hyp_file}: unknown stage annotations {unknown}; expected "
                         f"{sorted(STAGES)}.")
    onsets, desc = [], []
    for o, d, s in zip(ann.onset, ann.duration, ann.description):
        n = int(round(d / EPOCH_S))
        if abs(n * EPOCH_S - d) > 1e-3:
            raise ValueError(f"{hyp_file}: annotation {s!r} at {o} s lasts {d} s, not a multiple "
                             f"of {EPOCH_S:g} s.")
        start = o + offset
        onsets += [start + k * EPOCH_S for k in range(n)]
        desc += [s] * n
    onsets_a = np.asarray(onsets, float)
    keep = (onsets_a >= 0) & (onsets_a + EPOCH_S <= duration + 1e-6)
    return onsets_a[keep], [d for d, k in zip(desc, keep) if k]


def read_file(file: str | Path, *, mixed_rates: str = "drop", nonfinite: str = "raise",
              flat: str = "flag") -> list[Recording]:
    """One PSG with its hypnogram: events are the scored 30 s epochs."""
    file = Path(file)
    subject, night = parse_name(file)
    hyp = hypnogram_for(file)
    raw, dropped = read_edf(file, mixed_rates=mixed_rates)
    duration = raw.n_times / raw.info["sfreq"]
    ann = read_hypnogram(hyp)
    # MNE reads hypnogram onsets relative to the hypnogram's own start (orig_time None): align
    # with the start times of the two EDF headers (equal in the released files).
    psg_start, hyp_start = read_edf_header(file).start, read_edf_header(hyp).start
    offset = (hyp_start - psg_start).total_seconds() if psg_start and hyp_start else 0.0
    onsets, desc = stage_epochs(ann, hyp, offset, duration)
    labels = [STAGES[d] for d in desc]
    names = [LABEL_NAMES[v] if v >= 0 else d for v, d in zip(labels, desc)]
    events = make_events(onsets, EPOCH_S, labels, names)
    rec = raw_to_recording(raw, dataset="sleep_edf", subject=subject, session=night,
                           recording=file.name[:7], source=file, events=events,
                           label_names=LABEL_NAMES, dropped=dropped,
                           meta={"hypnogram": str(hyp), "hypnogram_offset_s": offset})
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    parse_name(file)
    hyp = hypnogram_for(file)
    msg = _check_edf(file)
    _check_edf(hyp)
    return f"{msg}; hypnogram {hyp.name}"


def download(path: str | Path, subjects=None, *, recording=(1, 2)) -> Path:
    """Fetch sleep-cassette PSG + hypnogram pairs with :mod:`mne.datasets.sleep_physionet`.

    ``subjects`` are the cassette subject numbers 0-82 (default: all available).
    """
    import mne

    subjects = list(range(83)) if subjects is None else [int(s) for s in subjects]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pairs = mne.datasets.sleep_physionet.age.fetch_data(subjects, recording=list(recording),
                                                        path=str(path), on_missing="warn")
    return Path(pairs[0][0]).parent
