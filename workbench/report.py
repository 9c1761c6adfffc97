"""Figure export, run artefacts (metrics, tables, provenance) and the self-contained HTML report.

One exporter for every figure of the workbench. Notebooks call

* :func:`export_figure` for each figure: a matplotlib ``Figure`` becomes PNG (150 dpi) + SVG, a
  plotly figure becomes a standalone HTML page plus its JSON (and a PNG when kaleido with a
  browser is available); the data behind the figure is written as CSV next to it;
* :func:`save_table` for result tables (CSV under ``run_dir/tables``);
* :func:`record_metrics` for the headline numbers that tests assert
  (``run_dir/metrics/<notebook>.json``).

:func:`build_report` turns a run folder and a figures folder into one HTML file that opens
offline: PNGs are embedded as base64, plotly figures are embedded as divs drawn by one inlined
copy of plotly.js, nothing is fetched from the network.

Layout on disk (names are deterministic, ``{notebook}__{slug(name)}.{ext}``)::

    figures/manifest.json                  one entry per figure (name, notebook, files, caption)
    figures/05_embeddings__tsne.png|.svg|.csv
    figures/07_expert_routing__usage.html|.json|.csv   (plotly)
    figures/plotly.min.js                  shared by the standalone plotly pages (offline)
    runs/<profile>/metrics/<notebook>.json
    runs/<profile>/tables/<notebook>__<name>.csv
    runs/<profile>/status.csv, timings.json, parameters.json, provenance.json (the runner's)

Every file is written atomically (a temporary file renamed into place); the manifest and the
metrics files are read-modify-written under an advisory lock so parallel notebooks do not lose
entries.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import html
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .utils import atomic_path, atomic_write_json, atomic_write_text

logger = logging.getLogger("workbench")

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
PLOTLY_JS = "plotly.min.js"
PNG_DPI = 150
PROVENANCE_PACKAGES = ("torch", "numpy", "scipy", "pandas", "mne", "mne-icalabel", "scikit-learn",
                       "papermill", "umap-learn", "plotly", "matplotlib")
_NOTEBOOK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MPL_FORMATS = ("png", "svg", "pdf")


# ----------------------------------------------------------------------------- names
def slug(name: str) -> str:
    """File-name slug of ``name``: lower case, only ``[a-z0-9_-]``, runs of others -> ``_``.

    >>> slug("t-SNE: pre-trained (SEED)")
    't-sne_pre-trained_seed'
    """
    s = re.sub(r"[^a-z0-9_-]+", "_", str(name).strip().lower())
    s = re.sub(r"_+", "_", s).strip("_-")
    if not s:
        raise ValueError(f"Invalid value for the 'name' parameter: {name!r} has no letters or "
                         "digits to build a file name from.")
    return s


def _check_notebook(notebook: str) -> str:
    if not isinstance(notebook, str) or not _NOTEBOOK_RE.match(notebook):
        raise ValueError(f"Invalid value for the 'notebook' parameter: expected a notebook stem "
                         f"such as '05_embeddings' (letters, digits, '_', '-', '.'), got "
                         f"{notebook!r}.")
    return notebook


def figure_stem(name: str, notebook: str | None = None) -> str:
    """The deterministic file stem of a figure: ``{notebook}__{slug(name)}`` (or ``slug(name)``)."""
    return f"{_check_notebook(notebook)}__{slug(name)}" if notebook else slug(name)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX ``flock``; a no-op elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_csv(df: pd.DataFrame | pd.Series, path: Path, index: bool | None) -> Path:
    if isinstance(df, pd.Series):
        df = df.to_frame()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"Expected a pandas DataFrame for {path.name}, got {type(df).__name__}.")
    if index is None:  # keep a meaningful index, drop the default 0..n-1
        index = not (isinstance(df.index, pd.RangeIndex) and df.index.name is None)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)
    return path


# ----------------------------------------------------------------------------- figures
def _figure_kind(fig: Any) -> str:
    from matplotlib.figure import Figure

    if isinstance(fig, Figure):
        return "matplotlib"
    if type(fig).__module__.startswith("plotly") and hasattr(fig, "to_plotly_json"):
        return "plotly"
    raise TypeError(f"export_figure expects a matplotlib Figure or a plotly Figure, got "
                    f"{type(fig).__module__}.{type(fig).__name__}.")


def _default_caption(fig: Any, kind: str) -> str:
    if kind == "matplotlib":
        sup = getattr(fig, "_suptitle", None)
        if sup is not None and sup.get_text():
            return sup.get_text()
        for ax in fig.axes:
            if ax.get_title():
                return ax.get_title()
        return ""
    title = fig.layout.title.text if fig.layout.title is not None else None
    return title or ""


def _save_matplotlib(fig, stem: str, out_dir: Path, formats: Iterable[str]) -> list[Path]:
    import matplotlib

    written = []
    # Fixed SVG ids and no date stamps: the same figure gives the same bytes.
    with matplotlib.rc_context({"svg.hashsalt": "workbench"}):
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            meta = {"png": {"Software": None}, "svg": {"Date": None},
                    "pdf": {"CreationDate": None}}[fmt]
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata=meta)
            written.append(path)
    return written


def _ensure_plotly_js(out_dir: Path) -> Path:
    """Write ``plotly.min.js`` once into ``out_dir`` (the standalone pages load it from there)."""
    from plotly.offline import get_plotlyjs

    path = out_dir / PLOTLY_JS
    js = get_plotlyjs().encode()
    if not path.exists() or path.stat().st_size != len(js):
        with atomic_path(path) as tmp:
            tmp.write_bytes(js)
    return path


def _save_plotly(fig, stem: str, out_dir: Path, formats: Iterable[str]) -> list[Path]:
    written = []
    _ensure_plotly_js(out_dir)
    # "directory": the page loads ./plotly.min.js, so it opens offline without a 4.8 MB copy of
    # plotly.js per figure. The JSON is what build_report embeds.
    page = out_dir / f"{stem}.html"
    atomic_write_text(page, fig.to_html(include_plotlyjs="directory", full_html=True,
                                        div_id=stem))
    written.append(page)
    spec = out_dir / f"{stem}.plotly.json"
    atomic_write_text(spec, fig.to_json())
    written.append(spec)
    static = [f for f in formats if f in ("png", "svg")]
    if static and importlib.util.find_spec("kaleido") is not None:
        for fmt in static:  # optional: kaleido needs a Chromium it can start
            path = out_dir / f"{stem}.{fmt}"
            try:
                img = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
            except Exception as err:  # noqa: BLE001 - any kaleido/browser failure is optional
                logger.info("No static %s for plotly figure %s: %s", fmt, stem, err)
                break
            with atomic_path(path) as tmp:
                tmp.write_bytes(img)
            written.append(path)
    return written


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"figures": []}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("figures"), list):
        raise ValueError(f"{path}: not a figures manifest (expected {{'figures': [...]}}).")
    return data


def read_manifest(out_dir: str | os.PathLike = "figures") -> list[dict[str, Any]]:
    """The entries of ``out_dir/manifest.json`` (empty when there is none), in export order."""
    return _read_manifest(Path(out_dir) / MANIFEST)["figures"]


def export_figure(fig: Any, name: str, out_dir: str | os.PathLike = "figures",
                  data: pd.DataFrame | pd.Series | None = None, notebook: str | None = None,
                  formats: Iterable[str] = ("png", "svg"), caption: str | None = None,
                  close: bool = False) -> list[Path]:
    """Write a figure (and the data behind it) under deterministic names.

    Parameters
    ----------
    fig : matplotlib.figure.Figure or plotly.graph_objects.Figure
        The figure. Matplotlib -> one file per entry of ``formats`` (PNG at 150 dpi, SVG, PDF).
        Plotly -> ``{stem}.html`` (standalone, loads the ``plotly.min.js`` written once into
        ``out_dir``, so it opens offline) and ``{stem}.plotly.json`` (embedded by
        :func:`build_report`); PNG/SVG only when kaleido and a browser work (never required).
    name : str
        Figure name; slugged into the file name.
    out_dir : path
        Folder of the figures (created).
    data : DataFrame or Series, optional
        The numbers behind the figure, written to ``{stem}.csv`` (index kept unless it is the
        default 0..n-1 range).
    notebook : str, optional
        Stem of the notebook making the figure (``"05_embeddings"``); prefixes the file names and
        groups the figure in the report.
    formats : iterable of str
        Static formats for matplotlib figures: any of ``"png"``, ``"svg"``, ``"pdf"``.
    caption : str, optional
        Caption for the report; defaults to the figure's (sup)title.
    close : bool
        Close a pyplot-managed matplotlib figure after saving it (figures made by
        :mod:`workbench.viz` are not pyplot-managed and need no closing).

    Returns
    -------
    paths : list of Path
        Every file written, the CSV last.
    """
    kind = _figure_kind(fig)
    formats = tuple(formats)
    for fmt in formats:
        if fmt not in _MPL_FORMATS:
            raise ValueError(f"Invalid value in the 'formats' parameter: expected some of "
                             f"{list(_MPL_FORMATS)}, got {fmt!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = figure_stem(name, notebook)
    if kind == "matplotlib":
        written = _save_matplotlib(fig, stem, out, formats)
        if close and getattr(fig.canvas, "manager", None) is not None:
            import matplotlib.pyplot as plt  # only pyplot-managed figures need closing

            plt.close(fig)
    else:
        written = _save_plotly(fig, stem, out, formats)
    if data is not None:
        written.append(_write_csv(data, out / f"{stem}.csv", index=None))

    entry = {"key": stem, "name": str(name), "notebook": notebook, "kind": kind,
             "files": [p.name for p in written],
             "caption": _default_caption(fig, kind) if caption is None else str(caption),
             "created": _now()}
    with _locked(out):
        manifest = _read_manifest(out / MANIFEST)
        figures = manifest["figures"]
        old = next((i for i, e in enumerate(figures) if e.get("key") == stem), None)
        if old is None:
            figures.append(entry)
        else:  # same figure exported again: drop files it no longer has, keep its place
            for stale in set(figures[old].get("files", [])) - set(entry["files"]):
                with contextlib.suppress(FileNotFoundError):
                    (out / stale).unlink()
            figures[old] = entry
        atomic_write_json(out / MANIFEST, manifest)
    logger.info("Figure %s -> %s", stem, ", ".join(p.name for p in written))
    return written


# ----------------------------------------------------------------------------- tables, metrics
def table_path(name: str, out_dir: str | os.PathLike, notebook: str | None = None) -> Path:
    """Where :func:`save_table` writes: ``out_dir/tables/{notebook}__{slug(name)}.csv``."""
    return Path(out_dir) / "tables" / f"{figure_stem(name, notebook)}.csv"


def save_table(df: pd.DataFrame, name: str, out_dir: str | os.PathLike = "runs/manual",
               notebook: str | None = None, index: bool | None = None) -> Path:
    """Write a result table as CSV to ``out_dir/tables/{notebook}__{slug(name)}.csv``.

    ``out_dir`` is the run folder (``run_dir``); :func:`build_report` shows the tables of each
    notebook. ``index=None`` keeps a meaningful index and drops the default 0..n-1 one.
    """
    path = table_path(name, out_dir, notebook)
    _write_csv(df, path, index=index)
    logger.info("Table %s -> %s", name, path)
    return path


def _jsonable(value: Any, key: str) -> Any:
    import numpy as np

    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, key) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), key)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "item") and hasattr(value, "numel"):  # a torch tensor
        if value.numel() != 1:
            raise ValueError(f"Metric {key!r} is a tensor of {value.numel()} elements; record "
                             "a number (call .item()) or a list.")
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Metric {key!r} has type {type(value).__name__}; expected a number, string, "
                    "bool, None, list or dict.")


def metrics_path(notebook: str, run_dir: str | os.PathLike) -> Path:
    """``run_dir/metrics/<notebook>.json``."""
    return Path(run_dir) / "metrics" / f"{_check_notebook(notebook)}.json"


def record_metrics(notebook: str, metrics: Mapping[str, Any],
                   run_dir: str | os.PathLike = "runs/manual") -> dict[str, Any]:
    """Merge ``metrics`` into ``run_dir/metrics/<notebook>.json`` (atomically) and return them all.

    Keys already recorded by earlier calls are kept unless ``metrics`` sets them again. Values
    may be numbers (NumPy / 1-element torch scalars included), strings, bools, lists or dicts.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"record_metrics expects a mapping of metric name -> value, got "
                        f"{type(metrics).__name__}.")
    new = {str(k): _jsonable(v, str(k)) for k, v in metrics.items()}
    path = metrics_path(notebook, run_dir)
    with _locked(path.parent):
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(new)
        atomic_write_json(path, current)
    return current


def load_metrics(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every notebook's recorded metrics: ``{notebook: {key: value}}``, sorted by notebook."""
    folder = Path(run_dir) / "metrics"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# ----------------------------------------------------------------------------- provenance
def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where and with what a run was made.

    Returns
    -------
    info : dict
        ``timestamp``, ``git_commit`` (40 hex digits, None outside a git checkout), ``git_dirty``
        (tracked files modified), ``python``, ``platform``, ``cpu_count``, ``cuda_device`` (name
        of GPU 0 or None), ``workbench`` (version) and ``packages`` (name -> version or None).
    """
    import workbench

    root = Path(repo) if repo is not None else REPO_ROOT
    commit = dirty = None
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    cuda = None
    try:
        import torch

        if torch.cuda.is_available():
            cuda = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return {
        "timestamp": _now(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_device": cuda,
        "workbench": workbench.__version__,
        "packages": {p: _version(p) for p in PROVENANCE_PACKAGES},
    }


# ----------------------------------------------------------------------------- report
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}.ok{color:#1a7f37;font-weight:bold}.failed{color:#cf222e;font-weight:bold}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}
figure{margin:1em 0;border:1px solid #ddd;padding:.5em}figure img{max-width:100%}
figcaption{font-size:.9em;color:#444}.files{font-size:.8em;color:#666}
.scroll{max-height:30em;overflow:auto}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        v = json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
        rows.append(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _rel(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _figure_html(entry: Mapping[str, Any], fig_dir: Path, report_dir: Path,
                 embed_plotly: bool) -> tuple[str, bool]:
    """HTML of one manifest entry; the flag says whether it needs plotly.js."""
    files = [fig_dir / f for f in entry.get("files", [])]
    by_ext = {}
    for f in files:
        by_ext.setdefault("plotly.json" if f.name.endswith(".plotly.json") else f.suffix[1:], f)
    body, needs_js = "", False
    spec = by_ext.get("plotly.json")
    if entry.get("kind") == "plotly" and embed_plotly and spec is not None and spec.exists():
        div = "fig-" + re.sub(r"[^A-Za-z0-9_-]", "_", str(entry.get("key")))
        payload = spec.read_text().replace("</", "<\\/")
        body = (f'<div id="{div}" style="width:100%;height:520px"></div><script>(function(){{'
                f'var f={payload};Plotly.newPlot("{div}",f.data,f.layout||{{}},'
                f'{{responsive:true}});}})();</script>')
        needs_js = True
    elif "png" in by_ext and by_ext["png"].exists():
        b64 = base64.b64encode(by_ext["png"].read_bytes()).decode()
        body = f'<img alt="{_esc(entry.get("name"))}" src="data:image/png;base64,{b64}">'
    elif "svg" in by_ext and by_ext["svg"].exists():
        b64 = base64.b64encode(by_ext["svg"].read_bytes()).decode()
        body = f'<img alt="{_esc(entry.get("name"))}" src="data:image/svg+xml;base64,{b64}">'
    else:
        missing = [f.name for f in files if not f.exists()]
        body = f"<p>No embeddable file{' (missing: ' + ', '.join(missing) + ')' if missing else ''}.</p>"
    links = " | ".join(f'<a href="{_esc(_rel(f, report_dir))}">{_esc(f.name)}</a>'
                       for f in files if f.exists())
    cap = f": {_esc(entry['caption'])}" if entry.get("caption") else ""
    return (f"<figure>{body}<figcaption><b>{_esc(entry.get('name'))}</b>{cap}"
            f'<div class="files">{links}</div></figcaption></figure>'), needs_js


def build_report(run_dir: str | os.PathLike, figures_dir: str | os.PathLike = "figures",
                 out_path: str | os.PathLike | None = None,
                 title: str = "EEG workbench: reproduction report",
                 embed_plotly: bool = True) -> Path:
    """Write one self-contained HTML report of a run.

    Parameters
    ----------
    run_dir : path
        The run folder: ``status.csv``, ``parameters.json``, ``provenance.json`` (written by
        :func:`workbench.reproduce.reproduce`), ``metrics/`` and ``tables/``. Any of them may be
        missing (a manual run); the provenance is then taken now.
    figures_dir : path
        The folder with the figures and their ``manifest.json``.
    out_path : path, optional
        Defaults to ``figures_dir/report.html``.
    title : str
        Page title.
    embed_plotly : bool
        Embed plotly figures (one inlined copy of plotly.js, ~4.8 MB, only when there is one);
        otherwise link their standalone pages.

    Returns
    -------
    path : Path
        The report. It loads nothing from the network: images are base64 data URIs.
    """
    run_dir, fig_dir = Path(run_dir), Path(figures_dir)
    out_path = Path(out_path) if out_path is not None else fig_dir / "report.html"
    report_dir = out_path.parent.resolve()

    status_csv = run_dir / "status.csv"
    status = (pd.read_csv(status_csv, dtype={"error": str}, keep_default_na=False)
              if status_csv.exists() else pd.DataFrame(columns=["notebook", "status"]))
    params = _read_json(run_dir / "parameters.json", {})
    prov = _read_json(run_dir / "provenance.json", None) or provenance()
    metrics = load_metrics(run_dir)
    tables = sorted((run_dir / "tables").glob("*.csv")) if (run_dir / "tables").is_dir() else []
    figures = read_manifest(fig_dir)

    notebooks = list(dict.fromkeys(status["notebook"].astype(str)))
    extra = set(metrics) | set(params) | {e["notebook"] for e in figures if e.get("notebook")}
    known = set(notebooks) | extra
    for t in tables:  # a table belongs to the longest known run name that prefixes it
        owners = [n for n in known if t.stem.startswith(f"{n}__")]
        if not owners and "__" in t.stem:
            extra.add(t.stem.split("__", 1)[0])
    notebooks += sorted(extra - set(notebooks))
    rows = {str(r["notebook"]): r for r in status.to_dict("records")}

    parts, needs_js = [], False
    summary = ["<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>figures</th></tr>"]
    for nb in notebooks:
        r = rows.get(nb, {})
        st = str(r.get("status", "-"))
        secs = r.get("seconds", "")
        secs = f"{float(secs):.1f}" if secs not in ("", None) else "-"
        n_fig = sum(e.get("notebook") == nb for e in figures)
        summary.append(f'<tr><td><a href="#{_esc(nb)}">{_esc(nb)}</a></td>'
                       f'<td class="{_esc(st)}">{_esc(st)}</td><td>{secs}</td><td>{n_fig}</td></tr>')
    summary.append("</table>")

    for nb in notebooks:
        r = rows.get(nb, {})
        sec = [f'<h2 id="{_esc(nb)}">{_esc(nb)}</h2>']
        if r:
            st = str(r.get("status"))
            line = f'<p>Status: <span class="{_esc(st)}">{_esc(st)}</span>'
            if r.get("seconds") not in ("", None):
                line += f" &middot; wall time {float(r['seconds']):.1f} s"
            ex = str(r.get("executed_path") or "")
            if ex:
                line += (f' &middot; executed copy: <a href="{_esc(_rel(Path(ex), report_dir))}">'
                         f"<code>{_esc(ex)}</code></a>")
            sec.append(line + "</p>")
            if r.get("error"):
                sec.append(f"<pre>{_esc(r['error'])}</pre>")
        if nb in params:
            sec.append("<h3>Parameters</h3>" + _kv_table(params[nb]))
        if nb in metrics:
            sec.append("<h3>Metrics</h3>" + _kv_table(metrics[nb]))
        for t in (t for t in tables if t.stem.startswith(nb + "__")):
            df = pd.read_csv(t)
            sec.append(f"<h3>Table {_esc(t.stem.split('__', 1)[1])}</h3><div class=\"scroll\">"
                       + df.to_html(index=False, border=0, max_rows=200, float_format="{:.4g}".format)
                       + "</div>")
        for e in (e for e in figures if e.get("notebook") == nb):
            h, js = _figure_html(e, fig_dir, report_dir, embed_plotly)
            sec.append(h)
            needs_js |= js
        parts.append("\n".join(sec))
    loose = [e for e in figures if not e.get("notebook")]
    if loose:
        sec = ['<h2 id="other-figures">Other figures</h2>']
        for e in loose:
            h, js = _figure_html(e, fig_dir, report_dir, embed_plotly)
            sec.append(h)
            needs_js |= js
        parts.append("\n".join(sec))

    prov_flat = {k: v for k, v in prov.items() if k != "packages"}
    prov_flat.update({f"package {k}": v for k, v in (prov.get("packages") or {}).items()})
    head_js = ""
    if needs_js:
        from plotly.offline import get_plotlyjs

        head_js = "<script>" + get_plotlyjs().replace("</script", "<\\/script") + "</script>"
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}'
           f"</title><style>{_CSS}</style>{head_js}</head><body><h1>{_esc(title)}</h1>"
           f"<p>Run folder <code>{_esc(run_dir)}</code>, figures <code>{_esc(fig_dir)}</code>; "
           f"report written {_esc(_now())}.</p><h2>Summary</h2>{''.join(summary)}"
           f"<h2>Provenance</h2>{_kv_table(prov_flat)}" + "\n".join(parts) + "</body></html>")
    atomic_write_text(out_path, doc)
    logger.info("Report -> %s (%d notebooks, %d figures)", out_path, len(notebooks), len(figures))
    return out_path
