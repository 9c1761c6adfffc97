"""The batch pipeline: many recordings -> cleaned (cached) -> windows in one WindowStore.

:func:`run_pipeline` maps :func:`~workbench.data.preprocess.clean.preprocess_recording` over many
recordings (in parallel with joblib, ``n_jobs``), caches each cleaned recording
(:mod:`workbench.data.preprocess.cache`: an interrupted run resumes where it stopped, a second
identical run is served from the cache), windows the results through the one windowing path
(:class:`workbench.data.assemble.StoreAssembler`) and writes one
:class:`~workbench.data.store.WindowStore` with the config and the per-recording reports in its
provenance. A recording that fails to read, clean or join the store is a row of
``failures.csv``; the batch goes on.

Rates: the One Model for All recipe keeps native rates (128 Hz DEAP/DREAMER, 200 Hz SEED), and a
store holds one rate, so run the pipeline once per dataset (one store per rate); recipes with
``resample`` set bring every recording to that rate.

References
----------
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...config import to_dict
from ...utils import atomic_write_json, check_positive, file_digest, get_logger, stable_hash
from ..assemble import LayoutError, StoreAssembler
from ..recording import Recording
from ..store import WindowStore
from .cache import _Job, _load_cached, _run_job, recording_digest, remove_stale_temporaries
from .clean import RecordingReport
from .recipes import ICLABEL_CLASSES, PIPELINE_VERSION, PreprocessConfig, as_config

log = get_logger("preprocess")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced.

    Attributes
    ----------
    store : WindowStore or None
        The windows of every good recording (None with ``window=False`` or no windows).
    reports : DataFrame
        One row per cleaned recording (:meth:`RecordingReport.to_row`).
    failures : DataFrame
        ``key, source, stage, error`` of every recording that was skipped.
    ica : dict of str -> DataFrame
        Per recording key, the ICLabel table of :func:`iclabel_table`.
    """

    store: WindowStore | None
    reports: pd.DataFrame
    failures: pd.DataFrame
    ica: dict[str, pd.DataFrame]
    config: PreprocessConfig
    out_dir: Path
    cache_dir: Path | None
    seconds: float = 0.0
    recordings: dict[str, Recording] | None = None
    reader_options: dict[str, Any] = field(default_factory=dict)

    def _entry(self, key: str) -> tuple[str, int]:
        rows = self.reports[self.reports["key"] == key]
        if rows.empty:
            raise KeyError(f"No cleaned recording {key!r}; known: {self.reports['key'].tolist()}.")
        return str(rows["cache_key"].iloc[0]), int(rows["cache_item"].iloc[0])

    def cleaned(self, key: str) -> Recording:
        """The cleaned continuous recording ``key`` (from memory or the cache)."""
        if self.recordings is not None and key in self.recordings:
            return self.recordings[key]
        if self.cache_dir is None:
            raise ValueError("run_pipeline(cache=False, keep_cleaned=False) kept no cleaned "
                             "recordings.")
        h, i = self._entry(key)
        items = _load_cached(self.cache_dir, h)
        if items is None:
            raise FileNotFoundError(f"cache entry {h} of {key!r} missing in {self.cache_dir}.")
        return items[i][0]

    def load_ica(self, key: str):
        """The fitted ``mne.preprocessing.ICA`` of ``key`` (None when ICA was off)."""
        from mne.preprocessing import read_ica

        if self.cache_dir is None:
            raise ValueError("run_pipeline(cache=False) saved no ICA.")
        h, i = self._entry(key)
        path = self.cache_dir / f"{h}-{i}-ica.fif"
        return read_ica(path, verbose="error") if path.exists() else None


def _jobs(recordings: Iterable[Recording] | None, dataset: str | None, data_path: str | None,
          sig: dict[str, Any], limit: int | None, options: dict[str, Any]) -> Iterator[_Job]:
    if recordings is not None:
        for i, rec in enumerate(recordings):
            if limit is not None and i >= limit:
                return
            if not isinstance(rec, Recording):
                raise TypeError(f"run_pipeline: item {i} of 'recordings' is a "
                                f"{type(rec).__name__}, expected a Recording.")
            yield _Job(rec.key, stable_hash({"content": recording_digest(rec), "cfg": sig,
                                             "version": PIPELINE_VERSION}), rec=rec)
        return
    from ..readers import check_reader_options, get_reader

    reader = get_reader(dataset)
    check_reader_options(dataset, reader, options)
    files = list(reader.list_files(data_path, **options))
    if not files:
        raise FileNotFoundError(f"run_pipeline: no {dataset} files under {data_path}.")
    for f in files[:limit]:
        f = str(f)
        yield _Job(f, stable_hash({"file": os.path.basename(f), "digest": file_digest(f),
                                   "reader": dataset, "options": options, "cfg": sig,
                                   "version": PIPELINE_VERSION}),
                   file=f, reader=dataset, options=options)


def _results(jobs: Iterator[_Job], cfg: PreprocessConfig, cache_dir: Path | None, n_jobs: int):
    """(job, items, failures) in job order; in parallel with joblib for ``n_jobs > 1``."""
    cdir = str(cache_dir) if cache_dir is not None else None
    if n_jobs == 1:
        for job in jobs:
            yield (job, *_run_job(job, cfg, cdir))
        return
    from joblib import Parallel, delayed

    pending: list[_Job] = []

    def tasks():
        for job in jobs:
            pending.append(job)
            yield delayed(_run_job)(job, cfg, cdir)

    out = Parallel(n_jobs=n_jobs, return_as="generator")(tasks())
    for k, (items, failures) in enumerate(out):
        job = pending[k]
        job.rec = None  # free the input once it has been processed
        yield job, items, failures


def run_pipeline(recordings: Iterable[Recording] | None = None, *, dataset: str | None = None,
                 data_path: str | os.PathLike | None = None,
                 cfg: PreprocessConfig | str | dict[str, Any] = "omfa",
                 out_dir: str | os.PathLike = "runs/preprocess", n_jobs: int = 1,
                 cache_dir: str | os.PathLike | None = None, cache: bool = True,
                 save_fif: bool = False, window: bool = True, limit: int | None = None,
                 keep_cleaned: bool = False,
                 reader_options: dict[str, Any] | None = None,
                 provenance: dict[str, Any] | None = None) -> PipelineResult:
    """Preprocess many recordings, window them and write one WindowStore.

    Parameters
    ----------
    recordings : iterable of Recording, optional
        In-memory recordings (e.g. the synthetic corpus); consumed lazily, so an iterator that
        fails midway leaves the finished recordings in the cache.
    dataset, data_path : str
        Instead of ``recordings``: a reader name and its folder; each file is a cache unit keyed
        by its bytes, so a cached file is not even read again.
    cfg : PreprocessConfig, recipe name or dict
    out_dir : path
        Receives ``store/`` (the WindowStore), ``reports.csv``, ``failures.csv``,
        ``ica_labels.csv``, ``config.json`` and, with ``save_fif``, ``epochs/*-epo.fif``.
    n_jobs : int
        Recordings processed in parallel (joblib processes); 1 runs in this process.
    cache_dir : path, optional
        Defaults to ``out_dir/cache``. Entries are named by a hash of the input and of
        :meth:`PreprocessConfig.signal_dict`, so window settings can change without recomputing.
    cache : bool
        False: neither read nor write the cache (benchmarks).
    save_fif : bool
        Also write each recording's windows as MNE epochs (volts, before scaling).
    window : bool
        False: clean and cache only, no store.
    limit : int, optional
        Only the first ``limit`` recordings (or files).
    keep_cleaned : bool
        Keep the cleaned recordings in ``result.recordings``.
    reader_options : dict, optional
        Passed to the reader's ``list_files`` and ``read_file`` (part of the cache key);
        ``labels`` (a labels table) also lists rows naming no file as failures.
    provenance : dict, optional
        Extra entries for the store's provenance.

    Returns
    -------
    PipelineResult

    Notes
    -----
    One recording never aborts the batch: a recording that fails to read or clean, or cannot
    join the store (another rate without ``resample``, other channels than the
    ``channel_policy`` allows), is logged and listed in ``result.failures`` (stage ``read``,
    ``preprocess``, ``window``, ``labels``); ``reports.csv`` and ``failures.csv`` are written
    even when the run is interrupted.
    """
    t0 = time.perf_counter()
    cfg = as_config(cfg)
    check_positive("n_jobs", n_jobs)
    if (recordings is None) == (dataset is None):
        raise ValueError("run_pipeline: give either 'recordings' or 'dataset' (with "
                         "'data_path'), not both or neither.")
    if dataset is not None and not data_path:
        raise ValueError(f"run_pipeline: dataset={dataset!r} needs 'data_path', the folder "
                         "of its files.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cdir = (Path(cache_dir) if cache_dir is not None else out / "cache") if cache else None
    atomic_write_json(out / "config.json", to_dict(cfg))
    if cdir is not None:
        remove_stale_temporaries(cdir)
    sig = cfg.signal_dict()

    reports: list[dict] = []
    failures: list[dict] = []
    kept: dict[str, Recording] = {}
    store = None
    assembler = StoreAssembler(out / "store", window_s=cfg.window_s, overlap_s=cfg.overlap_s,
                               window_mode=cfg.window_mode, scale=cfg.scale,
                               reject_ptp=cfg.reject_ptp, overwrite=True, sfreq=cfg.resample,
                               ch_names=cfg.channels, montage=cfg.montage or "colin27_1005",
                               channel_policy={"intersection": "subset"}.get(
                                   cfg.channel_policy, cfg.channel_policy))
    # "intersection" needs every recording's channels before the first window: hold them
    pending: list[tuple[Recording, dict]] | None = (
        [] if window and cfg.channel_policy == "intersection" else None)
    try:
        options = dict(reader_options or {})
        if dataset is not None:
            failures += _label_problems(dataset, data_path, options)
        jobs = _jobs(recordings, dataset, data_path, sig, limit, options)
        seen: set[str] = set()
        for _job, items, fails in _results(jobs, cfg, cdir, n_jobs):
            failures.extend(fails)
            for clean, rep in items:
                if clean.key in seen:
                    failures.append({"key": clean.key, "source": rep["source"],
                                     "stage": "assemble", "error": "duplicate recording key"})
                    continue
                seen.add(clean.key)
                if pending is not None:
                    pending.append((clean, rep))
                elif _windowed(assembler, clean, rep, window, out, save_fif, failures):
                    reports.append(rep)
                    if keep_cleaned:
                        kept[clean.key] = clean
        if pending:
            assembler.ch_names = _common_channels(pending, cfg.channels)
            for clean, rep in pending:
                if _windowed(assembler, clean, rep, window, out, save_fif, failures):
                    reports.append(rep)
                    if keep_cleaned:
                        kept[clean.key] = clean
        assembler.provenance = _provenance(cfg, reports, failures, provenance)
        store = assembler.close()
        if store is None and window:
            log.warning("run_pipeline: no windows from %d recordings; no store written.",
                        len(reports))
    except BaseException:
        assembler.abort()
        raise
    finally:  # reports and failures are written whatever happened
        rep_df, fail_df, ica = _write_tables(out, reports, failures)
    seconds = time.perf_counter() - t0
    log.info("run_pipeline(%s): %d recordings (%d from cache), %d failures, %.1f s", cfg.name,
             len(rep_df), int(rep_df["from_cache"].sum()) if len(rep_df) else 0, len(fail_df),
             seconds)
    return PipelineResult(store=store, reports=rep_df, failures=fail_df, ica=ica, config=cfg,
                          out_dir=out, cache_dir=cdir, seconds=seconds,
                          recordings=kept if keep_cleaned else None,
                          reader_options=dict(reader_options or {}))


def _write_tables(out: Path, reports: list[dict], failures: list[dict]):
    """``reports.csv``, ``failures.csv`` and ``ica_labels.csv``; returns the tables."""
    rep_df = pd.DataFrame([RecordingReport(**r).to_row() for r in reports],
                          columns=[f.name for f in dataclasses.fields(RecordingReport)
                                   if f.name != "ica_labels"])
    fail_df = pd.DataFrame(failures, columns=["key", "source", "stage", "error"])
    ica_cols = ["component", "label", "probability", *ICLABEL_CLASSES, "excluded"]
    ica = {r["key"]: pd.DataFrame(r["ica_labels"])[ica_cols] for r in reports if r["ica_labels"]}
    rep_df.to_csv(out / "reports.csv", index=False)
    fail_df.to_csv(out / "failures.csv", index=False)
    if ica:
        pd.concat([t.assign(key=k) for k, t in ica.items()], ignore_index=True).to_csv(
            out / "ica_labels.csv", index=False)
    return rep_df, fail_df, ica


def _label_problems(dataset: str, data_path, options: dict[str, Any]) -> list[dict]:
    """Rows of a labels table that name no file of the dataset, as failures (stage labels)."""
    if options.get("labels") is None:
        return []
    from ..readers import get_reader

    check = getattr(get_reader(dataset), "label_problems", None)
    if check is None:
        return []
    return [{"key": f, "source": str(options["labels"]), "stage": "labels", "error": m}
            for f, m in check(Path(data_path), **options)]


def _common_channels(pending: list[tuple[Recording, dict]],
                     channels: list[str] | None) -> list[str]:
    """The EEG channels every recording holds, in the first recording's order."""
    first = channels or [pending[0][0].ch_names[i] for i in pending[0][0].eeg_picks]
    common = set(first)
    for rec, _ in pending:
        common &= {rec.ch_names[i] for i in rec.eeg_picks}
    out = [n for n in first if n in common]
    if not out:
        raise ValueError("channel_policy='intersection': no EEG channel is common to every "
                         "recording; preprocess the layouts separately or use 'interpolate'.")
    log.info("channel_policy='intersection': %d channels common to %d recordings: %s",
             len(out), len(pending), out)
    return out


def _windowed(assembler: StoreAssembler, rec: Recording, rep: dict, window: bool, out: Path,
              save_fif: bool, failures: list[dict]) -> bool:
    """Window ``rec`` into the store (when ``window``); False, with a failure row, when it
    cannot join the store."""
    if not window:
        return True
    try:
        added = assembler.add(rec)
    except (LayoutError, ValueError) as e:
        log.error("%s: cannot join the store: %s", rec.key, e)
        failures.append({"key": rec.key, "source": rep["source"], "stage": "window",
                         "error": str(e)})
        return False
    rep["n_rejected_windows"] = added.n_rejected
    rep["n_windows"] = len(added.windows)
    rep["notes"] = list(rep.get("notes", [])) + added.notes
    if added.notes:
        log.info("%s: %s", rec.key, "; ".join(added.notes))
    if save_fif and len(added.windows):
        _save_epochs(added.windows, added.rows, rec,
                     out / "epochs" / f"{_safe(rec.key)}-epo.fif")
    return True


def _save_epochs(win: np.ndarray, rows: pd.DataFrame, rec: Recording, path: Path) -> None:
    import mne

    info = mne.create_info(rec.ch_names, rec.sfreq, "eeg", verbose="error")
    labels = rows["label"].to_numpy(np.int64)
    events = np.c_[rows["start"].to_numpy(np.int64), np.zeros(len(rows), np.int64),
                   np.where(labels >= 0, labels + 1, 0)]  # (n, 3); MNE event ids: label + 1
    names = rec.label_names or {}
    event_id = {(names.get(int(v) - 1, str(int(v) - 1)) if v > 0 else "unlabelled"): int(v)
                for v in np.unique(events[:, 2])}
    # window starts can repeat across events only if events overlap; MNE needs unique samples
    _, first = np.unique(events[:, 0], return_index=True)
    epochs = mne.EpochsArray(win[first].astype(np.float64), info, events=events[first],
                             event_id=event_id, verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs.save(path, overwrite=True, verbose="error")


def _provenance(cfg: PreprocessConfig, reports: list[dict], failures: list[dict],
                extra: dict[str, Any] | None = None) -> dict:
    import mne

    try:
        import mne_icalabel

        icalabel_version = mne_icalabel.__version__
    except ImportError:  # pragma: no cover - a dependency
        icalabel_version = None
    return {"pipeline": "workbench.data.preprocess", "version": PIPELINE_VERSION,
            "recipe": cfg.name, "config": to_dict(cfg),
            "config_hash": stable_hash(to_dict(cfg)), "mne": mne.__version__,
            "mne_icalabel": icalabel_version, "reports": reports, "failures": failures,
            **(extra or {})}
