"""The self-contained HTML report of a run (figures embedded, nothing fetched)."""


from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils import atomic_write_text
from .export import _now, read_manifest
from .records import load_metrics, provenance

logger = logging.getLogger("workbench")

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


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if not pd.isna(std) else "")


def _overview_html(run_dir: Path) -> str:
    """The results overview (see :mod:`workbench.report.overview`) as an HTML table."""
    from .overview import results_overview

    table = results_overview(run_dir)
    if table.empty:
        return "<p>No fine-tuning results in this run.</p>"
    head = ("<table><tr><th>method</th><th>dataset</th><th>protocol</th><th>variant</th>"
            "<th>mode</th><th>metric</th><th>ours (mean ± std)</th><th>n</th>"
            "<th>DE baseline, same folds</th><th>paper</th><th>notes</th><th>details</th></tr>")
    rows = [head]
    for r in table.itertuples():
        note = (f'<span class="error">{r.confounded} fold(s) measure recording identity</span>'
                if r.confounded else "")
        paper = "-" if pd.isna(r.paper) else f"{r.paper:.3f}"
        rows.append(
            f"<tr><td>{_esc(r.method)}</td><td>{_esc(r.dataset)}</td><td>{_esc(r.protocol)}</td>"
            f"<td>{_esc(r.variant)}</td><td>{_esc(r.mode)}</td><td>{_esc(r.metric)}</td>"
            f"<td>{_fmt(r.ours_mean, r.ours_std)}</td><td>{r.n}</td>"
            f"<td>{_fmt(r.baseline_mean, r.baseline_std)}</td><td>{paper}</td><td>{note}</td>"
            f'<td><a href="#{_esc(r.notebook)}">{_esc(r.notebook)}</a></td></tr>')
    rows.append("</table><p>The paper's number appears only where we ran its dataset; on the "
                "embedded synthetic corpus the orderings, not the values, are comparable.</p>")
    return "".join(rows)


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
           f"report written {_esc(_now())}.</p><h2 id=\"results\">Results overview</h2>"
           f"{_overview_html(run_dir)}<h2>Summary</h2>{''.join(summary)}"
           f"<h2>Provenance</h2>{_kv_table(prov_flat)}" + "\n".join(parts) + "</body></html>")
    atomic_write_text(out_path, doc)
    logger.info("Report -> %s (%d notebooks, %d figures)", out_path, len(notebooks), len(figures))
    return out_path
