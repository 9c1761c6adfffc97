"""UCI "EEG Eye State": one Emotiv EPOC recording with per-sample eye state.

Layout: ``eeg_eye_state.arff`` (Weka ARFF): 14 numeric attributes ``AF3 F7 F3 FC5 T7 P7 O1 O2 P8
T8 FC6 F4 F8 AF4`` (microvolts with the Emotiv DC offset of about 4200 uV) and ``eyeDetection
{0,1}`` (1 = eyes closed, 0 = eyes open, from video), 14980 samples at 128 Hz (117 s). Parsed
with :func:`scipy.io.arff.loadarff`.

Labels: the per-sample ``eyeDetection`` is turned into events, one per contiguous run of equal
values (open 0, closed 1); the whole file is one Recording.

Outliers: the file holds a few corrupted samples where all 14 channels jump to values up to
715897 uV (rows 898, 10386, 11509 and 13179, 0-based, measured on the UCI file; every other
sample lies within about 12 robust SDs of its channel median). A time point is an outlier when
any channel is more than ``outlier_threshold`` robust SDs (1.4826 x median absolute deviation)
from its channel median. ``outliers="interpolate"`` (default) replaces those time points, on
every channel, by linear interpolation between the nearest good samples; ``"flag"`` keeps the
values; ``"raise"`` refuses the file; ``"keep"`` skips detection. With ``interpolate`` and
``flag`` the outliers are listed in ``meta["outliers"]`` (sample indices, per-channel counts,
threshold, action) and marked by events ``BAD_outlier`` (label -1), so that MNE's
``reject_by_annotation`` skips them. Spikes of 1e5 uV are never kept silently.

References
----------
Roesler O. (2013). EEG Eye State. UCI Machine Learning Repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...channels import DREAMER_14
from ...utils import check_option, check_positive, get_logger
from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize

log = get_logger("readers")

SFREQ = 128.0
LABEL_NAMES = {0: "eyes_open", 1: "eyes_closed"}
CHANNELS = DREAMER_14  # the same Emotiv EPOC order
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00264/EEG%20Eye%20State.arff"
FILENAME = "eeg_eye_state.arff"

INFO = DatasetInfo(
    name="uci_eye_state",
    description="UCI EEG Eye State: one 117 s Emotiv recording, 14 ch, 128 Hz; eyes open / "
                "closed per sample.",
    label_names=LABEL_NAMES,
    sfreq=SFREQ,
    channels=CHANNELS,
    public=True,
    licence="CC BY 4.0",
    url="https://archive.ics.uci.edu/dataset/264/eeg+eye+state",
    request_url=URL,
    download_hint="workbench data download uci_eye_state PATH (pooch)",
    layout="PATH/eeg_eye_state.arff (or any *.arff in PATH, or PATH is the file).",
    citation="Roesler (2013) UCI Machine Learning Repository",
)


def file_subject(file: str | Path) -> str:
    return "1"


def list_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder. Expected layout: {INFO.layout}")
    files = sorted(path.glob("*.arff"))
    if not files:
        raise FileNotFoundError(f"{path}: no .arff file. Expected layout: {INFO.layout}")
    return files


def expected_files(path: str | Path, **options: Any) -> list[Path]:
    path = Path(path)
    return [path if path.suffix == ".arff" else path / FILENAME]


def load_arff(file: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``x`` (T, 14) in microvolts, ``eye`` (T,) int and the channel names of the file."""
    from scipy.io import arff

    file = Path(file)
    try:
        rows, meta = arff.loadarff(file)
    except Exception as e:
        raise ValueError(f"{file}: not a readable ARFF file ({type(e).__name__}: {e}).") from e
    names = list(meta.names())
    if "eyeDetection" not in names:
        raise ValueError(f"{file}: no 'eyeDetection' attribute (attributes: {names}).")
    chans = [n for n in names if n != "eyeDetection"]
    if [c.upper() for c in chans] != [c.upper() for c in CHANNELS]:
        raise ValueError(f"{file}: channels {chans}, expected {list(CHANNELS)}.")
    df = pd.DataFrame(rows)
    x = df[chans].to_numpy(float)  # (T, 14)
    eye_raw = df["eyeDetection"]
    eye = np.array([int(v.decode() if isinstance(v, bytes) else v) for v in eye_raw])
    if not np.isin(eye, (0, 1)).all():
        raise ValueError(f"{file}: eyeDetection must be 0 or 1.")
    return x, eye, chans


def detect_outliers(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Outlier time points of ``x`` (T, C): any channel beyond ``threshold`` robust SDs.

    Returns the sorted sample indices and the (T, C) boolean mask of outlying values.
    """
    med = np.median(x, axis=0)
    sd = 1.4826 * np.median(np.abs(x - med), axis=0)
    sd = np.where(sd > 0, sd, np.finfo(float).tiny)
    mask = np.abs(x - med) > threshold * sd  # (T, C)
    return np.flatnonzero(mask.any(axis=1)), mask


def interpolate_samples(x: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace rows ``bad`` of ``x`` (T, C) by linear interpolation over the good rows."""
    if len(bad) == 0:
        return x
    good = np.setdiff1d(np.arange(len(x)), bad)
    if len(good) == 0:
        raise ValueError("every sample is an outlier; nothing to interpolate from.")
    out = x.copy()
    for c in range(x.shape[1]):
        out[bad, c] = np.interp(bad, good, x[good, c])
    return out


def label_runs(eye: np.ndarray, sfreq: float) -> pd.DataFrame:
    """Events for the contiguous runs of equal values of ``eye``."""
    change = np.flatnonzero(np.diff(eye)) + 1
    starts = np.r_[0, change]
    stops = np.r_[change, len(eye)]
    labels = eye[starts]
    return make_events(starts / sfreq, (stops - starts) / sfreq, labels,
                       [LABEL_NAMES[int(v)] for v in labels])


def read_file(file: str | Path, *, outliers: str = "interpolate",
              outlier_threshold: float = 20.0, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """The recording with eye-state events; outlier handling as in the module docstring.

    Parameters
    ----------
    outliers : {"interpolate", "flag", "raise", "keep"}
    outlier_threshold : float
        In robust SDs (1.4826 x MAD) from each channel's median.
    """
    check_option("outliers", outliers, ("interpolate", "flag", "raise", "keep"))
    check_positive("outlier_threshold", outlier_threshold)
    file = Path(file)
    x, eye, _ = load_arff(file)
    events = label_runs(eye, SFREQ)
    meta: dict[str, Any] = {"source": str(file), "original_units": "uV"}
    if outliers != "keep" and np.isfinite(x).all():
        bad, mask = detect_outliers(x, outlier_threshold)
        if len(bad):
            counts = mask.sum(axis=0)
            info = {"samples": bad.tolist(), "threshold": outlier_threshold, "action": outliers,
                    "max_abs_uV": float(np.abs(x[bad]).max()),
                    "channels": {CHANNELS[c]: int(counts[c]) for c in np.flatnonzero(counts)}}
            if outliers == "raise":
                raise ValueError(f"{file}: {len(bad)} outlier samples (> {outlier_threshold} "
                                 f"robust SDs) at {bad.tolist()[:10]}; pass outliers="
                                 "'interpolate' or 'flag'.")
            log.warning("%s: %d outlier samples (> %g robust SDs, up to %.0f uV) %s.", file.name,
                        len(bad), outlier_threshold, info["max_abs_uV"],
                        "interpolated" if outliers == "interpolate" else "flagged")
            if outliers == "interpolate":
                x = interpolate_samples(x, bad)
            meta["outliers"] = info
            bad_ev = make_events(bad / SFREQ, 1 / SFREQ, -1, ["BAD_outlier"] * len(bad))
            events = (pd.concat([events, bad_ev], ignore_index=True)
                      .sort_values("onset", kind="stable").reset_index(drop=True))
        else:
            meta["outliers"] = {"samples": [], "threshold": outlier_threshold,
                                "action": outliers, "channels": {}}
    rec = Recording(data=x.T * 1e-6, sfreq=SFREQ, ch_names=list(CHANNELS),  # (C, T) volts
                    dataset="uci_eye_state", subject="1", session="0", recording=file.stem,
                    events=events, label_names=LABEL_NAMES, meta=meta)
    return finalize([rec], nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Reads the ARFF header lines only."""
    file = Path(file)
    attrs = []
    with open(file, errors="replace") as f:
        for line in f:
            s = line.strip()
            if s.lower().startswith("@attribute"):
                attrs.append(s.split()[1])
            elif s.lower().startswith("@data"):
                break
        else:
            raise ValueError(f"{file}: no @DATA section; not an ARFF file.")
    if "eyeDetection" not in attrs or len(attrs) != 15:
        raise ValueError(f"{file}: attributes {attrs}, expected the 14 channels and eyeDetection.")
    return f"{len(attrs) - 1} channels + eyeDetection"


def download(path: str | Path, subjects=None) -> Path:
    """Fetch the ARFF file from the UCI repository (pooch)."""
    import pooch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pooch.retrieve(URL, known_hash=None, fname=FILENAME, path=path, progressbar=False)
    return path
