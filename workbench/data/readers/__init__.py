"""Dataset readers: files on disk -> :class:`~workbench.data.recording.Recording` objects.

Every reader module exposes ``INFO`` (a :class:`DatasetInfo`), ``list_files(path, **options)``
(the units a batch iterates over; a clear error naming the expected layout when the folder is
wrong), ``read_file(file, **options) -> list[Recording]`` and, where it can, ``file_subject``,
``expected_files``, ``check_file`` (header-only) and ``download``. This module is the one entry
point: :func:`read_dataset` / :func:`iter_dataset` run a reader over a folder, keep going past bad
files and report them; :func:`check_dataset` validates a folder (``workbench data check``);
:func:`download_dataset` fetches public data (``workbench data download``) and explains where to
request licence-gated data.

Readers do no preprocessing: data are in volts, channels normalised and typed, labels attached.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pandas as pd

from ...utils import check_option, get_logger
from ..recording import Recording
from . import (
    bcic2a,
    chbmit,
    deap,
    device_csv,
    dreamer,
    eegmat,
    eegmmidb,
    generic,
    seed,
    sleep_edf,
    tuh,
    uci_eye_state,
)
from .generic import DatasetInfo

log = get_logger("readers")

READERS: dict[str, ModuleType | SimpleNamespace] = {
    "seed": seed,
    "deap": deap,
    "dreamer": dreamer,
    "eegmmidb": eegmmidb,
    "eegmat": eegmat,
    "bcic2a": bcic2a,
    "tuab": tuh.TUAB,
    "tuev": tuh.TUEV,
    "sleep_edf": sleep_edf,
    "chbmit": chbmit,
    "uci_eye_state": uci_eye_state,
    "generic": generic,
    "csv": device_csv,
}
"""Registry name -> reader (a module, or a namespace with the same attributes for TUAB/TUEV)."""

ALIASES: dict[str, str] = {
    "physionet_mi": "eegmmidb", "physionet-mi": "eegmmidb", "eegbci": "eegmmidb",
    "physionet_ma": "eegmat", "physionet-ma": "eegmat",
    "bnci2014_001": "bcic2a", "bnci2014001": "bcic2a", "bciciv2a": "bcic2a",
    "sleep_physionet": "sleep_edf", "sleep-edf": "sleep_edf", "sleepedf": "sleep_edf",
    "chb-mit": "chbmit", "eye_state": "uci_eye_state",
    "tsv": "csv", "muse": "csv", "openbci": "csv", "emotiv": "csv",
}

__all__ = ["READERS", "DatasetInfo", "ReadResult", "DatasetNotDownloadable", "get_reader",
           "read_dataset", "iter_dataset", "check_dataset", "download_dataset"]


class DatasetNotDownloadable(RuntimeError):
    """The dataset is licence-gated (or has no fetcher): the message says where to get it."""


def get_reader(name: str) -> ModuleType | SimpleNamespace:
    """The reader registered as ``name`` (or an alias); ``ValueError`` listing the names."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in READERS:
        raise ValueError(f"Invalid value for the 'name' parameter: unknown dataset {name!r}; "
                         f"expected one of {sorted(READERS)} (aliases: {sorted(ALIASES)}).")
    return READERS[key]


@dataclass
class ReadResult:
    """What :func:`read_dataset` returns: the good recordings and one row per failed file."""

    recordings: list[Recording]
    failures: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["file", "error"]))
    n_files: int = 0

    @property
    def sfreqs(self) -> dict[float, int]:
        """Sampling rate -> number of recordings at that rate."""
        out: dict[float, int] = {}
        for r in self.recordings:
            out[r.sfreq] = out.get(r.sfreq, 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.recordings)


def _digits(s: Any) -> int | None:
    m = re.findall(r"\d+", str(s))
    return int(m[-1]) if m else None


def subject_matches(subject: str, wanted: Iterable[Any]) -> bool:
    """True when ``subject`` is one of ``wanted``: the same string, or the same number
    (``1`` matches ``"S001"``, ``"chb01"``, ``"s01"``)."""
    for w in wanted:
        if str(w).lower() == str(subject).lower():
            return True
        if isinstance(w, int) or str(w).isdigit():
            d = _digits(subject)
            if d is not None and d == int(w) and re.fullmatch(r"[A-Za-z]*\d+", str(subject)):
                return True
    return False


def _select(reader, files: list[Path], subjects) -> list[Path]:
    if subjects is None or not hasattr(reader, "file_subject"):
        return files
    out = []
    for f in files:
        try:
            sub = reader.file_subject(f)
        except ValueError:
            out.append(f)  # let read_file report the bad name
            continue
        if sub is None or subject_matches(sub, subjects):
            out.append(f)
    return out


def check_reader_options(name: str, reader, options: dict) -> None:
    """Refuse options the reader does not take (else every file would fail the same way):
    ``TypeError`` naming them and the accepted ones."""
    params = inspect.signature(reader.read_file).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in list(params)[1:]]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise TypeError(f"{name}: unknown option(s) {bad}; this reader accepts {allowed}.")


def _plan(name: str, path: str | os.PathLike, on_error: str, on_rate_mismatch: str,
          subjects: Iterable[Any] | None, options: dict[str, Any]):
    """Check the arguments and list the files to read: ``(reader, files, subjects)``."""
    check_option("on_error", on_error, ("skip", "raise"))
    check_option("on_rate_mismatch", on_rate_mismatch, ("warn", "raise"))
    reader = get_reader(name)
    check_reader_options(name, reader, options)
    subjects = None if subjects is None else list(subjects)
    return reader, _select(reader, reader.list_files(Path(path), **options), subjects), subjects


def iter_dataset(name: str, path: str | os.PathLike, *, on_error: str = "skip",
                 subjects: Iterable[Any] | None = None, on_rate_mismatch: str = "warn",
                 failures: list[dict] | None = None, **options: Any) -> Iterator[Recording]:
    """Yield the Recordings of a dataset file by file.

    The options and the folder layout are checked when this is called (errors are raised at
    once); files are read lazily as the returned iterator is consumed.

    Parameters
    ----------
    name : str
        Registry name (see :data:`READERS`).
    path : path
        The dataset folder (or file, for single-file datasets).
    on_error : {"skip", "raise"}
        ``skip`` logs each bad file with the reason, appends ``{"file", "error"}`` to
        ``failures`` and goes on; ``raise`` re-raises (the message names the file).
    subjects : iterable, optional
        Only these subjects (strings, or numbers matching the digits of the subject id).
    on_rate_mismatch : {"warn", "raise"}
        Recordings at a rate different from the first one's are logged (``warn``; a store then
        needs a target rate: recipe ``resample`` or ``load_store(sfreq=...)``), or reported as failures naming the expected and actual rate (``raise``), so
        that one call never mixes rates silently. (Channels at different rates *inside* one EDF
        are the readers' ``mixed_rates`` option.)
    failures : list, optional
        Receives one dict per failed file.
    **options
        Passed to the reader's ``list_files`` and ``read_file`` (e.g. ``task="4class"``).
    """
    reader, files, subjects = _plan(name, path, on_error, on_rate_mismatch, subjects, options)
    failures = failures if failures is not None else []
    failures += _label_failures(reader, path, files, options)
    return _read_files(name, reader, files, on_error=on_error, subjects=subjects,
                       on_rate_mismatch=on_rate_mismatch, failures=failures, options=options)


def _label_failures(reader, path, files: list[Path], options: dict) -> list[dict]:
    """Labels-table rows that name no file, as failure rows (logged)."""
    check = getattr(reader, "label_problems", None)
    if check is None or options.get("labels") is None:
        return []
    rows = [{"file": f, "error": m} for f, m in check(Path(path), files=files, durations=False,
                                                        **options)]
    for r in rows:
        log.warning("labels table: %s", r["error"])
    return rows


def _read_files(name: str, reader, files: list[Path], *, on_error: str, subjects,
                on_rate_mismatch: str, failures: list[dict], options: dict
                ) -> Iterator[Recording]:
    first_rate: float | None = None
    warned = False
    for file in files:
        try:
            recs = reader.read_file(file, **options)
            if subjects is not None:
                recs = [r for r in recs if subject_matches(r.subject, subjects)]
            for r in recs:
                if first_rate is None:
                    first_rate = r.sfreq
                elif r.sfreq != first_rate:
                    msg = (f"{file}: sampling rate {r.sfreq:g} Hz differs from the "
                           f"{first_rate:g} Hz of the first recording of {name}")
                    if on_rate_mismatch == "raise":
                        raise ValueError(msg + " (on_rate_mismatch='raise').")
                    if not warned:
                        log.warning("%s; a store holds one rate: set a target rate (recipe "
                                    "'resample', `workbench preprocess --resample HZ`, "
                                    "load_store(sfreq=...)).", msg)
                        warned = True
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            if on_error == "raise":
                raise
            err = f"{type(e).__name__}: {e}"
            if str(file) not in err:
                err = f"{file}: {err}"
            log.warning("skipping %s: %s", file, err)
            failures.append({"file": str(file), "error": err})
            continue
        yield from recs


def read_dataset(name: str, path: str | os.PathLike, *, on_error: str = "skip",
                 subjects: Iterable[Any] | None = None, on_rate_mismatch: str = "warn",
                 **options: Any) -> ReadResult:
    """Read a whole dataset; bad files are skipped and reported, good ones always kept.

    See :func:`iter_dataset` for the parameters. Returns a :class:`ReadResult` with the
    recordings and a ``failures`` table (``file``, ``error``).
    """
    reader, files, subjects = _plan(name, path, on_error, on_rate_mismatch, subjects, options)
    failures: list[dict] = _label_failures(reader, path, files, options)
    recs = list(_read_files(name, reader, files, on_error=on_error, subjects=subjects,
                            on_rate_mismatch=on_rate_mismatch, failures=failures,
                            options=options))
    if failures:
        log.warning("%s: %d of %d files failed; see ReadResult.failures.", name, len(failures),
                    len(files))
    return ReadResult(recs, pd.DataFrame(failures, columns=["file", "error"]), len(files))


def check_dataset(name: str, path: str | os.PathLike, *, subjects: Iterable[Any] | None = None,
                  **options: Any) -> pd.DataFrame:
    """Validate a dataset folder without reading it all.

    One row per file found (``ok`` or ``unreadable`` with the reason; headers only where the
    format allows) and per expected file that is absent (``missing``); a subject whose files are
    all absent is one row; with a ``labels`` table (generic, csv), one row (``labels``) per
    table entry naming no file and per file whose table events lie outside the recording.
    Columns: ``file``, ``status``, ``message``.
    """
    reader = get_reader(name)
    path = Path(path)
    subjects = None if subjects is None else list(subjects)
    options = {**getattr(reader, "CHECK_DEFAULTS", {}), **options}
    rows: list[dict] = []
    try:
        files = _select(reader, reader.list_files(path, **options), subjects)
    except (FileNotFoundError, ValueError) as e:
        return pd.DataFrame([{"file": str(path), "status": "missing", "message": str(e)}])
    checker = getattr(reader, "check_file", None)
    for f in files:
        try:
            msg = (checker(f, **options) if checker
                   else f"{len(reader.read_file(f, **options))} recordings")
            rows.append({"file": str(f), "status": "ok", "message": msg})
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            rows.append({"file": str(f), "status": "unreadable",
                         "message": f"{type(e).__name__}: {e}"})
    if hasattr(reader, "expected_files"):
        expected = _select(reader, reader.expected_files(path, **options), subjects)
        missing = [p for p in expected if not p.exists()]
        by_subject: dict[str, list[Path]] = {}
        for p in expected:
            sub = reader.file_subject(p) if hasattr(reader, "file_subject") else None
            by_subject.setdefault(str(sub), []).append(p)
        missing_set = set(missing)
        for sub, plist in by_subject.items():
            gone = [p for p in plist if p in missing_set]
            if gone and len(gone) == len(plist) and len(plist) > 1:
                rows.append({"file": str(plist[0].parent / f"{sub}*"), "status": "missing",
                             "message": f"subject {sub}: all {len(plist)} expected files absent"})
            else:
                rows += [{"file": str(p), "status": "missing", "message": "expected, not found"}
                         for p in gone]
    if hasattr(reader, "layout_problems"):
        rows += [{"file": f, "status": "missing", "message": m}
                 for f, m in reader.layout_problems(path, **options)]
    if hasattr(reader, "label_problems") and options.get("labels") is not None:
        rows += [{"file": f, "status": "labels", "message": m}
                 for f, m in reader.label_problems(path, files=files, **options)]
    return pd.DataFrame(rows, columns=["file", "status", "message"])


def download_dataset(name: str, path: str | os.PathLike, subjects: Iterable[Any] | None = None
                     ) -> Path:
    """Download a public dataset into ``path`` with the library that already fetches it.

    ``eegmmidb`` (MNE eegbci), ``sleep_edf`` (MNE sleep_physionet), ``bcic2a`` (MOABB, if
    installed), ``eegmat``, ``chbmit`` and ``uci_eye_state`` (pooch, from PhysioNet / UCI).
    Licence-gated datasets (SEED, DEAP, DREAMER, TUAB, TUEV) raise
    :class:`DatasetNotDownloadable` naming where to request them and the layout to unpack into.
    Returns the folder to pass to :func:`read_dataset`.
    """
    reader = get_reader(name)
    info: DatasetInfo = reader.INFO
    if not hasattr(reader, "download"):
        how = (f"request access at {info.request_url}" if not info.public else
               f"get it from {info.request_url or info.url or 'its provider'}")
        raise DatasetNotDownloadable(
            f"{info.name} cannot be downloaded by the workbench ({info.licence or 'no fetcher'}): "
            f"{how}, then place the files as\n  {info.layout}\nand validate the folder with "
            f"`workbench data check {info.name} PATH`.")
    return Path(reader.download(Path(path), subjects))
