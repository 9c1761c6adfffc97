"""The ``workbench`` command line.

::

    workbench reproduce --profile smoke [--only 03 05_embeddings] [--run-dir DIR] [--figures-dir DIR]
    workbench report --run-dir runs/smoke [--figures-dir figures]
    workbench models [--presets]
    workbench data download NAME PATH
    workbench data check NAME PATH [--labels TABLE] [--reader-option KEY=VALUE ...]
    workbench preprocess --dataset NAME --data-path PATH [--recipe R] [--out DIR] [--n-jobs N]
                         [--resample HZ] [--channel-policy P] [--labels TABLE]
                         [--reader-option KEY=VALUE ...]
    workbench bench [NAME [ARGS...]]
    workbench benchmark SUITE [SUITE...] [--data-path DIR | --data-root DIR] [--methods ...]
                        [--baselines ...] [--modes ...] [--profile P] [--max-subjects N]

Logs go to stderr (``--log-level``), results to stdout. Exit codes: 0 success, 1 failures (a
notebook failed, a dataset check found problems, a needed module is missing), 2 usage errors
(unknown option, profile, notebook or benchmark name; a dataset, path, recipe or reader option
that the data commands reject with ``ValueError``/``KeyError``/``FileNotFoundError``/
``TypeError``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .report import REPO_ROOT
from .utils import set_log_level

logger = logging.getLogger("workbench")
BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Unavailable(RuntimeError):
    """A piece the command needs is not importable (not written yet, or a missing dependency)."""


def _err(msg: str) -> None:
    print(f"workbench: error: {msg}", file=sys.stderr)


def _lazy(module: str, attr: str, command: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise _Unavailable(f"`workbench {command}` needs {module}.{attr}, but {module} cannot be "
                           f"imported ({e}).") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise _Unavailable(f"`workbench {command}` needs {module}.{attr}, which this version of "
                           f"{module} does not define.")
    return fn


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)  # "3" -> 3, "true" -> True, "[1, 2]" -> list


# ----------------------------------------------------------------------------- commands
def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import reproduce as rp

    nb_dir = Path(args.notebooks_dir) if args.notebooks_dir else rp.NOTEBOOKS_DIR
    try:  # validate everything a user typed before any notebook starts
        rp.select_stages(rp.discover_stages(nb_dir), args.only)
        rp.load_profile(args.profile)
    except (ValueError, FileNotFoundError) as e:
        _err(str(e))
        return EXIT_USAGE
    status = rp.reproduce(profile=args.profile, only=args.only, run_dir=args.run_dir,
                          figures_dir=args.figures_dir, notebooks_dir=nb_dir,
                          kernel_name=args.kernel, timeout=args.timeout,
                          parameters=dict(args.param or []), report=not args.no_report)
    print(status[["notebook", "status", "seconds"]].to_string(index=False))
    failed = status[status["status"] != "ok"]
    for r in failed.itertuples():
        _err(f"notebook {r.notebook} failed: {r.error}\n    executed copy: {r.executed_path}")
    if len(failed):
        _err(f"{len(failed)} of {len(status)} notebooks failed: {', '.join(failed['notebook'])}")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    if not Path(args.run_dir).is_dir():
        _err(f"run folder {args.run_dir} does not exist.")
        return EXIT_USAGE
    kw = {"title": args.title} if args.title else {}
    path = build_report(args.run_dir, args.figures_dir, out_path=args.out, **kw)
    print(path)
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_presets

    names = list_models()
    if not names:
        print("No models registered.")
    for name in names:
        presets = model_presets(name)
        print(f"{name}: presets {', '.join(sorted(presets)) or '(none)'}")
        if args.presets:
            for p, kw in sorted(presets.items()):
                print(f"    {p}: {json.dumps(kw, sort_keys=True, default=str)}")
    return EXIT_OK


def _report_failed(result: Any) -> bool:
    """Whether a dataset check result says something is wrong (``ok`` False anywhere)."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        for col in ("ok", "passed"):
            if col in result.columns:
                return not bool(result[col].astype(bool).all())
        if "status" in result.columns:
            return bool((~result["status"].astype(str).isin(["ok", "passed"])).any())
        return False
    ok = getattr(result, "ok", None)
    return ok is False


def _cmd_data(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.action == "download":
        fn = _lazy("workbench.data.readers", "download_dataset", "data download")
        result = fn(args.name, args.path)
        if result is not None:
            print(result)
        return EXIT_OK
    fn = _lazy("workbench.data.readers", "check_dataset", "data check")
    result = fn(args.name, args.path, **_reader_options(args))
    print(result.to_string(index=False) if isinstance(result, pd.DataFrame) else result)
    return EXIT_FAILED if _report_failed(result) else EXIT_OK


def _reader_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--reader-option`` pairs and ``--labels`` as reader options (a labels file must exist)."""
    options = dict(args.reader_option or [])
    if args.labels:
        if "labels" in options:
            raise ValueError("give the labels table with --labels or --reader-option labels=..., "
                             "not both")
        if not Path(args.labels).is_file():
            raise FileNotFoundError(f"--labels: no file {args.labels}")
        options["labels"] = args.labels
    return options


def _cmd_preprocess(args: argparse.Namespace) -> int:
    fn = _lazy("workbench.data.preprocess", "run_pipeline", "preprocess")
    cfg: Any = args.recipe
    overrides = {k: v for k, v in {"resample": args.resample,
                                   "channel_policy": args.channel_policy}.items() if v is not None}
    if overrides:
        get_recipe = _lazy("workbench.data.preprocess", "get_recipe", "preprocess")
        cfg = get_recipe(args.recipe or "omfa", **overrides)
    kw = {k: v for k, v in {"dataset": args.dataset, "data_path": args.data_path,
                            "cfg": cfg, "out_dir": args.out,
                            "n_jobs": args.n_jobs}.items() if v is not None}
    result = fn(**kw, reader_options=_reader_options(args))
    print(result.reports.to_string(index=False) if len(result.reports) else "no recordings")
    print(f"store: {result.store}")
    if len(result.failures):
        _err(f"{len(result.failures)} recording(s) failed:\n{result.failures.to_string()}")
        return EXIT_FAILED
    return EXIT_OK


def list_benchmarks(folder: Path | None = None) -> list[str]:
    """Names ``NAME`` of the scripts ``benchmarks/bench_NAME.py``."""
    folder = folder or BENCHMARKS_DIR
    return sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py"))


def _cmd_bench(args: argparse.Namespace) -> int:
    names = list_benchmarks()
    if not args.name:
        print("\n".join(names) if names else f"No benchmarks in {BENCHMARKS_DIR}.")
        return EXIT_OK
    if args.name not in names:
        _err(f"unknown benchmark {args.name!r}; available: {names} (scripts "
             f"{BENCHMARKS_DIR}/bench_NAME.py).")
        return EXIT_USAGE
    path = BENCHMARKS_DIR / f"bench_{args.name}.py"
    argv = sys.argv
    sys.argv = [str(path), *args.args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:  # the script's own exit code
        code = e.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_FAILED)
    finally:
        sys.argv = argv
    return EXIT_OK


def _cmd_benchmark(args: argparse.Namespace) -> int:
    """Run notebook 11_benchmark for the suites (figures, tables and report.html as
    ``workbench reproduce`` writes them); print each suite's summary."""
    import pandas as pd

    from . import reproduce as rp
    from .suites import BASELINES, list_suites

    for name in args.suite:
        if name not in list_suites() and not name.endswith((".yaml", ".yml")):
            _err(f"unknown suite {name!r}; available: {list_suites()} (or a suite .yaml file).")
            return EXIT_USAGE
    if args.data_path and len(args.suite) > 1:
        _err("--data-path names one dataset folder: give --data-root (one folder per dataset) "
             "for several suites.")
        return EXIT_USAGE
    bad = sorted(set(args.baselines or []) - set(BASELINES))
    if bad:
        _err(f"unknown baselines {bad}; available: {list(BASELINES)}.")
        return EXIT_USAGE
    # only what was given: the rest comes from the profile's 11_benchmark section
    given = {"data_path": args.data_path, "data_root": args.data_root,
             "methods": args.methods, "baselines": args.baselines, "modes": args.modes,
             "max_subjects": args.max_subjects, "max_folds": args.max_folds,
             "device": args.device}
    for key in ("data_path", "data_root"):  # relative to where the command runs, not the
        if given[key]:                        # project root the notebook resolves against
            given[key] = str(Path(given[key]).expanduser().resolve())
    params = {"suites": list(args.suite),
              **{k: (list(v) if isinstance(v, list) else v) for k, v in given.items()
                 if v is not None}}
    run_dir = Path(args.run_dir or Path("runs") / Path(args.profile).stem)
    status = rp.reproduce(profile=args.profile, only=["11_benchmark"], run_dir=run_dir,
                          figures_dir=args.figures_dir, parameters=params)
    row = status.iloc[0]
    if row["status"] != "ok":
        _err(f"11_benchmark failed: {row['error']}\n    executed copy: {row['executed_path']}")
        return EXIT_FAILED
    code = EXIT_OK
    for name in args.suite:
        stem = Path(name).stem
        summary = run_dir / "benchmarks" / stem / "summary.csv"
        if not summary.exists():
            _err(f"suite {stem}: no results (see {run_dir / 'tables'} for the missing data "
                 "and how to get it).")
            code = EXIT_FAILED
            continue
        info = json.loads((summary.parent / "suite.json").read_text())
        df = pd.read_csv(summary)
        df = df[df["metric"] == info["metric"]]
        print(f"# {stem}: {info['metric']} (chance {info['chance']:.2f}); "
              + ("the published protocol" if info["exact"] else info["note"]))
        print(df[["method", "mode", "mean", "std", "n"]].round(4).to_string(index=False))
    print(f"report: {Path(args.figures_dir) / 'report.html'}")
    return code


# ----------------------------------------------------------------------------- parser
def _add_reader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", metavar="TABLE",
                   help="labels table (CSV/TSV: file + label, or file, onset, duration, label)")
    p.add_argument("--reader-option", action="append", type=_parse_param, metavar="KEY=VALUE",
                   help="reader option (YAML value), e.g. task=imagery_lr, sfreq=256, "
                        "'channels=[Fp1, Fp2]'; repeatable")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``workbench`` command."""
    p = argparse.ArgumentParser(prog="workbench", description="EEG foundation-model workbench.")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("reproduce", help="run the stage notebooks with papermill, then the report")
    r.add_argument("--profile", default="smoke",
                   help="smoke, paper, or a .yaml parameter file (default: smoke)")
    r.add_argument("--only", nargs="+", metavar="NAME",
                   help="notebooks to run: stems (03_finetune) or NN prefixes (03)")
    r.add_argument("--run-dir", help="folder of this run's artefacts (default: runs/PROFILE)")
    r.add_argument("--figures-dir", default="figures", help="figures and report.html")
    r.add_argument("--notebooks-dir", help="default: the repository's notebooks/")
    r.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    r.add_argument("--timeout", type=float, help="per-cell time limit in seconds")
    r.add_argument("-p", "--param", action="append", type=_parse_param, metavar="KEY=VALUE",
                   help="parameter for every notebook (YAML value), over the profile's")
    r.add_argument("--no-report", action="store_true", help="skip report.html")
    r.set_defaults(func=_cmd_reproduce)

    rep = sub.add_parser("report", help="build the HTML report of a run")
    rep.add_argument("--run-dir", required=True)
    rep.add_argument("--figures-dir", default="figures")
    rep.add_argument("--out", help="default: FIGURES_DIR/report.html")
    rep.add_argument("--title")
    rep.set_defaults(func=_cmd_report)

    m = sub.add_parser("models", help="list registered models and their presets")
    m.add_argument("--presets", action="store_true", help="print each preset's arguments")
    m.set_defaults(func=_cmd_models)

    d = sub.add_parser("data", help="download or check a dataset")
    dsub = d.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("download", "download a public dataset"),
                         ("check", "check a dataset folder (files, checksums, channels)")):
        a = dsub.add_parser(action, help=text)
        a.add_argument("name")
        a.add_argument("path")
        if action == "check":
            _add_reader_options(a)
    d.set_defaults(func=_cmd_data)

    pre = sub.add_parser("preprocess", help="run the preprocessing pipeline into a window store")
    pre.add_argument("--dataset", required=True, help="a reader name (see docs/datasets.md)")
    pre.add_argument("--data-path")
    pre.add_argument("--recipe", help="omfa, stelar, trace, eegm2 or minimal")
    pre.add_argument("--out", help="folder of the resulting WindowStore")
    pre.add_argument("--n-jobs", type=int)
    pre.add_argument("--resample", type=float, metavar="HZ",
                     help="resample every recording to this rate (default: the recipe's)")
    pre.add_argument("--channel-policy", choices=["reorder", "intersection", "interpolate"],
                     help="recordings with other channels than the first: reorder the same set "
                          "(default), keep the channels common to all, or interpolate missing ones")
    _add_reader_options(pre)
    pre.set_defaults(func=_cmd_preprocess)

    b = sub.add_parser("bench", help="run benchmarks/bench_NAME.py (no NAME: list them)")
    b.add_argument("name", nargs="?")
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    b.set_defaults(func=_cmd_bench)

    bm = sub.add_parser("benchmark", help="run benchmark suites: every method and the classic "
                                          "baselines on a published protocol (notebook 11)")
    bm.add_argument("suite", nargs="+", help="eegmat, physionet_mi, sleep_edf or a .yaml file")
    bm.add_argument("--data-path", help="the dataset's folder (one suite)")
    bm.add_argument("--data-root", help="a folder holding one folder per dataset")
    bm.add_argument("--methods", nargs="+", metavar="METHOD",
                    help="foundation methods (default: all registered)")
    bm.add_argument("--baselines", nargs="*", metavar="NAME",
                    help="de, eegnet, shallow_convnet (default: all; none: no value)")
    bm.add_argument("--modes", nargs="+", help="adaptation modes (default: linear full)")
    bm.add_argument("--profile", default="smoke", help="smoke or paper (default: smoke)")
    bm.add_argument("--max-subjects", type=int, help="use only the first N subjects")
    bm.add_argument("--max-folds", type=int, help="run only the first N subject folds")
    bm.add_argument("--device", help="auto, cpu or cuda (default: the profile's)")
    bm.add_argument("--run-dir", help="default: runs/PROFILE")
    bm.add_argument("--figures-dir", default="figures", help="figures and report.html")
    bm.set_defaults(func=_cmd_benchmark)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``workbench`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 for usage errors, 0 for --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    set_log_level(args.log_level)
    try:
        return args.func(args)
    except _Unavailable as e:
        _err(str(e))
        return EXIT_FAILED
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        if args.command not in ("data", "preprocess"):
            raise
        # the library's errors name the bad argument (dataset, path, recipe): a usage error
        logger.debug("%s failed", args.command, exc_info=True)
        _err(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
