"""DEAP emotion dataset, the ``data_preprocessed_python`` release.

Layout of the release: ``data_preprocessed_python/s01.dat`` ... ``s32.dat``, each a Python-2
``cPickle`` of a dict with ``data`` (40 trials x 40 channels x 8064 samples, float64) and
``labels`` (40 x 4, float64: valence, arousal, dominance, liking on 1-9). Samples are at 128 Hz
(downsampled, EOG removed, 4-45 Hz band-passed, common average reference); each trial is 63 s:
a 3 s pre-trial baseline then the 60 s music video. Channels 1-32 are EEG in the Geneva order
(:data:`workbench.channels.DEAP_32`, microvolts); 33-40 are hEOG, vEOG, zEMG, tEMG (microvolts),
GSR, respiration belt, plethysmograph and temperature (their own units, typed ``misc``).

Each trial becomes one Recording (``recording="trial01"`` ...): EEG/EOG/EMG converted to volts,
the peripheral ``misc`` channels kept in their file units (``meta["units"]``). The label is
binary high (1) / low (0) on the ``target`` rating: high when the rating is strictly greater than
``threshold`` (5 by default). Events: the baseline (0-3 s, label -1) and the video (3-63 s,
the label). All four ratings are in ``meta["ratings"]``.

The ``.dat`` files are pickles, and unpickling runs whatever callables a file names. They are read
with :class:`SafeUnpickler`, which rebuilds only numpy arrays/dtypes and plain containers and
refuses any other global (a crafted file that tries ``os.system`` fails with
``pickle.UnpicklingError`` before anything runs).

References
----------
Koelstra S. et al. (2012). DEAP: a database for emotion analysis using physiological signals.
IEEE Trans. Affective Computing 3(1).
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...channels import DEAP_32
from ...utils import check_option
from ..recording import Recording, make_events
from .generic import DatasetInfo, finalize

SFREQ = 128.0
BASELINE_S = 3.0
TARGETS = ("valence", "arousal", "dominance", "liking")
PERIPHERAL = ("hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration", "Plethysmograph",
              "Temperature")
PERIPHERAL_TYPES = ("eog", "eog", "emg", "emg", "misc", "misc", "misc", "misc")
N_SUBJECTS = 32
_NAME = re.compile(r"^s(\d{2})\.dat$")

INFO = DatasetInfo(
    name="deap",
    description="DEAP: 32 subjects x 40 music videos, 32 EEG + 8 peripheral ch, 128 Hz; "
                "binary high/low valence (or arousal, dominance, liking).",
    label_names={0: "low_valence", 1: "high_valence"},
    sfreq=SFREQ,
    channels=DEAP_32,
    public=False,
    licence="DEAP end-user licence agreement (academic research)",
    url="https://www.eecs.qmul.ac.uk/mmv/datasets/deap/",
    request_url="https://www.eecs.qmul.ac.uk/mmv/datasets/deap/download.html",
    download_hint="Sign and return the EULA on the DEAP site; you receive a password for "
                  "data_preprocessed_python.zip.",
    layout="PATH/data_preprocessed_python/s01.dat ... s32.dat (Python-2 pickles of "
           "{'data': 40 x 40 x 8064, 'labels': 40 x 4}); PATH may also be that folder itself.",
    citation="Koelstra et al. (2012) IEEE TAC 3(1)",
)


# ----------------------------------------------------------------------------- safe unpickling
def _numpy_global(name: str):
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: __import__("codecs").encode,  # bytes in Python-3 protocol 2
}


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle named a callable outside the allowed numpy constructors."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, dtypes, scalars and plain containers.

    Every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
    ``pickle.UnpicklingError`` naming it, before it could be called.
    """

    def find_class(self, module: str, name: str):
        make = _ALLOWED.get((module, name))
        if make is None:
            raise ForbiddenGlobal(
                f"refusing to load global '{module}.{name}': DEAP files may only contain numpy "
                "arrays and plain containers")
        return make()


def safe_load(file: str | Path) -> Any:
    """Load a (Python-2 or 3) pickle of numpy arrays with :class:`SafeUnpickler`."""
    file = Path(file)
    data = file.read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except ForbiddenGlobal as e:
        raise ForbiddenGlobal(f"{file}: {e}.") from e
    except Exception as e:  # truncated or corrupt stream
        raise ValueError(f"{file}: not a readable DEAP pickle ({type(e).__name__}: {e}).") from e


# ----------------------------------------------------------------------------- reader
def _folder(path: Path) -> Path:
    sub = path / "data_preprocessed_python"
    return sub if sub.is_dir() else path


def file_subject(file: str | Path) -> str:
    m = _NAME.match(Path(file).name)
    if not m:
        raise ValueError(f"{file}: not a DEAP file name (expected sNN.dat).")
    return f"s{m.group(1)}"


def list_files(path: str | Path, **options: Any) -> list[Path]:
    folder = _folder(Path(path))
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: no such folder. Expected layout: {INFO.layout}")
    files = sorted(p for p in folder.iterdir() if _NAME.match(p.name))
    if not files:
        raise FileNotFoundError(f"{folder}: no sNN.dat files. Expected layout: {INFO.layout}")
    return files


def expected_files(path: str | Path, **options: Any) -> list[Path]:
    folder = _folder(Path(path))
    return [folder / f"s{s:02d}.dat" for s in range(1, N_SUBJECTS + 1)]


def load_arrays(file: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (trials, 40, T) and ``labels`` (trials, 4) of one file, validated."""
    file = Path(file)
    obj = safe_load(file)
    if not isinstance(obj, dict) or not {"data", "labels"} <= set(obj):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{file}: expected a dict with 'data' and 'labels', got {keys}.")
    data, labels = obj["data"], obj["labels"]
    if not (isinstance(data, np.ndarray) and isinstance(labels, np.ndarray)):
        raise ValueError(f"{file}: 'data' and 'labels' must be numpy arrays.")
    if data.dtype.kind not in "fiu" or labels.dtype.kind not in "fiu":
        raise ValueError(f"{file}: numeric arrays expected, got {data.dtype} / {labels.dtype}.")
    if data.ndim != 3 or data.shape[1] != 40:
        raise ValueError(f"{file}: 'data' has shape {data.shape}, expected (trials, 40, samples).")
    if labels.ndim != 2 or labels.shape[1] != 4:
        raise ValueError(f"{file}: 'labels' has shape {labels.shape}, expected (trials, 4).")
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{file}: {data.shape[0]} trials in 'data' but {labels.shape[0]} rows "
                         "in 'labels'; they must match.")
    return data, labels


def read_file(file: str | Path, *, target: str = "valence", threshold: float = 5.0,
              include_peripheral: bool = True, nonfinite: str = "raise", flat: str = "flag"
              ) -> list[Recording]:
    """The 40 trials of one subject, one Recording each, labelled high/low on ``target``.

    Parameters
    ----------
    target : {"valence", "arousal", "dominance", "liking"}
    threshold : float
        High (1) when the rating is > ``threshold``, low (0) otherwise.
    include_peripheral : bool
        Keep the 8 peripheral channels (typed eog/emg/misc); False keeps the 32 EEG channels.
    """
    check_option("target", target, TARGETS)
    file = Path(file)
    subject = file_subject(file)
    data, ratings = load_arrays(file)
    col = TARGETS.index(target)
    names = {0: f"low_{target}", 1: f"high_{target}"}
    n_ch = 40 if include_peripheral else 32
    ch_names = list(DEAP_32) + list(PERIPHERAL)
    ch_types = ["eeg"] * 32 + list(PERIPHERAL_TYPES)
    scale = np.array([1e-6 if t != "misc" else 1.0 for t in ch_types])[:n_ch, None]
    units = {n: ("uV -> V" if t != "misc" else "file units") for n, t in zip(ch_names, ch_types)}
    recs = []
    for i in range(data.shape[0]):
        y = int(ratings[i, col] > threshold)
        dur = data.shape[2] / SFREQ
        events = make_events([0.0, BASELINE_S], [BASELINE_S, dur - BASELINE_S], [-1, y],
                             ["baseline", names[y]])
        recs.append(Recording(
            data=data[i, :n_ch] * scale, sfreq=SFREQ, ch_names=ch_names[:n_ch], dataset="deap",
            subject=subject, session="0", recording=f"trial{i + 1:02d}",
            ch_types=ch_types[:n_ch], events=events, label=y, label_names=names,
            meta={"source": f"{file}:trial{i + 1}", "trial": i + 1,
                  "ratings": dict(zip(TARGETS, map(float, ratings[i]))),
                  "threshold": threshold, "baseline_s": BASELINE_S,
                  "units": {k: units[k] for k in ch_names[:n_ch]}}))
    return finalize(recs, nonfinite=nonfinite, flat=flat)


def check_file(file: str | Path, **options: Any) -> str:
    """Unpickles safely and checks names, shapes and the trial/label counts."""
    data, labels = load_arrays(file)
    return f"{data.shape[0]} trials, {data.shape[1]} channels, {data.shape[2]} samples"
