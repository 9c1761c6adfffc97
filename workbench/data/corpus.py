"""Get a WindowStore for a named dataset, building and caching it on first use.

``load_store("syn_deap", profile="smoke")`` generates the embedded synthetic corpus;
``load_store("eegmat", data_path=...)`` reads real files with the dataset's reader and runs the
MNE preprocessing recipe. Stores are cached under ``cache_dir`` by a hash of everything that
determines their content, so the notebooks of one reproduction share them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import Profile, get_profile
from ..utils import file_digest, get_logger, stable_hash
from .store import WindowStore, build_store

log = get_logger("corpus")

CACHE_VERSION = 2  # 2: sfreq and labels in the key, subjects used/available in provenance


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE`` or ``.cache/workbench``; relative paths resolve against the project
    root (:func:`workbench.runs.project_root`), so a notebook run from ``notebooks/`` in
    JupyterLab shares the stores of ``workbench reproduce``."""
    from ..runs import resolve_path

    return resolve_path(os.environ.get("WORKBENCH_CACHE", ".cache/workbench"))


def is_synthetic(dataset: str) -> bool:
    return dataset.startswith("syn_")


def load_store(dataset: str, *, profile: str | Profile = "smoke", data_path: str | None = None,
               window_s: float = 2.0, overlap_s: float = 0.0, scale: str | None = "microvolts",
               recipe: str | dict[str, Any] | None = None, seed: int = 0, cache_dir: str | os.PathLike | None = None,
               reader_options: dict[str, Any] | None = None, n_jobs: int = 1,
               sfreq: float | None = None, labels: str | os.PathLike | None = None
               ) -> WindowStore:
    """A WindowStore of ``dataset`` windowed as asked, from the cache when it is there.

    Parameters
    ----------
    dataset : str
        ``syn_seed`` / ``syn_deap`` / ``syn_dreamer`` (embedded) or a reader name
        (:func:`workbench.data.readers.get_reader`) with ``data_path``.
    profile : str or Profile
        Sizes of the synthetic corpus and the subject limit (``max_subjects``).
    window_s, overlap_s, scale
        Windowing (inside labelled events) and amplitude scaling.
    recipe : str or dict, optional
        A preprocessing recipe (:data:`workbench.data.preprocess.RECIPES`), or the fields of a
        :class:`~workbench.data.preprocess.PreprocessConfig` (a benchmark suite's); None windows
        the recordings as they are (the synthetic corpus is already clean of drifts).
    reader_options : dict, optional
        Passed to the reader (e.g. ``{"task": "imagery_lr"}``, ``{"sfreq": 256}`` for CSV).
    sfreq : float, optional
        Resample every recording to this rate (Hz), with or without a recipe (overrides the
        recipe's ``resample``); None keeps the native rate (or the recipe's).
    labels : path, optional
        A labels table (CSV/TSV, see docs/datasets.md) for readers that take one (``generic``,
        ``csv``); its content is part of the cache key.

    Notes
    -----
    With a profile that caps subjects (``max_subjects``, real data only), the store's
    ``meta["provenance"]["subjects"]`` says how many of how many subjects it holds.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    reader_options = dict(reader_options or {})
    if labels is not None:
        if "labels" in reader_options:
            raise ValueError("Give the labels table either as 'labels' or in 'reader_options', "
                             "not both.")
        if not Path(labels).is_file():
            raise FileNotFoundError(f"Invalid value for the 'labels' parameter: no file {labels}.")
        reader_options["labels"] = str(Path(labels).resolve())
    key = {"v": CACHE_VERSION, "dataset": dataset, "window_s": window_s, "overlap_s": overlap_s,
           "scale": scale, "recipe": recipe, "seed": seed, "sfreq": sfreq,
           "reader_options": reader_options}
    if labels is not None:
        key["labels_digest"] = file_digest(reader_options["labels"])
    if is_synthetic(dataset):
        from .synthetic import GENERATOR_VERSION

        key.update(generator=GENERATOR_VERSION, subjects=prof.synthetic_subjects, sessions=prof.synthetic_sessions,
                   trials=prof.synthetic_trials, trial_s=prof.synthetic_trial_s)
    else:
        if not data_path:
            raise ValueError(f"Dataset {dataset!r} is not embedded: pass 'data_path', the folder "
                             "holding its files (see docs/datasets.md).")
        key["data_path"] = str(Path(data_path).resolve())
        key["max_subjects"] = prof.max_subjects
    root = cache / "stores" / f"{dataset}-{stable_hash(key)}"
    if (root / "meta.json").exists():
        log.info("store %s served from the cache", root)
        return WindowStore(root)
    recordings, subjects = _recordings(dataset, prof, data_path, seed, reader_options)
    provenance = {"source": dataset, "key": key, "subjects": subjects}
    if subjects["used"] < subjects["available"]:
        log.warning("%s: profile %r uses %d of %d subjects (max_subjects=%d).", dataset,
                    prof.name, subjects["used"], subjects["available"], prof.max_subjects)
    if recipe is None:
        return build_store(recordings, root, window_s=window_s, overlap_s=overlap_s, scale=scale,
                           provenance=provenance, overwrite=True, sfreq=sfreq)
    from .preprocess import get_recipe, run_pipeline
    from .preprocess.recipes import as_config

    over = {"resample": sfreq} if sfreq is not None else {}
    over.update(window_s=window_s, overlap_s=overlap_s, scale=scale)
    cfg = (as_config({**recipe, **over}) if isinstance(recipe, dict)
           else get_recipe(recipe, **over))
    result = run_pipeline(recordings, cfg=cfg, out_dir=root, n_jobs=n_jobs,
                          cache_dir=cache / "preprocess", provenance=provenance)
    if result.store is None:
        raise RuntimeError(f"Preprocessing {dataset} produced no windows; failures:\n"
                           f"{result.failures}")
    return result.store


def _recordings(dataset: str, prof: Profile, data_path: str | None, seed: int,
                reader_options: dict[str, Any]) -> tuple[list, dict[str, int]]:
    if is_synthetic(dataset):
        from .synthetic import make_synthetic_recordings

        recs = make_synthetic_recordings(dataset, n_subjects=prof.synthetic_subjects,
                                         n_sessions=prof.synthetic_sessions,
                                         n_trials_per_class=prof.synthetic_trials,
                                         trial_s=prof.synthetic_trial_s, seed=seed)
    else:
        from .readers import read_dataset

        res = read_dataset(dataset, data_path, on_error="skip", **reader_options)
        if len(res.failures):
            log.warning("%d files of %s could not be read:\n%s", len(res.failures), dataset,
                        res.failures.to_string())
        recs = res.recordings
        if not recs:
            raise ValueError(f"No readable recordings of {dataset!r} under {data_path}.")
    if prof.max_subjects is not None and not is_synthetic(dataset):
        # Reading and cleaning real recordings is the expensive part: limit the subjects here.
        # (Synthetic stores keep every subject; the fine-tuning drivers limit theirs.)
        subjects = []
        for r in recs:
            if r.subject not in subjects:
                subjects.append(r.subject)
        keep = set(subjects[:prof.max_subjects])
        recs = [r for r in recs if r.subject in keep]
        return recs, {"used": len(keep), "available": len(subjects)}
    n = len({r.subject for r in recs})
    return recs, {"used": n, "available": n}
