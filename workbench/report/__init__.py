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

from .export import (
    MANIFEST,
    PLOTLY_JS,
    export_figure,
    figure_stem,
    read_manifest,
    save_table,
    slug,
    table_path,
)
from .html import build_report
from .records import REPO_ROOT, load_metrics, metrics_path, provenance, record_metrics

__all__ = ["MANIFEST", "PLOTLY_JS", "REPO_ROOT", "build_report", "export_figure", "figure_stem",
           "load_metrics", "metrics_path", "provenance", "read_manifest", "record_metrics",
           "save_table", "slug", "table_path"]
