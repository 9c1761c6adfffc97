"""Run a benchmark suite: every method in its adaptation modes and the baselines, on the same
folds, with the published numbers beside ours.

For each fold of the suite (its published split, or the split restricted to the subjects
present), each foundation method is pre-trained on the fold's *training subjects only* (the
validation and test subjects are asserted absent), then linear-probed and fully fine-tuned with
:func:`workbench.experiments.finetune`; the DE band-power baseline and the classic deep
baselines (EEGNet, ShallowConvNet, from braindecode) train on the same folds with the same
metrics. Every pre-training and fine-tuning is a run folder of its settings, so an interrupted
suite resumes where it stopped and a finished one is read back. A method that fails is recorded
in ``failures`` and the others still run.

Input: every model reads the suite's preprocessing (band, window); a model that needs its own
input rate (STELAR, Trace, EEGPT: 200 Hz) or amplitude scaling gets the same recordings at its
rate and scale, and the ``sfreq`` column says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Profile, get_profile
from ..data.splits import subject_keys
from ..data.store import WindowStore, subset_store
from ..evaluation.protocols import Protocol, make_splits
from ..runs import RunLayout
from ..utils import atomic_path, atomic_write_json, get_logger, stable_hash
from .suite import Suite, SuiteDataMissing, load_suite, published_numbers

log = get_logger("suites")

__all__ = ["BASELINES", "SuiteResult", "comparison_table", "data_folder", "run_suite",
           "subject_subset", "suite_store", "summarise", "tidy"]

#: Baselines a suite runs beside the foundation methods.
BASELINES = ("de", "eegnet", "shallow_convnet")
RESULT_COLUMNS = ["suite", "dataset", "method", "mode", "variant", "fold", "seed", "metric",
                  "value", "sfreq", "window_s", "n_train", "n_val", "n_test", "exact"]


@dataclass
class SuiteResult:
    """What :func:`run_suite` returns (and writes under ``out_dir``)."""

    suite: Suite
    results: pd.DataFrame  # tidy: one row per method, mode, fold, seed and metric
    summary: pd.DataFrame  # mean and std over folds and seeds
    comparison: pd.DataFrame  # ours and the published numbers on the suite's metric
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["method", "mode", "fold", "error"]))
    exact: bool = False
    note: str = ""
    subjects: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------- data
def suite_store(suite: Suite, data_path: str | Path, *, sfreq: float | None = None,
                scale: str | None = "microvolts", profile: str | Profile = "smoke",
                max_subjects: int | None = None, cache_dir: str | Path | None = None
                ) -> WindowStore:
    """The suite's windows (its preprocessing) at ``sfreq`` and ``scale``, cached.

    A missing folder, or one without the suite's files, raises :class:`SuiteDataMissing`
    saying how to get the data.
    """
    from ..data.corpus import load_store
    from ..data.readers import get_reader

    reader = get_reader(suite.dataset)
    path = Path(data_path) if data_path else None
    try:
        if path is None:
            raise FileNotFoundError("no data folder given")
        files = reader.list_files(path, **suite.reader_options)
        if not files:
            raise FileNotFoundError(f"{path}: no files of {suite.dataset}")
    except FileNotFoundError as err:
        raise SuiteDataMissing(f"Suite {suite.name!r}: {str(err).rstrip('.')}. To run it, "
                               f"{suite.how_to_get(path)}.") from err
    prof = get_profile(profile, max_subjects=max_subjects)
    recipe = suite.recipe(sfreq, scale)
    return load_store(suite.dataset, profile=prof, data_path=str(path),
                      window_s=recipe["window_s"], overlap_s=recipe["overlap_s"], scale=scale,
                      recipe=recipe, sfreq=recipe["resample"], cache_dir=cache_dir,
                      reader_options=dict(suite.reader_options))


def subject_subset(store: WindowStore, subjects: Sequence[str]) -> WindowStore:
    """A store of the windows of ``subjects`` only (a pre-training on a fold's training
    subjects), written once beside ``store`` and found there afterwards."""
    subjects = sorted(str(s) for s in subjects)
    keep = np.flatnonzero(subject_keys(store.index).isin(subjects).to_numpy())
    if not len(keep):
        raise ValueError(f"None of the subjects {subjects} has windows in {store}.")
    return subset_store(store, keep, f"subjects-{stable_hash(subjects, 10)}",
                        {"subjects": subjects})


def data_folder(suite: Suite, data_path: str | Path = "", data_root: str | Path = ""
                ) -> Path | None:
    """The folder of a suite's data: ``data_path``, else ``data_root/<dataset>`` (one folder per
    dataset, as ``workbench data download`` makes them), else None (reported as missing).
    Relative paths resolve against the project root, as every notebook path."""
    from ..runs import resolve_path

    if data_path:
        return resolve_path(data_path)
    if data_root:
        return resolve_path(data_root) / suite.dataset
    return None


# ----------------------------------------------------------------------------- tables
def tidy(rows: pd.DataFrame, suite: Suite, fold: str, store: WindowStore,
         exact: bool) -> pd.DataFrame:
    """Driver result rows (one per fold and seed, a column per metric) as tidy rows."""
    from ..experiments.finetune import METRICS

    if rows.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    df = rows.copy()
    df["fold"] = fold
    df["suite"] = suite.name
    df["sfreq"] = store.sfreq
    df["window_s"] = store.n_times / store.sfreq
    df["exact"] = exact
    keep = [c for c in RESULT_COLUMNS if c not in ("metric", "value")]
    out = df.melt(id_vars=keep, value_vars=[m for m in METRICS if m in df], var_name="metric",
                  value_name="value")
    return out[RESULT_COLUMNS]


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over folds and seeds, per method, mode and metric."""
    if results.empty:
        return pd.DataFrame(columns=["suite", "method", "mode", "metric", "mean", "std", "n"])
    g = results.groupby(["suite", "method", "mode", "metric"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)  # one fold and seed: no spread to report
    return out


def comparison_table(suite: Suite, summary: pd.DataFrame, exact: bool) -> pd.DataFrame:
    """Ours and the published numbers on every metric both have, one row per entry.

    ``protocol_differs`` names what differs between a published row's protocol and ours (the
    window, the rate, the split); ``comparable`` is False whenever our split is not the
    published one (``exact`` False) or the published row's window differs.
    """
    pub = published_numbers(suite)
    ours = summary.assign(source="this run", kind="ours", model=summary["method"],
                          value=summary["mean"])
    ours = ours[["kind", "model", "method", "mode", "metric", "value", "std", "n", "source"]]
    rows = []
    for _, r in pub.iterrows():
        diffs = []
        if abs(float(r["window_s"]) - suite.window_s) > 1e-9:
            diffs.append(f"window {r['window_s']:g} s (ours {suite.window_s:g} s)")
        if not r["same_split"]:
            diffs.append(f"split: {r['split']}")
        rows.append({"kind": "published", "model": r["model"], "method": r["ours"] or "",
                     "mode": r["mode"], "metric": r["metric"], "value": r["value_fraction"],
                     "std": r["std_fraction"], "n": np.nan,
                     "source": f"{r['source']}, {r['table']}",
                     "protocol_differs": "; ".join(diffs),
                     "comparable": exact and not diffs})
    published = pd.DataFrame(rows)
    ours["protocol_differs"] = "" if exact else "our split is restricted (see the note)"
    ours["comparable"] = exact
    out = pd.concat([ours, published], ignore_index=True) if len(published) else ours
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- baselines
def _de_rows(store: WindowStore, protocol: Protocol, seeds: Sequence[int]) -> pd.DataFrame:
    """The DE band-power baseline (logistic regression) on the fold's subjects."""
    from ..data.datasets import WindowDataset
    from ..experiments.finetune import baseline_fold

    rows = []
    for seed in seeds:
        for sp in make_splits(protocol, store.index, store.n_times, seed=seed):
            tr, va, te = (WindowDataset(store, ids) for ids in (sp.train, sp.val, sp.test))
            met = baseline_fold(tr, va if len(sp.val) else None, te, store.n_classes, seed)
            rows.append({"method": "de_baseline", "variant": "DE baseline", "mode": "features",
                         "dataset": store.dataset, "seed": seed, "n_train": len(sp.train),
                         "n_val": len(sp.val), "n_test": len(sp.test), **met})
    return pd.DataFrame(rows)


CLASSIC = ("eegnet", "shallow_convnet")


def _method(name: str):
    """A foundation method or a classic baseline by name."""
    from ..methods import get_method, list_methods

    if name in list_methods():
        return get_method(name)
    if name not in CLASSIC:
        raise ValueError(f"Unknown method {name!r}: expected one of {list_methods()} or the "
                         f"baselines {list(CLASSIC)}.")
    from ..methods.classic import get_classic  # needs braindecode (the bench extra)

    return get_classic(name)


# ----------------------------------------------------------------------------- the runner
def run_suite(suite: str | Suite, data_path: str | Path | None, *,
              methods: Sequence[str] | None = None, baselines: Sequence[str] = BASELINES,
              modes: Sequence[str] | None = None, profile: str | Profile = "smoke",
              run_dir: str | Path | RunLayout = "", seeds: Sequence[int] | None = None,
              max_subjects: int | None = None, max_folds: int | None = None,
              pretrained: dict[str, str] | None = None, device: str = "auto",
              cache_dir: str | Path | None = None,
              class_weight: str | None = "balanced") -> SuiteResult:
    """Run ``suite`` on the data in ``data_path`` (see the module docstring).

    Parameters
    ----------
    suite : str or Suite
        A shipped suite (:func:`workbench.suites.list_suites`) or a loaded one.
    data_path : path
        The folder holding the suite's dataset (the reader's layout). Missing: raises
        :class:`SuiteDataMissing` with the download command.
    methods : list of str, optional
        Foundation methods (default: every registered method).
    baselines : list of str
        Any of ``de``, ``eegnet``, ``shallow_convnet``.
    modes : list of str, optional
        Adaptation modes of the foundation methods (default: the suite's, linear and full).
    profile : str or Profile
        ``smoke`` (CPU, tiny models, few epochs) or ``paper``.
    run_dir : path or RunLayout
        Where the runs live (empty: ``runs/<profile>``).
    seeds : list of int, optional
        Fine-tuning seeds (default: the profile's).
    max_subjects, max_folds : int, optional
        Use only the first subjects / folds (a smoke run's budget); the results are then
        flagged as not comparable.
    pretrained : dict, optional
        ``{method: run folder or checkpoint}`` to fine-tune instead of pre-training on the
        fold's training subjects (a checkpoint whose pre-training saw the test subjects makes
        the result optimistic: it is recorded in the note).
    class_weight : {"balanced"} or None
        Every trained model weights its cross entropy by the inverse class frequency of the
        fold's training windows, and every model selects checkpoints on the suite's metric
        (balanced accuracy): with imbalanced classes a majority-class model would otherwise
        be selected.
    """
    from ..experiments import finetune, pretrain
    from ..methods import list_methods

    t0 = time.perf_counter()
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    layout = run_dir if isinstance(run_dir, RunLayout) else RunLayout(run_dir, prof.name)
    methods = list(list_methods() if methods is None else methods)
    wrong = [m for m in methods if m not in list_methods()]
    if wrong:
        raise ValueError(f"Invalid value for the 'methods' parameter: {wrong} are not "
                         f"registered methods {list_methods()}.")
    modes = list(modes or suite.modes)
    seeds = list(seeds or prof.seeds)
    pretrained = dict(pretrained or {})
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"Invalid value for the 'baselines' parameter: {unknown}; expected "
                         f"some of {list(BASELINES)}.")
    base = suite_store(suite, data_path, profile=prof, max_subjects=max_subjects,
                       cache_dir=cache_dir)
    present = list(dict.fromkeys(subject_keys(base.index)))
    try:
        folds, exact, note = suite.folds(present, max_subjects, max_folds)
    except ValueError as err:  # too few subjects in the folder: data missing, say where
        raise SuiteDataMissing(f"{str(err).rstrip('.')} in {data_path} (the published "
                               f"protocol has {suite.n_subjects}). To run it, "
                               f"{suite.how_to_get(data_path)}.") from err
    if pretrained:
        note = "; ".join(filter(None, [note, f"{sorted(pretrained)} fine-tune given "
                                       "checkpoints whose pre-training data are not checked"]))
    log.info("suite %s: %d subjects, %d folds%s", suite.name, len(present), len(folds),
             f" ({note})" if note else "")
    train_opts = {"class_weight": class_weight, "selection_metric": suite.metric}
    parts, failures = [], []
    stores: dict[tuple, WindowStore] = {}

    def store_for(m) -> WindowStore:
        key = (m.sfreq or suite.sfreq, m.scale)  # the model's input rate and scale
        if key not in stores:
            stores[key] = (base if key == (suite.sfreq, "microvolts") else
                           suite_store(suite, data_path, sfreq=key[0], scale=key[1],
                                       profile=prof, max_subjects=max_subjects,
                                       cache_dir=cache_dir))
        return stores[key]

    def fail(method: str, mode: str, fold: str, err: Exception) -> None:
        log.error("suite %s: %s (%s, %s) failed: %s", suite.name, method, mode, fold, err)
        failures.append({"method": method, "mode": mode, "fold": fold,
                         "error": f"{type(err).__name__}: {err}"})

    for fold, proto in folds:
        held_out = set(proto.val_subjects) | set(proto.test_subjects)
        for name in methods:
            try:
                m = _method(name)
                store = store_for(m)
                ckpt = pretrained.get(name)
                if ckpt is None:
                    pre_store = subject_subset(store, proto.train_subjects)
                    leak = held_out & set(subject_keys(pre_store.index))
                    if leak:  # the leakage rule of a fold's pre-training, always checked
                        raise AssertionError(f"Leakage: pre-training would see the held-out "
                                             f"subjects {sorted(leak)}.")
                    ckpt = pretrain(m, [pre_store], run_dir=layout, profile=prof,
                                    device=device).out_dir
            except Exception as err:  # noqa: BLE001 - recorded; the other methods still run
                fail(name, "pretrain", fold, err)
                continue
            for mode in modes:
                try:
                    res = finetune(m, store, run_dir=layout, profile=prof, pretrained=ckpt,
                                   seeds=seeds, protocol=proto, mode=mode, device=device,
                                   **train_opts)
                    parts.append(tidy(res.results, suite, fold, store, exact))
                except Exception as err:  # noqa: BLE001
                    fail(name, mode, fold, err)
        for name in baselines:
            try:
                if name == "de":
                    parts.append(tidy(_de_rows(base, proto, seeds), suite, fold, base, exact))
                    continue
                m = _method(name)
                res = finetune(m, base, run_dir=layout, profile=prof, seeds=seeds,
                               protocol=proto, mode="full", device=device, **train_opts)
                parts.append(tidy(res.results, suite, fold, base, exact))
            except Exception as err:  # noqa: BLE001
                fail(name, "full" if name != "de" else "features", fold, err)
    results = (pd.concat(parts, ignore_index=True) if parts
               else pd.DataFrame(columns=RESULT_COLUMNS))
    summary = summarise(results)
    out = SuiteResult(suite, results, summary, comparison_table(suite, summary, exact),
                      pd.DataFrame(failures, columns=["method", "mode", "fold", "error"]),
                      exact, note, present, layout.root / "benchmarks" / suite.name,
                      time.perf_counter() - t0)
    _write(out)
    return out


def _write(res: SuiteResult) -> None:
    """The suite's tables under ``out_dir`` (atomically; a re-run replaces them)."""
    res.out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results", "summary", "comparison", "failures"):
        with atomic_path(res.out_dir / f"{name}.csv") as tmp:
            getattr(res, name).to_csv(tmp, index=False)
    atomic_write_json(res.out_dir / "suite.json", {
        "suite": res.suite.name, "exact": res.exact, "note": res.note,
        "subjects": res.subjects, "seconds": round(res.seconds, 1),
        "metric": res.suite.metric, "chance": res.suite.chance})
