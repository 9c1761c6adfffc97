"""SEED emotion dataset (SJTU BCMI), the preprocessed release.

Layout of the release (``Preprocessed_EEG``): one MATLAB file per subject and session named
``<subject>_<YYYYMMDD>.mat`` (15 subjects x 3 sessions = 45 files), each holding 15 variables
``<initials>_eeg1`` ... ``<initials>_eeg15`` (the initials differ per subject, e.g. ``djc_eeg1``),
one per film clip, of shape (62, n_samples) in microvolts at 200 Hz (downsampled, 0-75 Hz
filtered), channels in the order of :data:`workbench.channels.SEED_62`; plus ``label.mat`` whose
variable ``label`` (1 x 15) gives the clip emotions in {-1, 0, 1}.

Each clip becomes one Recording (``recording="trial01"`` ...) with a recording-level label:
negative 0, neutral 1, positive 2 (the file value + 1) and one event spanning it. Sessions are
numbered 1, 2, 3 by the date in the file names of each subject (the date is kept in ``meta``).

References
----------
Zheng W.-L., Lu B.-L. (2015). Investigating critical frequency bands and channels for EEG-based
emotion recognition with deep neural networks. IEEE TAMD 7(3).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ...channels import SEED_62
from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize

LABEL_NAMES = {0: "negative", 1: "neutral", 2: "positive"}
SFREQ = 200.0
N_SUBJECTS, N_SESSIONS = 15, 3
_NAME = re.compile(r"^(\d+)_(\d{8})\.mat$")
_TRIAL = re.compile(r"^([A-Za-z]+)_eeg(\d+)$")

INFO = DatasetInfo(
    name="seed",
    description="SEED: 15 subjects x 3 sessions x 15 film clips, 62 ch, 200 Hz; negative / "
                "neutral / positive.",
    label_names=LABEL_NAMES,
    sfreq=SFREQ,
    channels=SEED_62,
    public=False,
    licence="SEED licence agreement (research use, application required)",
    url="https://bcmi.sjtu.edu.cn/home/seed/seed.html",
    request_url="https://bcmi.sjtu.edu.cn/home/seed/",
    download_hint="Apply on the SEED site (signed licence agreement), then download "
                  "Preprocessed_EEG.",
    layout="PATH/Preprocessed_EEG/<subject>_<YYYYMMDD>.mat (45 files, 15 variables "
           "<initials>_eeg1..15 of shape 62 x T each) and PATH/Preprocessed_EEG/label.mat "
           "(variable 'label', 1 x 15 in {-1, 0, 1}); PATH may also be the Preprocessed_EEG "
           "folder itself.",
    citation="Zheng & Lu (2015) IEEE TAMD 7(3)",
)


def _folder(path: Path) -> Path:
    if (path / "Preprocessed_EEG").is_dir():
        return path / "Preprocessed_EEG"
    return path


def file_subject(file: str | Path) -> str:
    m = _NAME.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not a SEED file name (expected <subject>_<YYYYMMDD>.mat).")
    return m.group(1)


def list_files(path: str | Path, **options: Any) -> list[Path]:
    folder = _folder(Path(path))
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted((p for p in folder.iterdir() if _NAME.match(p.name)),
                   key=lambda p: (int(file_subject(p)), p.name))
    if not files:
        raise FileNotFoundError(f"{folder}: no <subject>_<YYYYMMDD>.mat files. Expected layout: "
                                f"{INFO.layout}")
    if not (folder / "label.mat").exists():
        raise FileNotFoundError(f"{folder}: label.mat is missing. Expected layout: {INFO.layout}")
    return files


def layout_problems(path: str | Path, **options: Any) -> list[tuple[str, str]]:
    """Absent ``label.mat`` and subjects with fewer than 3 session files."""
    folder = _folder(Path(path))
    out = []
    if not (folder / "label.mat").exists():
        out.append((str(folder / "label.mat"), "label.mat (clip labels) not found"))
    found: dict[str, int] = {}
    for p in (folder.iterdir() if folder.is_dir() else []):
        if _NAME.match(p.name):
            found[file_subject(p)] = found.get(file_subject(p), 0) + 1
    for s in range(1, N_SUBJECTS + 1):
        n = found.get(str(s), 0)
        if n < N_SESSIONS:
            out.append((str(folder / f"{s}_*.mat"),
                        f"subject {s}: {n} of {N_SESSIONS} session files"))
    return out


def _loadmat(file: Path, **kw) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(file, **kw)
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e


def read_labels(folder: Path) -> np.ndarray:
    """The clip labels of ``label.mat`` as an int array in {-1, 0, 1}."""
    file = folder / "label.mat"
    if not file.exists():
        raise FileNotFoundError(f"{file}: label.mat not found next to the SEED files.")
    mat = _loadmat(file)
    if "label" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{file}: no variable 'label' (found {found}).")
    lab = np.asarray(mat["label"]).ravel()
    if not np.isin(lab, (-1, 0, 1)).all():
        raise ValueError(f"{file}: labels must be -1, 0 or 1, got {sorted(set(lab.tolist()))}.")
    return lab.astype(np.int64)


def _trial_vars(names, file: Path) -> list[tuple[int, str]]:
    trials = sorted((int(m.group(2)), n) for n in names if (m := _TRIAL.match(n)))
    if not trials:
        raise ValueError(f"{file}: no <initials>_eegN variables (found {sorted(names)}).")
    nums = [t for t, _ in trials]
    if nums != list(range(1, len(nums) + 1)):
        raise ValueError(f"{file}: trial variables are numbered {nums}, expected 1..{len(nums)}.")
    return trials


def _session_index(file: Path) -> int:
    sub = file_subject(file)
    dates = sorted(p.name for p in file.parent.iterdir()
                   if _NAME.match(p.name) and file_subject(p) == sub)
    return dates.index(file.name) + 1


def read_file(file: str | Path, *, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """The 15 clips of one subject-session file, one Recording each."""
    file = Path(file)
    subject = file_subject(file)
    labels = read_labels(file.parent)
    mat = _loadmat(file)
    trials = _trial_vars([k for k in mat if not k.startswith("__")], file)
    if len(trials) != len(labels):
        raise ValueError(f"{file}: {len(trials)} trial variables but label.mat has "
                         f"{len(labels)} labels; they must match.")
    session = _session_index(file)
    recs = []
    for (num, var), lab in zip(trials, labels):
        x = np.asarray(mat[var])
        if x.ndim != 2 or x.shape[0] != len(SEED_62):
            raise ValueError(f"{file}: variable {var} has shape {x.shape}, expected "
                             f"({len(SEED_62)}, n_samples).")
        y = int(lab) + 1
        n = x.shape[1]
        recs.append(Recording(
            data=x * 1e-6, sfreq=SFREQ, ch_names=list(SEED_62), dataset="seed", subject=subject,
            session=str(session), recording=f"trial{num:02d}",
            events=make_events([0.0], n / SFREQ, y, [LABEL_NAMES[y]]), label=y,
            label_names=LABEL_NAMES,
            meta={"source": f"{file}:{var}", "date": file.stem.split("_")[1], "trial": num,
                  "variable": var, "original_units": "uV"}))
    return finalize(recs, nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Variable names and shapes from the MAT header (:func:`scipy.io.whosmat`), no samples."""
    import scipy.io

    file = Path(file)
    try:
        vars_ = scipy.io.whosmat(file)
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e
    shapes = dict((n, s) for n, s, _ in vars_)
    trials = _trial_vars(list(shapes), file)
    labels = read_labels(file.parent)
    if len(trials) != len(labels):
        raise ValueError(f"{file}: {len(trials)} trial variables, label.mat has {len(labels)}.")
    bad = {v: shapes[v] for _, v in trials if shapes[v][0] != len(SEED_62)}
    if bad:
        raise ValueError(f"{file}: variables with a wrong channel count {bad}, expected 62 rows.")
    return f"{len(trials)} trials, 62 channels"
