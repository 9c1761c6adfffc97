"""DREAMER emotion dataset (one MATLAB file, ``DREAMER.mat``).

Layout of the release: a MATLAB v5 file with one struct ``DREAMER`` whose fields are ``Data``
(1 x 23 cell, one struct per subject), ``EEG_SamplingRate`` (128), ``ECG_SamplingRate`` (256),
``EEG_Electrodes`` (1 x 14 cell of names, the Emotiv EPOC order of
:data:`workbench.channels.DREAMER_14`), ``noOfSubjects`` (23), ``noOfVideoSequences`` (18) and text
fields (``Disclaimer``, ``Provider``, ``Version``, ``Acknowledgement``). Each subject struct has
``Age``, ``Gender``, ``EEG`` and ``ECG`` (structs with ``baseline`` and ``stimuli``: 18 x 1 cells
of samples x channels arrays; EEG 14 channels at 128 Hz in microvolts, ECG 2 channels at 256 Hz)
and ``ScoreValence``, ``ScoreArousal``, ``ScoreDominance`` (18 x 1, integers 1-5).

Each (subject, clip) stimulus becomes one Recording (``subject="01"``, ``recording="clip01"``)
labelled high (1) / low (0) on ``target``: high when the score is strictly greater than
``threshold`` (3 by default). The baseline (a neutral clip shown before each stimulus, 61 s)
is not contiguous with the stimulus; with ``include_baseline=True`` it is a separate Recording
(``recording="clip01_baseline"``, no label). ECG (256 Hz) is not read.

References
----------
Katsigiannis S., Ramzan N. (2018). DREAMER: a database for emotion recognition through EEG and
ECG signals from wireless low-cost off-the-shelf devices. IEEE JBHI 22(1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...channels import DREAMER_14, normalize_channel_name
from ...utils import check_option
from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize

TARGETS = ("valence", "arousal", "dominance")
_SCORE = {"valence": "ScoreValence", "arousal": "ScoreArousal", "dominance": "ScoreDominance"}
FILENAME = "DREAMER.mat"

INFO = DatasetInfo(
    name="dreamer",
    description="DREAMER: 23 subjects x 18 film clips, 14 Emotiv ch, 128 Hz; binary high/low "
                "valence (or arousal, dominance) on 1-5 scores.",
    label_names={0: "low_valence", 1: "high_valence"},
    sfreq=128.0,
    channels=DREAMER_14,
    public=False,
    licence="DREAMER licence (restricted access on Zenodo, academic use)",
    url="https://zenodo.org/record/546113",
    request_url="https://zenodo.org/record/546113 (request access with an institutional "
                "e-mail)",
    download_hint="Request access on Zenodo; download DREAMER.mat.",
    layout="PATH/DREAMER.mat (or PATH is the file itself).",
    citation="Katsigiannis & Ramzan (2018) IEEE JBHI 22(1)",
)


def _file(path: Path) -> Path:
    return path if path.is_file() else path / FILENAME


def file_subject(file: str | Path) -> None:
    """``DREAMER.mat`` holds every subject: filtering happens on the Recordings."""
    return None


def list_files(path: str | Path, **options: Any) -> list[Path]:
    f = _file(Path(path))
    if not f.exists():
        raise FileNotFoundError(f"{f}: not found. Expected layout: {INFO.layout}")
    return [f]


def expected_files(path: str | Path, **options: Any) -> list[Path]:
    return [_file(Path(path))]


def _get(obj, name: str, where: str):
    try:
        return getattr(obj, name)
    except AttributeError:
        fields = getattr(obj, "_fieldnames", None)
        raise ValueError(f"{where}: no field {name!r} (fields: {fields}).") from None


def _cells(x) -> list:
    """A MATLAB cell array (squeezed by scipy) as a Python list."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return list(x.ravel())
    return [x]


def load(file: str | Path):
    """The ``DREAMER`` struct (``scipy.io.loadmat`` with ``struct_as_record=False``)."""
    import scipy.io

    file = Path(file)
    try:
        mat = scipy.io.loadmat(file, squeeze_me=True, struct_as_record=False)
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e
    if "DREAMER" not in mat:
        raise ValueError(f"{file}: no variable 'DREAMER' (found "
                         f"{sorted(k for k in mat if not k.startswith('__'))}).")
    return mat["DREAMER"]


def read_file(file: str | Path, *, target: str = "valence", threshold: float = 3.0,
              include_baseline: bool = False, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """Every stimulus of every subject, one Recording each.

    Parameters
    ----------
    target : {"valence", "arousal", "dominance"}
    threshold : float
        High (1) when the score is > ``threshold`` (scores are 1-5).
    include_baseline : bool
        Also yield each clip's baseline as an unlabelled Recording.
    """
    check_option("target", target, TARGETS)
    file = Path(file)
    d = load(file)
    sfreq = float(_get(d, "EEG_SamplingRate", str(file)))
    names = [str(n) for n in _cells(_get(d, "EEG_Electrodes", str(file)))]
    canon = [normalize_channel_name(n) for n in names]
    if canon != list(DREAMER_14):
        raise ValueError(f"{file}: EEG_Electrodes {names}, expected {list(DREAMER_14)}.")
    label_names = {0: f"low_{target}", 1: f"high_{target}"}
    recs = []
    for s, subj in enumerate(_cells(_get(d, "Data", str(file))), start=1):
        where = f"{file}: Data{{{s}}}"
        eeg = _get(subj, "EEG", where)
        stimuli = _cells(_get(eeg, "stimuli", where + ".EEG"))
        baseline = _cells(_get(eeg, "baseline", where + ".EEG"))
        scores = np.atleast_1d(np.asarray(_get(subj, _SCORE[target], where), float))
        all_scores = {t: np.atleast_1d(np.asarray(_get(subj, _SCORE[t], where), float))
                      for t in TARGETS}
        if not (len(stimuli) == len(baseline) == len(scores)):
            raise ValueError(f"{where}: {len(stimuli)} stimuli, {len(baseline)} baselines and "
                             f"{len(scores)} {_SCORE[target]} values; they must match.")
        info = {"age": str(getattr(subj, "Age", "")), "gender": str(getattr(subj, "Gender", ""))}
        for k, (x, b) in enumerate(zip(stimuli, baseline), start=1):
            parts = [(x, f"clip{k:02d}", int(scores[k - 1] > threshold))]
            if include_baseline:
                parts.append((b, f"clip{k:02d}_baseline", None))
            for arr, rec_id, y in parts:
                arr = np.asarray(arr, float)
                if arr.ndim != 2 or arr.shape[1] != len(names):
                    raise ValueError(f"{where}.EEG {rec_id}: shape {arr.shape}, expected "
                                     f"(n_samples, {len(names)}).")
                dur = arr.shape[0] / sfreq
                events = make_events([0.0], dur, -1 if y is None else y,
                                     ["baseline" if y is None else label_names[y]])
                recs.append(Recording(
                    data=arr.T * 1e-6, sfreq=sfreq, ch_names=list(DREAMER_14),  # (C, T) volts
                    dataset="dreamer", subject=f"{s:02d}", session="0", recording=rec_id,
                    events=events, label=y, label_names=label_names,
                    meta={"source": f"{file}:Data{{{s}}}:{rec_id}", "clip": k,
                          "scores": {t: float(v[k - 1]) for t, v in all_scores.items()},
                          "threshold": threshold, "subject_info": info,
                          "original_units": "uV"}))
    return finalize(recs, nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Lists the variables of the MAT file without loading the samples."""
    import scipy.io

    try:
        vars_ = scipy.io.whosmat(file)
    except Exception as e:
        raise ValueError(f"{file}: not a readable MATLAB file ({type(e).__name__}: {e}).") from e
    names = [v[0] for v in vars_]
    if "DREAMER" not in names:
        raise ValueError(f"{file}: no variable 'DREAMER' (found {names}).")
    return "variable DREAMER present (contents checked when read)"
