"""Run the stage notebooks with papermill for a profile, collect their status and build the report.

The stages are the notebooks ``notebooks/NN_name.ipynb`` in name order (:func:`discover_stages`;
``STAGES`` is the list for the repository's notebooks, found when first read). A *profile* is a
YAML file ``workbench/profiles/<profile>.yaml`` (or any ``.yaml`` path) mapping notebook stems to
parameters, plus a ``default`` section applied to every notebook::

    default: {profile: smoke, device: auto, seed: 42}
    03_finetune: {method: omfa, epochs: 2}

Each notebook gets ``default``, then its own section, then the caller's ``parameters``, then
``run_dir`` and ``figures_dir`` as absolute paths, injected by papermill after its cell tagged
``parameters``. The kernel runs in the repository root (the folder that holds the ``workbench``
package and ``pyproject.toml``; the current directory for an installed package), with that folder
prepended to ``PYTHONPATH``, so notebooks import the working tree's ``workbench`` without an
install and relative data paths (``../shared/data``) mean the same in every notebook.

Outputs in ``run_dir``: ``executed/NN_name.ipynb`` (the executed copies), ``status.csv``
(notebook, status, seconds, executed_path, error), ``timings.json``, ``parameters.json``,
``provenance.json``, and whatever the notebooks record (``metrics/``, ``tables/``); figures go to
``figures_dir``; finally :func:`workbench.report.build_report` writes ``figures_dir/report.html``.
A failing notebook is recorded (error text and executed copy) and the others still run; nothing
already written is removed. Re-running some stages (``only``) updates their rows and keeps the rest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .report import REPO_ROOT, build_report, provenance
from .utils import atomic_path, atomic_write_json

logger = logging.getLogger("workbench")

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
STATUS_COLUMNS = ["notebook", "status", "seconds", "executed_path", "error"]
_STAGE_RE = re.compile(r"^(\d{2})_[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------- stages
def discover_stages(notebooks_dir: str | os.PathLike | None = None) -> list[str]:
    """Stems of the notebooks ``NN_name.ipynb`` in ``notebooks_dir``, sorted by name."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"Notebook folder {folder} does not exist.")
    return sorted(p.stem for p in folder.glob("*.ipynb") if _STAGE_RE.match(p.stem))


def __getattr__(name: str) -> Any:  # PEP 562: STAGES reflects the notebooks on disk when read
    if name == "STAGES":
        return discover_stages() if NOTEBOOKS_DIR.is_dir() else []
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select_stages(stages: Sequence[str], only: Iterable[str] | None) -> list[str]:
    """The stages named in ``only`` (stems ``03_finetune``, prefixes ``03``, or names
    ``finetune``), in stage order. An unknown or ambiguous name raises ``ValueError`` listing the
    available stages."""
    if only is None:
        return list(stages)
    chosen: set[str] = set()
    for raw in only:
        key = str(raw).strip().removesuffix(".ipynb")
        hits = [s for s in stages if s == key]
        hits = hits or [s for s in stages if s.split("_", 1)[0] == key]
        hits = hits or [s for s in stages if s.split("_", 1)[1] == key]
        if len(hits) != 1:
            why = "matches several notebooks" if hits else "is not a notebook"
            raise ValueError(f"Invalid value in the 'only' parameter: {raw!r} {why}; available "
                             f"notebooks: {list(stages)} (give a stem or its NN prefix).")
        chosen.add(hits[0])
    return [s for s in stages if s in chosen]


# ----------------------------------------------------------------------------- profiles
def list_profiles(profiles_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the profiles shipped in ``workbench/profiles``."""
    folder = Path(profiles_dir) if profiles_dir is not None else PROFILES_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def profile_path(profile: str | os.PathLike) -> Path:
    """The YAML file of ``profile``: a shipped profile name or a path to a ``.yaml`` file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"Profile file {p} does not exist.")
        return p
    path = PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ValueError(f"Invalid value for the 'profile' parameter: expected one of "
                         f"{list_profiles()} or a path to a .yaml file, got {str(profile)!r}.")
    return path


def load_profile(profile: str | os.PathLike) -> dict[str, Any]:
    """The sections of a profile: ``{"default": {...}, "NN_name": {...} or [{...}, ...]}``.

    A notebook's section is one parameter mapping, or a list of them to run the notebook once
    per entry (e.g. once per method); each entry may set ``tag`` (default: its ``method``) that
    names the run ``NN_name__tag``.
    """
    path = profile_path(profile)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections (default, NN_name...), got "
                         f"{type(data).__name__}.")
    out: dict[str, Any] = {}
    for section, params in data.items():
        entries = params if isinstance(params, list) else [params or {}]
        checked = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: section {section!r} must map parameter names to "
                                 f"values (or be a list of such maps), got "
                                 f"{type(entry).__name__}.")
            for k, v in entry.items():
                if isinstance(v, dict):
                    raise ValueError(f"{path}: parameter {section}.{k} is a mapping; notebook "
                                     "parameters must be flat literals (numbers, strings, lists).")
            checked.append({str(k): v for k, v in entry.items()})
        if section == "default" and isinstance(params, list):
            raise ValueError(f"{path}: the 'default' section must be a single mapping.")
        out[str(section)] = checked if isinstance(params, list) else checked[0]
    out.setdefault("default", {})
    out["default"].setdefault("profile", Path(path).stem)
    return out


def stage_runs(stage: str, profile: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(run_name, section parameters)`` for each run of ``stage`` in a profile."""
    section = profile.get(stage, {})
    if not isinstance(section, list):
        return [(stage, dict(section))]
    runs = []
    for i, entry in enumerate(section):
        entry = dict(entry)
        tag = str(entry.pop("tag", entry.get("method", i)))
        runs.append((f"{stage}__{tag}", entry))
    names = [r[0] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"Profile section {stage!r} has runs with the same name {names}; give "
                         "each entry a distinct 'tag'.")
    return runs


def stage_parameters(stage: str, profile: Mapping[str, Any],
                     run_dir: str | os.PathLike, figures_dir: str | os.PathLike,
                     overrides: Mapping[str, Any] | None = None,
                     section: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters papermill injects into ``stage``: default < stage section < overrides < paths.

    ``section`` is one run's entry when the stage's section is a list (see :func:`stage_runs`).
    """
    if section is None:
        section = profile.get(stage, {})
        if isinstance(section, list):
            raise ValueError(f"Stage {stage!r} has several runs; pass one as 'section'.")
    params = {**profile.get("default", {}), **section, **(overrides or {})}
    params["run_dir"] = str(Path(run_dir).resolve())
    params["figures_dir"] = str(Path(figures_dir).resolve())
    return params


# ----------------------------------------------------------------------------- status files
def read_status(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``run_dir/status.csv`` as a DataFrame (empty with the status columns if absent)."""
    path = Path(run_dir) / "status.csv"
    if not path.exists():
        return pd.DataFrame(columns=STATUS_COLUMNS)
    return pd.read_csv(path, dtype={"notebook": str, "error": str, "executed_path": str},
                       keep_default_na=False)


def _merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    keep = old[~old["notebook"].isin(new["notebook"])]
    both = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    return both.sort_values("notebook", kind="stable").reset_index(drop=True)[STATUS_COLUMNS]


def _write_run_files(run_dir: Path, rows: list[dict[str, Any]], params: dict[str, Any],
                     previous: pd.DataFrame, started: str, profile: str) -> None:
    new = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    status = _merge_rows(previous, new) if len(previous) else new
    with atomic_path(run_dir / "status.csv") as tmp:
        status.to_csv(tmp, index=False)
    old_params = json.loads((run_dir / "parameters.json").read_text()) \
        if (run_dir / "parameters.json").exists() else {}
    atomic_write_json(run_dir / "parameters.json", {**old_params, **params})
    stages = {r["notebook"]: float(r["seconds"]) for r in status.to_dict("records")
              if str(r["seconds"]) not in ("", "nan")}
    atomic_write_json(run_dir / "timings.json", {
        "profile": profile, "started": started,
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "stages": stages, "total_seconds": round(sum(stages.values()), 3)})


# ----------------------------------------------------------------------------- running
def _kernel_root() -> Path:
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()


@contextlib.contextmanager
def _pythonpath(folder: Path) -> Iterator[None]:
    """Prepend ``folder`` to ``PYTHONPATH`` for the kernels started inside the block."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder)] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _error_text(err: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        return f"{err.ename}: {err.evalue} (cell {err.cell_index}, execution count {err.exec_count})"
    return f"{type(err).__name__}: {err}"


def run_stage(stage: str, notebooks_dir: Path, run_dir: Path, params: Mapping[str, Any],
              kernel_name: str = "python3", timeout: float | None = None,
              run_name: str | None = None) -> dict[str, Any]:
    """Execute one notebook with papermill; return its status row (never raises for a failure
    inside the notebook). ``run_name`` (default ``stage``) names the executed copy and row."""
    import papermill as pm

    run_name = run_name or stage
    src = notebooks_dir / f"{stage}.ipynb"
    out = run_dir / "executed" / f"{run_name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    root = _kernel_root()
    logger.info("Running %s (kernel %s, cwd %s)", run_name, kernel_name, root)
    t0 = time.perf_counter()
    error = ""
    try:
        with _pythonpath(root):
            pm.execute_notebook(str(src), str(out), parameters=dict(params),
                                kernel_name=kernel_name, cwd=str(root), log_output=False,
                                progress_bar=False, execution_timeout=timeout)
    except Exception as err:  # noqa: BLE001 - recorded, the other notebooks still run
        error = _error_text(err)
    seconds = round(time.perf_counter() - t0, 3)
    status = "failed" if error else "ok"
    if error:
        logger.error("%s failed after %.1f s: %s (executed copy: %s)", run_name, seconds, error,
                     out)
    else:
        logger.info("%s ok in %.1f s", run_name, seconds)
    return {"notebook": run_name, "status": status, "seconds": seconds,
            "executed_path": str(out), "error": error}


def reproduce(profile: str | os.PathLike = "smoke", only: Iterable[str] | None = None,
              run_dir: str | os.PathLike | None = None,
              figures_dir: str | os.PathLike = "figures",
              notebooks_dir: str | os.PathLike | None = None, kernel_name: str = "python3",
              timeout: float | None = None, parameters: Mapping[str, Any] | None = None,
              report: bool = True) -> pd.DataFrame:
    """Run the stage notebooks of a profile and build the report.

    Parameters
    ----------
    profile : str or path
        A profile in ``workbench/profiles`` (``"smoke"``, ``"paper"``) or a ``.yaml`` file.
    only : list of str, optional
        Run only these stages (stems, ``NN`` prefixes or names); unknown names raise
        ``ValueError`` listing the stages.
    run_dir : path, optional
        Folder of this run's artefacts; default ``runs/<profile>`` (relative to the current
        directory).
    figures_dir : path
        Where the notebooks export figures and the report is written.
    notebooks_dir : path, optional
        Default: the repository's ``notebooks``.
    kernel_name : str
        Jupyter kernel that runs the notebooks.
    timeout : float, optional
        Per-cell time limit in seconds (None: no limit).
    parameters : dict, optional
        Parameters for every notebook, over the profile's.
    report : bool
        Build ``figures_dir/report.html`` at the end.

    Returns
    -------
    status : DataFrame
        One row per notebook run now: ``notebook, status ("ok"/"failed"), seconds,
        executed_path, error``. Failures inside notebooks are recorded here, never raised.
    """
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    stages = select_stages(discover_stages(nb_dir), only)
    sections = load_profile(profile)
    name = str(sections["default"].get("profile", Path(str(profile)).stem))
    unknown = sorted(set(sections) - {"default"} - set(discover_stages(nb_dir)))
    if unknown:
        logger.warning("Profile %s has sections for notebooks that do not exist in %s: %s",
                       profile, nb_dir, unknown)
    run_dir = Path(run_dir) if run_dir is not None else Path("runs") / name
    figures_dir = Path(figures_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    atomic_write_json(run_dir / "provenance.json", {**provenance(), "profile": name})
    previous = read_status(run_dir)

    rows: list[dict[str, Any]] = []
    used: dict[str, Any] = {}
    for stage in stages:
        for run_name, section in stage_runs(stage, sections):
            params = stage_parameters(stage, sections, run_dir, figures_dir, parameters, section)
            params["run_name"] = run_name
            used[run_name] = params
            rows.append(run_stage(stage, nb_dir, run_dir, params, kernel_name, timeout,
                                  run_name=run_name))
            _write_run_files(run_dir, rows, used, previous, started, name)  # after every run
    if not stages:
        logger.warning("No notebooks NN_name.ipynb in %s.", nb_dir)
    if report:
        build_report(run_dir, figures_dir)
    failed = [r["notebook"] for r in rows if r["status"] != "ok"]
    logger.info("Reproduction %s: %d ok, %d failed%s", name, len(rows) - len(failed), len(failed),
                f" ({', '.join(failed)})" if failed else "")
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)
