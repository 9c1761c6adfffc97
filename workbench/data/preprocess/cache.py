"""The cache of cleaned recordings: one entry per input (an in-memory recording, or a file of
a dataset, which may hold several recordings), named by a hash of the input and of the
signal-shaping config.

An entry is ``<hash>.npz`` (the samples) plus ``<hash>.json`` (everything else, written last:
its presence marks a complete entry) and, with ICA, ``<hash>-<i>-ica.fif``. Writes are atomic, so
an interrupted run resumes where it stopped; an unreadable entry is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...utils import atomic_path, atomic_write_json, get_logger, stable_hash
from ..recording import Recording
from .clean import _preprocess_logged, _source
from .recipes import PIPELINE_VERSION, PreprocessConfig

log = get_logger("preprocess")

def recording_digest(rec: Recording) -> str:
    """SHA-256 (16 hex digits) of a recording's samples and of everything a reader set."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rec.data).tobytes())
    h.update(stable_hash({
        "shape": rec.data.shape, "sfreq": rec.sfreq, "ch_names": rec.ch_names,
        "ch_types": rec.ch_types, "key": rec.key, "label": rec.label,
        "label_names": rec.label_names,
        "events": None if rec.events is None else rec.events.to_dict("list"),
    }, n=64).encode())
    return h.hexdigest()[:16]


def _rec_fields(rec: Recording) -> dict[str, Any]:
    return {"sfreq": rec.sfreq, "ch_names": rec.ch_names, "ch_types": rec.ch_types,
            "dataset": rec.dataset, "subject": rec.subject, "session": rec.session,
            "recording": rec.recording, "label": rec.label,
            "label_names": None if rec.label_names is None else
            {str(k): v for k, v in rec.label_names.items()},
            "events": None if rec.events is None else rec.events.to_dict("list"),
            "meta": json.loads(json.dumps(rec.meta, default=str))}


def _rec_from(fields: dict[str, Any], data: np.ndarray) -> Recording:
    f = dict(fields)
    if f["label_names"] is not None:
        f["label_names"] = {int(k): v for k, v in f["label_names"].items()}
    if f["events"] is not None:
        f["events"] = pd.DataFrame(f["events"])
    return Recording(data=data, **f)


@dataclass
class _Job:
    """One unit of work: an in-memory recording, or a file of a dataset (-> 1+ recordings)."""

    key: str
    hash: str
    rec: Recording | None = None
    file: str | None = None
    reader: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _cache_paths(cache_dir: Path, h: str) -> tuple[Path, Path]:
    return cache_dir / f"{h}.npz", cache_dir / f"{h}.json"


TMP_AGE_S = 3600.0  # an atomic write of an entry takes seconds: a temporary this old is stale
_TMP = re.compile(r"^\.[0-9a-f]{16}(-\d+-ica\.fif|\.npz|\.json)\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(cache_dir: Path, max_age_s: float = TMP_AGE_S) -> int:
    """Remove temporary files of entries whose write was killed (ours by name, old by age)."""
    if not cache_dir.is_dir():
        return 0
    n = 0
    now = time.time()
    for p in cache_dir.iterdir():
        try:
            if _TMP.match(p.name) and now - p.stat().st_mtime > max_age_s:
                p.unlink()
                n += 1
        except OSError:
            continue
    if n:
        log.warning("removed %d temporary files of interrupted cache writes in %s", n, cache_dir)
    return n


def _load_cached(cache_dir: Path, h: str) -> list[tuple[Recording, dict]] | None:
    npz, js = _cache_paths(cache_dir, h)
    if not (js.exists() and npz.exists()):
        return None
    try:
        entry = json.loads(js.read_text())
        with np.load(npz) as arrays:
            out = []
            for i, item in enumerate(entry["items"]):
                rep = dict(item["report"], from_cache=True)
                out.append((_rec_from(item["recording"], arrays[f"data_{i}"]), rep))
        return out
    except Exception as e:  # noqa: BLE001 - any unreadable entry (truncated zip ...) is redone
        log.warning("cache entry %s unreadable (%s: %s): recomputing", npz, type(e).__name__, e)
        return None


def _save_cached(cache_dir: Path, h: str, job_key: str,
                 items: list[tuple[Recording, dict]], icas: list[Any]) -> None:
    npz, js = _cache_paths(cache_dir, h)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for i, ica in enumerate(icas):
        if ica is not None:
            ica.save(cache_dir / f"{h}-{i}-ica.fif", overwrite=True, verbose="error")
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"data_{i}": rec.data for i, (rec, _) in enumerate(items)})
    # the JSON is written last: its presence marks a complete entry
    atomic_write_json(js, {"job": job_key, "version": PIPELINE_VERSION,
                           "items": [{"recording": _rec_fields(rec), "report": rep}
                                     for rec, rep in items]})


def _run_job(job: _Job, cfg: PreprocessConfig, cache_dir: str | None
             ) -> tuple[list[tuple[Recording, dict]], list[dict]]:
    """Clean one job (from the cache when possible); never raises for a bad recording."""
    cdir = Path(cache_dir) if cache_dir else None
    if cdir is not None:
        hit = _load_cached(cdir, job.hash)
        if hit is not None:
            return hit, []
    failures: list[dict] = []
    if job.rec is not None:
        recs = [job.rec]
    else:
        from ..readers import get_reader

        try:
            recs = list(get_reader(job.reader).read_file(job.file, **job.options))
        except Exception as e:  # noqa: BLE001 - a broken file is reported, the batch goes on
            log.error("%s: cannot read: %s", job.file, e)
            return [], [{"key": job.key, "source": job.file, "stage": "read",
                         "error": f"{type(e).__name__}: {e}"}]
    items, icas = [], []
    for rec in recs:
        try:
            clean, rep, ica = _preprocess_logged(rec, cfg)
        except Exception as e:  # noqa: BLE001
            log.error("%s: preprocessing failed: %s", rec.key, e)
            failures.append({"key": rec.key, "source": _source(rec), "stage": "preprocess",
                             "error": f"{type(e).__name__}: {e}"})
            continue
        rep.cache_key = job.hash
        rep.cache_item = len(items)
        items.append((clean, rep.to_dict()))
        icas.append(ica)
    if cdir is not None and not failures and items:
        _save_cached(cdir, job.hash, job.key, items, icas)
    return items, failures

