"""Channel names, the Unified Channel Schema (UCS) and electrode positions.

Every reader passes its raw channel names through :func:`normalize_channel_name`, so that
``"EEG Fp1-REF"``, ``"FP1"`` and ``"Fp1."`` all become the canonical 10-05 name ``"Fp1"`` and the
old 10-20 names ``T3/T4/T5/T6`` become ``T7/T8/P7/P8``. A :class:`ChannelVocabulary` maps the
canonical names of one or several datasets to stable integer ids, the indices of the learnable
channel embedding of the One Model for All ART encoder.

References
----------
Oostenveld R., Praamstra P. (2001). The five percent electrode system for high-resolution EEG
and ERP measurements. Clin. Neurophysiol. 112(4).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .utils import atomic_write_json

# Old 10-20 names and common spellings -> 10-05 names (keys are upper case).
ALIASES: dict[str, str] = {
    "T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8",
    "M1": "TP9", "M2": "TP10",
}
# Suffixes that name a reference, not a second electrode (TUH "-REF", "-LE"; "-AR", "-AVG").
_REFERENCE_SUFFIXES = {"REF", "LE", "AR", "AVG", "AV", "CAR"}
# Non-10-05 electrodes found in the datasets: the two cerebellar SEED electrodes. Their position
# is approximated by the 10-05 inion-row electrodes I1/I2 just below O1/O2.
EXTRA_ELECTRODES: dict[str, str] = {"CB1": "I1", "CB2": "I2"}

SEED_62: tuple[str, ...] = (
    "Fp1", "Fpz", "Fp2", "AF3", "AF4", "F7", "F5", "F3", "F1", "Fz", "F2", "F4", "F6", "F8",
    "FT7", "FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3", "C1", "Cz",
    "C2", "C4", "C6", "T8", "TP7", "CP5", "CP3", "CP1", "CPz", "CP2", "CP4", "CP6", "TP8", "P7",
    "P5", "P3", "P1", "Pz", "P2", "P4", "P6", "P8", "PO7", "PO5", "PO3", "POz", "PO4", "PO6",
    "PO8", "CB1", "O1", "Oz", "O2", "CB2",
)
"""SEED / SEED-IV 62-channel ESI NeuroScan layout, in the order of the released ``.mat`` files."""

DEAP_32: tuple[str, ...] = (
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3", "O1",
    "Oz", "Pz", "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8", "CP6", "CP2",
    "P4", "P8", "PO4", "O2",
)
"""DEAP 32-channel Biosemi layout, in the Geneva order of ``data_preprocessed_python``."""

DREAMER_14: tuple[str, ...] = (
    "AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4",
)
"""DREAMER 14-channel Emotiv EPOC layout, in the order of ``DREAMER.mat``."""

TCP_BIPOLAR_22: tuple[tuple[str, str], ...] = (
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("A1", "T7"), ("T7", "C3"), ("C3", "Cz"), ("Cz", "C4"), ("C4", "T8"), ("T8", "A2"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
)
"""The TUH Temporal Central Parasagittal (TCP) montage used for TUAB/TUEV (22 derivations)."""

BIPOLAR_16: tuple[tuple[str, str], ...] = TCP_BIPOLAR_22[:8] + TCP_BIPOLAR_22[14:]
"""The 16 longitudinal ("double banana") derivations used by BIOT / EEGM2 on TUAB."""


@functools.lru_cache(maxsize=1)
def _canonical_names() -> tuple[str, ...]:
    import mne

    names = mne.channels.make_standard_montage("colin27_1005").ch_names
    names = [n for n in names if n.upper() not in ALIASES]
    # (the montage may already hold A1/A2: keep every name once, in montage order)
    return tuple(dict.fromkeys([*names, *EXTRA_ELECTRODES, "A1", "A2"]))


def canonical_channel_names() -> tuple[str, ...]:
    """Every canonical channel name the workbench knows (10-05 positions, the extra electrodes,
    A1/A2), each once, in montage order: e.g. a vocabulary that any montage fits into."""
    return _canonical_names()


@functools.lru_cache(maxsize=1)
def _canonical_lookup() -> dict[str, str]:
    return {n.upper(): n for n in _canonical_names()}


_PREFIX = re.compile(r"^(EEG|EOG|ECG|EMG)[\s_:]+", re.IGNORECASE)


def _strip(name: str) -> str:
    s = _PREFIX.sub("", str(name).strip()).strip()
    s = s.rstrip(".").strip()
    if "-" in s:
        first, _, second = s.partition("-")
        if second.strip().upper() in _REFERENCE_SUFFIXES:
            s = first.strip()
    return s


def normalize_channel_name(name: str, *, strict: bool = False) -> str | None:
    """Return the canonical 10-05 name of ``name``.

    Handles case (``FP1``), reference suffixes (``EEG Fp1-REF``, ``EEG T3-LE``), trailing dots
    (EEGMMIDB ``Fc5.``) and old names (``T3`` -> ``T7``).

    Parameters
    ----------
    name : str
        A raw channel name.
    strict : bool
        Raise ``ValueError`` for a name that is not an EEG electrode of the 10-05 system instead
        of returning ``None``.
    """
    key = _strip(name).upper()
    key = ALIASES.get(key, key).upper()
    canon = _canonical_lookup().get(key)
    if canon is None and strict:
        raise ValueError(f"Unknown EEG channel name {name!r}: it is not a 10-05 electrode (after "
                         f"normalisation: {_strip(name)!r}). Mark it as a non-EEG channel or map "
                         "it explicitly.")
    return canon


def normalize_channel_names(names: Iterable[str], *, strict: bool = True) -> list[str]:
    """Normalise a list of names; with ``strict`` an unknown name raises naming the channel."""
    out = [normalize_channel_name(n, strict=strict) for n in names]
    canon = [o for o in out if o is not None]
    dup = sorted({c for c in canon if canon.count(c) > 1})
    if dup:
        raise ValueError(f"Channel names {dup} occur more than once after normalisation of "
                         f"{list(names)}.")
    return out  # type: ignore[return-value]


def _sort_key(name: str) -> tuple[int, str]:
    order = {n: i for i, n in enumerate(_canonical_names())}
    return (order.get(name, len(order)), name)


class ChannelVocabulary:
    """An ordered set of canonical channel names with stable integer ids.

    Ids follow the order of the 10-05 system (not the order datasets were given), so the same
    set of channels always gets the same ids. :meth:`union` builds the Unified Channel Schema
    (UCS) of the One Model for All paper; :meth:`intersection` the alternative it compares with.

    Examples
    --------
    >>> ucs = ChannelVocabulary.union(SEED_62, DEAP_32, DREAMER_14)
    >>> len(ucs)
    62
    """

    def __init__(self, names: Sequence[str]):
        canon = normalize_channel_names(names, strict=True)
        self.names: tuple[str, ...] = tuple(sorted(set(canon), key=_sort_key))
        self._index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def union(cls, *channel_lists: Sequence[str]) -> ChannelVocabulary:
        """The UCS: every channel that occurs in any of the lists."""
        names: set[str] = set()
        for lst in channel_lists:
            names.update(normalize_channel_names(lst, strict=True))
        return cls(sorted(names))

    @classmethod
    def intersection(cls, *channel_lists: Sequence[str]) -> ChannelVocabulary:
        """Only the channels that occur in every list."""
        if not channel_lists:
            raise ValueError("ChannelVocabulary.intersection needs at least one channel list.")
        sets = [set(normalize_channel_names(lst, strict=True)) for lst in channel_lists]
        return cls(sorted(set.intersection(*sets)))

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return normalize_channel_name(name) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelVocabulary) and self.names == other.names

    def __repr__(self) -> str:
        return f"ChannelVocabulary({len(self)} channels: {', '.join(self.names[:6])}...)"

    def index(self, name: str) -> int:
        """Id of one channel; ``KeyError`` naming the channel if it is not in the vocabulary."""
        canon = normalize_channel_name(name)
        if canon not in self._index:
            raise KeyError(f"Channel {name!r} is not in this vocabulary of {len(self)} channels "
                           f"({', '.join(self.names)}).")
        return self._index[canon]

    def ids(self, names: Sequence[str]) -> np.ndarray:
        """Ids of several channels as an int64 array."""
        return np.array([self.index(n) for n in names], dtype=np.int64)

    def select(self, names: Sequence[str]) -> np.ndarray:
        """Indices into ``names`` of the channels that are in this vocabulary (for intersection)."""
        return np.array([i for i, n in enumerate(names) if normalize_channel_name(n) in self._index],
                        dtype=np.int64)

    def to_dict(self) -> dict:
        return {"names": list(self.names)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the vocabulary as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChannelVocabulary:
        """Read a vocabulary written by :meth:`save`; the ids are preserved exactly."""
        data = json.loads(Path(path).read_text())
        if "names" not in data:
            raise ValueError(f"{path}: not a ChannelVocabulary file (no 'names' field).")
        vocab = cls(data["names"])
        if list(vocab.names) != list(data["names"]):
            raise ValueError(f"{path}: channel order differs from the canonical order; the ids "
                             "would change.")
        return vocab


@functools.lru_cache(maxsize=4)
def _montage_positions(montage: str) -> dict[str, np.ndarray]:
    import mne

    pos = mne.channels.make_standard_montage(montage).get_positions()["ch_pos"]
    out = {normalize_channel_name(k) or k: np.asarray(v, float) for k, v in pos.items()}
    for extra, proxy in EXTRA_ELECTRODES.items():
        if proxy in out:
            out[extra] = out[proxy]
    return out


def channel_positions(names: Sequence[str], montage: str = "colin27_1005") -> np.ndarray:
    """3-D head positions (metres, MNE head frame) of ``names``, shape ``(C, 3)``.

    Uses MNE's ``colin27_1005`` template by default (``standard_1005`` is deprecated in MNE
    1.13). The SEED electrodes CB1/CB2 are placed at I1/I2.
    """
    pos = _montage_positions(montage)
    out = []
    for n in names:
        canon = normalize_channel_name(n)
        if canon not in pos:
            raise ValueError(f"No position for channel {n!r} in montage {montage!r}.")
        out.append(pos[canon])
    return np.stack(out)


def make_montage(names: Sequence[str], montage: str = "colin27_1005"):
    """An ``mne.channels.DigMontage`` for ``names`` (canonical names as keys)."""
    import mne

    xyz = channel_positions(names, montage)
    canon = [normalize_channel_name(n) for n in names]
    return mne.channels.make_dig_montage(ch_pos=dict(zip(canon, xyz)), coord_frame="head")


def bipolar_derivation(data: np.ndarray, ch_names: Sequence[str],
                       pairs: Sequence[tuple[str, str]] = TCP_BIPOLAR_22
                       ) -> tuple[np.ndarray, list[str]]:
    """Bipolar derivations ``anode - cathode`` from referential data.

    Parameters
    ----------
    data : ndarray, shape (C, T)
    ch_names : list of str
        Names of the rows of ``data`` (any spelling :func:`normalize_channel_name` accepts).
    pairs : sequence of (anode, cathode)
        Defaults to the TUH TCP montage.

    Returns
    -------
    bipolar : ndarray, shape (len(pairs), T)
    names : list of str, ``"Fp1-F7"`` style.
    """
    canon = [normalize_channel_name(n) for n in ch_names]
    idx = {c: i for i, c in enumerate(canon) if c is not None}
    missing = sorted({e for p in pairs for e in p if e not in idx})
    if missing:
        raise ValueError(f"Bipolar montage needs channels {missing}, which are not among "
                         f"{list(ch_names)}.")
    a = np.array([idx[p[0]] for p in pairs])
    c = np.array([idx[p[1]] for p in pairs])
    return data[a] - data[c], [f"{p[0]}-{p[1]}" for p in pairs]


SAMPLING_RATES: tuple[float, ...] = (128.0, 200.0, 160.0, 250.0, 256.0, 500.0, 512.0, 1000.0,
                                      100.0)
"""Global sampling-rate vocabulary: ``rate_index`` gives the id fed to rate embeddings (E_rate).
The first two are the rates of the One Model for All paper (DEAP/DREAMER 128 Hz, SEED 200 Hz);
new rates are appended (100 Hz: the benchmark suites), so the ids of the others never change."""


def rate_index(sfreq: float) -> int:
    """Id of ``sfreq`` in :data:`SAMPLING_RATES`; ``ValueError`` naming the rate if absent."""
    for i, r in enumerate(SAMPLING_RATES):
        if abs(r - float(sfreq)) < 1e-6:
            return i
    raise ValueError(f"Sampling rate {sfreq} Hz is not in the rate vocabulary {SAMPLING_RATES}; "
                     "resample the data or extend workbench.channels.SAMPLING_RATES.")
