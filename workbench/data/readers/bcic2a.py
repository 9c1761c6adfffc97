"""BCI Competition IV dataset 2a (BNCI 2014-001): four-class motor imagery.

9 subjects, two sessions (``T`` training, ``E`` evaluation) of 6 runs x 48 trials, 22 EEG + 3 EOG
channels at 250 Hz. A trial starts with a fixation cross (t = 0 s), the cue appears at t = 2 s
and the subject imagines the movement until t = 6 s: each trial is an event from the cue, 4 s
long, labelled left hand 0, right hand 1, feet 2, tongue 3.

Two layouts are read:

* The BNCI Horizon files that MOABB downloads (``A01T.mat``, ``A01E.mat``): variable ``data``, a
  cell of run structs with ``X`` (samples x 25, microvolts), ``trial`` (1-based sample of each
  trial start), ``y`` (classes 1-4), ``fs``, ``classes``, ``artifacts``, ``gender``, ``age``. The
  first runs of a session have no trials (EOG calibration) and are skipped. One Recording per
  run with trials (``recording="run3"`` ...).
* The original competition GDF files (``A01T.gdf``, ``A01E.gdf``) read with MNE: channel names
  ``EEG-Fz``, ``EEG-0`` ... are mapped to the standard 22 electrode names by position; cues are
  events ``769``-``772`` (training) or ``783`` (evaluation, class unknown: the labels come from
  ``true_labels/A01E.mat`` or a sibling ``A01E.mat`` with variable ``classlabel``); ``1023`` marks
  trials rejected by the organisers (kept, listed in ``meta["rejected_trials"]``). One Recording
  per file. No GDF writer exists in MNE or edfio, so the GDF path is exercised only on real files.

References
----------
Tangermann M. et al. (2012). Review of the BCI Competition IV. Front. Neurosci. 6:55.
Brunner C. et al. (2008). BCI Competition 2008 - Graz data set A.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..recording import Recording, make_events
from .generic import DatasetInfo, _read_raw, finalize

BCIC_22 = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
           "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")
EOG_3 = ("EOG-left", "EOG-central", "EOG-right")
LABEL_NAMES = {0: "left_hand", 1: "right_hand", 2: "feet", 3: "tongue"}
_CLASS_ALIASES = {"left hand": 0, "left_hand": 0, "right hand": 1, "right_hand": 1, "feet": 2,
                  "both feet": 2, "foot": 2, "tongue": 3}
CUE_S, TRIAL_S = 2.0, 4.0
_NAME = re.compile(r"^A(\d{2})([TE])\.(mat|gdf)$", re.IGNORECASE)

INFO = DatasetInfo(
    name="bcic2a",
    description="BCI Competition IV 2a / BNCI 2014-001: 9 subjects, 4-class motor imagery, "
                "22 EEG + 3 EOG ch, 250 Hz.",
    label_names=LABEL_NAMES,
    sfreq=250.0,
    channels=BCIC_22,
    public=True,
    licence="CC BY-ND 4.0 (BNCI Horizon 2020)",
    url="https://bnci-horizon-2020.eu/database/data-sets",
    request_url="http://bnci-horizon-2020.eu/database/data-sets/001-2014/",
    download_hint="workbench data download bcic2a PATH (needs MOABB: pip install moabb)",
    layout="PATH/A01T.mat, PATH/A01E.mat ... A09E.mat (BNCI files, as MOABB stores them under "
           "MNE-bnci-data/database/data-sets/001-2014/), or PATH/A01T.gdf ... A09E.gdf with the "
           "evaluation labels in PATH/true_labels/A0xE.mat.",
    citation="Tangermann et al. (2012) Front. Neurosci. 6:55",
)


def parse_name(file: str | Path) -> tuple[int, str]:
    m = _NAME.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not a BCIC-2a file name (expected A0xT/A0xE .mat or .gdf).")
    return int(m.group(1)), m.group(2).upper()


def file_subject(file: str | Path) -> str:
    return f"A{parse_name(file)[0]:02d}"


def list_files(path: str | Path, **options: Any) -> list[Path]:
    """GDF files when the folder has any, otherwise the BNCI ``.mat`` files."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in path.iterdir() if _NAME.match(p.name))
    gdf = [p for p in files if p.suffix.lower() == ".gdf"]
    if gdf:
        return gdf
    if not files:
        raise FileNotFoundError(f"{path}: no A0xT/A0xE files. Expected layout: {INFO.layout}")
    return files


def expected_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    ext = ".gdf" if any(path.glob("A0*.gdf")) else ".mat"
    return [path / f"A{s:02d}{k}{ext}" for s in range(1, 10) for k in "TE"]


def _loadmat(file: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(file, squeeze_me=True, struct_as_record=False)
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e


def _class_index(classes, file: Path) -> list[int]:
    names = [str(c).lower() for c in np.atleast_1d(classes)]
    try:
        return [_CLASS_ALIASES[n] for n in names]
    except KeyError as e:
        raise ValueError(f"{file}: unknown class name {e.args[0]!r} in {names}.") from None


def _read_bnci(file: Path, subject: str, session: str) -> list[Recording]:
    mat = _loadmat(file)
    if "data" not in mat:
        raise ValueError(f"{file}: no variable 'data' (found "
                         f"{sorted(k for k in mat if not k.startswith('__'))}); not a BNCI file.")
    runs = mat["data"]
    runs = list(runs.ravel()) if isinstance(runs, np.ndarray) and runs.dtype == object else [runs]
    recs = []
    for r, run in enumerate(runs, start=1):
        trial = np.atleast_1d(np.asarray(run.trial)).astype(np.int64)
        if trial.size == 0:
            continue  # EOG calibration run
        y = np.atleast_1d(np.asarray(run.y)).astype(np.int64)
        if len(y) != len(trial):
            raise ValueError(f"{file}: run {r} has {len(trial)} trial onsets but {len(y)} labels; "
                             "they must match.")
        x = np.asarray(run.X, float)
        if x.ndim != 2 or x.shape[1] != 25:
            raise ValueError(f"{file}: run {r} X has shape {x.shape}, expected (n_samples, 25).")
        fs = float(run.fs)
        order = _class_index(run.classes, file)
        labels = np.array([order[v - 1] for v in y])
        artifacts = np.atleast_1d(np.asarray(getattr(run, "artifacts", np.zeros(len(y)))))
        onset = (trial - 1) / fs + CUE_S
        events = make_events(onset, TRIAL_S, labels, [LABEL_NAMES[v] for v in labels])
        recs.append(Recording(
            data=x.T * 1e-6, sfreq=fs, ch_names=list(BCIC_22) + list(EOG_3),  # (C, T) volts
            dataset="bcic2a", subject=subject, session=session, recording=f"run{r}",
            ch_types=["eeg"] * 22 + ["eog"] * 3, events=events, label_names=LABEL_NAMES,
            meta={"source": f"{file}:run{r}", "rejected_trials": np.flatnonzero(artifacts).tolist(),
                  "format": "bnci-mat"}))
    if not recs:
        raise ValueError(f"{file}: no run with trials.")
    return recs


def _true_labels(file: Path) -> np.ndarray:
    for cand in (file.parent / "true_labels" / f"{file.stem}.mat", file.with_suffix(".mat")):
        if cand.exists():
            mat = _loadmat(cand)
            if "classlabel" in mat:
                return np.atleast_1d(mat["classlabel"]).astype(np.int64)
    raise FileNotFoundError(f"{file}: evaluation labels not found; expected "
                            f"{file.parent / 'true_labels' / (file.stem + '.mat')} with variable "
                            "'classlabel'.")


def _read_gdf(file: Path, subject: str, session: str) -> list[Recording]:
    raw = _read_raw(file)
    if len(raw.ch_names) != 25:
        raise ValueError(f"{file}: {len(raw.ch_names)} channels, expected 22 EEG + 3 EOG.")
    sfreq = raw.info["sfreq"]
    ann = raw.annotations
    desc = np.asarray(ann.description).astype(str)
    onset = np.asarray(ann.onset) - raw.first_time
    cue = np.isin(desc, ["769", "770", "771", "772", "783"])
    starts = onset[desc == "768"]
    rejected_starts = onset[desc == "1023"]
    if session == "T":
        labels = np.array([int(d) - 769 for d in desc[cue]])
    else:
        labels = _true_labels(file) - 1
    if len(labels) != cue.sum():
        raise ValueError(f"{file}: {int(cue.sum())} cues but {len(labels)} labels; they must "
                         "match.")
    rejected = [i for i, s in enumerate(starts) if np.any(np.isclose(rejected_starts, s))]
    events = make_events(onset[cue], TRIAL_S, labels, [LABEL_NAMES[int(v)] for v in labels])
    return [Recording(
        data=raw.get_data(), sfreq=sfreq, ch_names=list(BCIC_22) + list(EOG_3), dataset="bcic2a",
        subject=subject, session=session, recording="0", ch_types=["eeg"] * 22 + ["eog"] * 3,
        events=events, label_names=LABEL_NAMES,
        meta={"source": str(file), "rejected_trials": rejected, "format": "gdf",
              "file_channels": list(raw.ch_names)})]


def read_file(file: str | Path, *, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """One session file: per-run Recordings (BNCI .mat) or one Recording (GDF)."""
    file = Path(file)
    sub, sess = parse_name(file)
    subject = f"A{sub:02d}"
    recs = (_read_gdf(file, subject, sess) if file.suffix.lower() == ".gdf"
            else _read_bnci(file, subject, sess))
    return finalize(recs, nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    import scipy.io

    file = Path(file)
    parse_name(file)
    if file.suffix.lower() == ".gdf":
        import mne

        try:
            raw = mne.io.read_raw_gdf(file, preload=False, verbose="error")
        except Exception as e:
            raise ValueError(f"{file}: MNE cannot read this GDF ({type(e).__name__}: {e}).") from e
        return f"{len(raw.ch_names)} channels, {raw.info['sfreq']:g} Hz"
    try:
        names = [v[0] for v in scipy.io.whosmat(file)]
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e
    if "data" not in names:
        raise ValueError(f"{file}: no variable 'data' (found {names}).")
    return "variable data present"


def download(path: str | Path, subjects=None) -> Path:
    """Fetch the BNCI 2014-001 files with MOABB (``pip install moabb``)."""
    try:
        import moabb.datasets as md
    except ImportError as e:
        raise ImportError("Downloading bcic2a needs MOABB: pip install moabb (or download "
                          f"A0xT.mat/A0xE.mat from {INFO.request_url}).") from e
    cls = getattr(md, "BNCI2014_001", None) or md.BNCI2014001
    ds = cls()
    subjects = list(range(1, 10)) if subjects is None else [int(s) for s in subjects]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for s in subjects:
        files += ds.data_path(s, path=str(path), update_path=False)
    return Path(files[0]).parent
