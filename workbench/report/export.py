"""Figure and table export: one exporter for every figure, under deterministic names.

See :mod:`workbench.report` for the layout on disk.
"""


from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils import atomic_path, atomic_write_json, atomic_write_text

logger = logging.getLogger("workbench")

MANIFEST = "manifest.json"
PLOTLY_JS = "plotly.min.js"
PNG_DPI = 150
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


