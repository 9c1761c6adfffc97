"""PhysioNet EEG Motor Movement/Imagery dataset (EEGMMIDB, "PhysioNet-MI").

109 subjects, 14 runs each, 64 channels at 160 Hz, EDF+ with annotations ``T0`` (rest), ``T1``
and ``T2`` whose meaning depends on the run:

=========  ======================================  ===========  ============
runs       task                                    T1           T2
=========  ======================================  ===========  ============
1, 2       baseline, eyes open / eyes closed        --           --
3, 7, 11   executed open/close of left/right fist   left fist    right fist
4, 8, 12   imagined left/right fist                 left fist    right fist
5, 9, 13   executed both fists / both feet          both fists   both feet
6, 10, 14  imagined both fists / both feet          both fists   both feet
=========  ======================================  ===========  ============

The ``task`` option picks runs and classes. ``"4class"`` is the four-class motor-imagery setup of
the EEG foundation-model papers (LaBraM/CBraMod-style PhysioNet-MI): imagined left fist (0),
right fist (1), both fists (2) and both feet (3) from the imagery runs 4, 6, 8, 10, 12, 14. Only
``T1``/``T2`` are labelled trials; ``T0`` rest periods are events with label -1, or a class of
their own (the last index) with ``rest_as_class=True``.

References
----------
Schalk G., McFarland D.J., Hinterberger T., Birbaumer N., Wolpaw J.R. (2004). BCI2000: a
general-purpose brain-computer interface (BCI) system. IEEE TBME 51(6).
Goldberger A. et al. (2000). PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...utils import check_option, get_logger
from ..recording import Recording, make_events
from .generic import DatasetInfo, check_eeg_count, clip_events, finalize, raw_to_recording, read_edf
from .generic import check_file as _check_edf

log = get_logger("readers")

_LR = {"T1": "left_fist", "T2": "right_fist"}
_FF = {"T1": "both_fists", "T2": "both_feet"}
# task -> {run: {annotation: class name}}
TASKS: dict[str, dict[int, dict[str, str]]] = {
    "imagery_lr": {r: _LR for r in (4, 8, 12)},
    "imagery_ff": {r: _FF for r in (6, 10, 14)},
    "executed_lr": {r: _LR for r in (3, 7, 11)},
    "executed_ff": {r: _FF for r in (5, 9, 13)},
    "4class": {**{r: _LR for r in (4, 8, 12)}, **{r: _FF for r in (6, 10, 14)}},
    "baseline": {1: {}, 2: {}},
}
CLASSES: dict[str, tuple[str, ...]] = {
    "imagery_lr": ("left_fist", "right_fist"),
    "imagery_ff": ("both_fists", "both_feet"),
    "executed_lr": ("left_fist", "right_fist"),
    "executed_ff": ("both_fists", "both_feet"),
    "4class": ("left_fist", "right_fist", "both_fists", "both_feet"),
    "baseline": ("eyes_open", "eyes_closed"),
}
N_SUBJECTS = 109
_NAME = re.compile(r"^S(\d{3})R(\d{2})\.edf$", re.IGNORECASE)

INFO = DatasetInfo(
    name="eegmmidb",
    description="PhysioNet EEG Motor Movement/Imagery (109 subjects, 64 ch, 160 Hz, EDF+).",
    label_names=dict(enumerate(CLASSES["imagery_lr"])),
    sfreq=160.0,
    public=True,
    licence="ODC-By 1.0",
    url="https://physionet.org/content/eegmmidb/1.0.0/",
    request_url="https://physionet.org/files/eegmmidb/1.0.0/",
    download_hint="workbench data download eegmmidb PATH (mne.datasets.eegbci.load_data)",
    layout="PATH/S001/S001R01.edf ... PATH/S109/S109R14.edf (the PhysioNet layout; MNE's "
           "fetcher puts it under MNE-eegbci-data/files/eegmmidb/1.0.0/).",
    citation="Schalk et al. (2004) IEEE TBME 51(6)",
    extra={"tasks": list(TASKS)},
)


def parse_name(file: str | Path) -> tuple[int, int]:
    """(subject, run) from ``S001R04.edf``; ``ValueError`` naming the file otherwise."""
    m = _NAME.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not an EEGMMIDB run file name (expected SxxxRyy.edf).")
    return int(m.group(1)), int(m.group(2))


def file_subject(file: str | Path) -> str:
    return f"S{parse_name(file)[0]:03d}"


def _runs(task: str | None) -> list[int]:
    if task is None:
        return list(range(1, 15))
    check_option("task", task, TASKS)
    return sorted(TASKS[task])


CHECK_DEFAULTS = {"task": None}
"""``workbench data check eegmmidb`` checks all 14 runs, whatever the task."""


def list_files(path: str | Path, *, task: str | None = "imagery_lr", **options: Any
               ) -> list[Path]:
    """The run files of ``task`` (None: all runs) under ``path`` (searched recursively)."""
    runs = _runs(task)
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in path.rglob("S*R*.edf") if _NAME.match(p.name))
    if not files:
        raise FileNotFoundError(f"{path}: no SxxxRyy.edf files. Expected layout: {INFO.layout}")
    return [f for f in files if parse_name(f)[1] in runs]


def expected_files(path: str | Path, *, task: str | None = "imagery_lr", **options: Any
                   ) -> list[Path]:
    """Every run file of ``task`` (None: all runs) for the 109 subjects (PhysioNet layout)."""
    path = Path(path)
    found = {p.name: p.parent for p in path.rglob("S*R*.edf")} if path.is_dir() else {}
    root = next(iter(found.values())).parent if found else path
    return [root / f"S{s:03d}" / f"S{s:03d}R{r:02d}.edf"
            for s in range(1, N_SUBJECTS + 1) for r in _runs(task)]


def read_file(file: str | Path, *, task: str = "imagery_lr", rest_as_class: bool = False,
              nonfinite: str = "raise", flat: str = "flag") -> list[Recording]:
    """Read one run as a Recording whose events are the labelled trials of ``task``.

    Parameters
    ----------
    task : {"imagery_lr", "imagery_ff", "executed_lr", "executed_ff", "4class", "baseline"}
    rest_as_class : bool
        Give ``T0`` rest periods the label ``n_classes`` ("rest") instead of -1.
    """
    check_option("task", task, TASKS)
    file = Path(file)
    subject, run = parse_name(file)
    if run not in TASKS[task]:
        raise ValueError(f"{file}: run R{run:02d} is not part of task {task!r} (runs "
                         f"{sorted(TASKS[task])}).")
    classes = CLASSES[task]
    label_names = dict(enumerate(classes))
    raw, dropped = read_edf(file)
    duration = raw.n_times / raw.info["sfreq"]
    rec_label = None
    if task == "baseline":
        rec_label = 0 if run == 1 else 1
        events = make_events([0.0], duration, rec_label, [classes[rec_label]])
    else:
        mapping = TASKS[task][run]
        rest = len(classes) if rest_as_class else -1
        if rest_as_class:
            label_names[rest] = "rest"
        ann = raw.annotations
        unknown = sorted(set(ann.description) - {"T0", "T1", "T2"})
        if unknown:
            raise ValueError(f"{file}: unexpected annotations {unknown}; expected T0, T1, T2.")
        desc = [mapping.get(d, "rest") for d in ann.description]
        labels = [classes.index(d) if d in classes else rest for d in desc]
        events = clip_events(make_events(np.asarray(ann.onset) - raw.first_time, ann.duration,
                                         labels, desc), duration)
        if not events["description"].isin(classes).any():
            raise ValueError(f"{file}: no T1/T2 trials in a run of task {task!r}.")
    rec = raw_to_recording(raw, dataset="eegmmidb", subject=f"S{subject:03d}", session="0",
                           recording=f"R{run:02d}", source=file, events=events, label=rec_label,
                           label_names=label_names, dropped=dropped,
                           meta={"run": run, "task": task})
    check_eeg_count(rec, 64, file)
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    parse_name(file)
    return _check_edf(file)


def download(path: str | Path, subjects=None, *, task: str | None = None) -> Path:
    """Fetch runs from PhysioNet with :func:`mne.datasets.eegbci.load_data`.

    Downloads all 14 runs (or those of ``task``) of ``subjects`` (default: all 109) and returns
    the folder that holds the ``Sxxx`` folders.
    """
    import mne

    subjects = list(range(1, N_SUBJECTS + 1)) if subjects is None else [int(s) for s in subjects]
    runs = sorted(TASKS[task]) if task else list(range(1, 15))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    files = mne.datasets.eegbci.load_data(subjects, runs, path=str(path), update_path=False)
    return Path(files[0]).parent.parent
