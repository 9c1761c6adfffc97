"""Write notebooks/01_preprocess.ipynb (no outputs). Run: ``python notebooks/_build/01_preprocess.py``."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMETERS = '''\
profile: str = "smoke"  # run profile: "smoke" (CPU, minutes) or "paper" (every recording)
run_dir: str = "runs/manual"  # folder for this run's artefacts (tables, metrics, the store)
figures_dir: str = "figures"  # where figures are exported (PNG + SVG + CSV of the data)
run_name: str = "01_preprocess"  # name under which metrics, tables and figures are recorded
device: str = "auto"  # unused: preprocessing runs on the CPU (kept for a uniform interface)
seed: int = 42  # seed of the synthetic corpus and of the ICA
interactive: bool = True  # show ipywidgets (batch runs such as workbench reproduce turn them off)
dataset: str = "syn_deap"  # syn_seed / syn_deap / syn_dreamer (embedded) or a reader (eegmmidb)
data_path: str = ""  # folder of the real files when `dataset` is a reader name
recipe: str = "omfa"  # omfa / stelar / trace / eegm2 / minimal
n_recordings: int = 2  # recordings (or files) to preprocess, 0 for all
n_jobs: int = 1  # recordings processed in parallel'''

CELLS = [
    ("md", """\
# 01 · Preprocessing: MNE pipeline with ICA + ICLabel

Runs the preprocessing pipeline of `workbench.data.preprocess` on one dataset (by default two
recordings of the embedded synthetic corpus, which carries eye blinks, muscle bursts and 50 Hz
line noise on super-Gaussian sources; `dataset="eegmmidb", data_path=...` for real files) with a
named recipe. The One Model for All recipe (`omfa`): average reference, 1-49 Hz, ICA (picard) +
ICLabel with every non-brain component excluded, 2 s windows with 0.2 s overlap, native rate.

Shown: the per-recording report, raw vs cleaned spectra, ICA component scalp maps with their
ICLabel class and probability, what was excluded, and a browser over recordings and components.
A second run with the same inputs is served from the cache."""),
    ("params", PARAMETERS),
    ("code", """\
%matplotlib inline
from pathlib import Path

import pandas as pd

from workbench.data import preprocess_viz as pv
from workbench.data.preprocess import get_recipe, run_pipeline
from workbench.report import export_figure, record_metrics, save_table
from workbench.utils import set_log_level

set_log_level("WARNING")
NB = run_name
cfg = get_recipe(recipe, seed=seed)
out_dir = Path(run_dir) / "preprocess" / f"{dataset}_{recipe}"
limit = n_recordings or None
if dataset.startswith("syn_"):
    from workbench.data.synthetic import make_synthetic_recordings

    small = profile == "smoke"
    inputs = make_synthetic_recordings(dataset, n_subjects=2 if small else 8, n_sessions=2,
                                       n_trials_per_class=4 if small else 20, seed=seed)
    inputs = inputs[:limit]
    result = run_pipeline(inputs, cfg=cfg, out_dir=out_dir, n_jobs=n_jobs)
else:
    inputs = None
    result = run_pipeline(dataset=dataset, data_path=data_path, cfg=cfg, out_dir=out_dir,
                          n_jobs=n_jobs, limit=limit)
print(result.store)
print(f"{len(result.reports)} recordings cleaned, {len(result.failures)} failed, "
      f"{result.seconds:.1f} s")"""),
    ("md", "## The per-recording report\nBad channels (flat or extreme variance, interpolated), "
           "ICA components and the excluded ones with their ICLabel class, windows kept and "
           "rejected, time taken and whether the result came from the cache."),
    ("code", """\
report = pv.report_table(result)
save_table(report, "report", run_dir, notebook=NB)
if len(result.failures):
    display(result.failures)
report"""),
    ("md", "## Raw vs cleaned spectra\nChannel-mean power spectra of the first recording "
           "before and after cleaning (filters, ICA)."),
    ("code", """\
key = result.reports["key"].iloc[0]
raw_rec = pv.original_recording(result, key, inputs)
spectra = pv.spectra_table(raw_rec, result.cleaned(key))
fig = pv.plot_spectra(spectra, title=f"{key}: raw vs cleaned ({recipe})")
export_figure(fig, "psd_raw_vs_cleaned", figures_dir, data=spectra, notebook=NB)
line_db = pv.band_reduction_db(spectra, 49.0, 51.0)
alpha_db = pv.band_reduction_db(spectra, 8.0, 12.0)
print(f"50 Hz line power reduced by {line_db:.1f} dB; 8-12 Hz power changed by {alpha_db:.1f} dB")
fig"""),
    ("md", "With MNE's default transition band (a quarter of the cut-off: 12.25 Hz for a 49 Hz "
           "low-pass, -6 dB at 55 Hz) the OMFA band-pass barely touches 50 Hz line noise; it "
           "goes when ICLabel labels a line-noise component, or with a notch "
           "(`get_recipe(\"omfa\", notch=[50.0])`)."),
    ("md", "## ICA components and their ICLabel labels\nScalp maps of the components of the "
           "first recording, titled with the top ICLabel class and its probability; red titles "
           "mark excluded components."),
    ("code", """\
maps = pv.ica_maps(result, key)
if maps is None:
    print(f"recipe {recipe!r} runs no ICA")
else:
    table = result.ica[key]
    fig = pv.plot_components(maps[0], maps[1], table)
    export_figure(fig, "ica_components", figures_dir, data=table, notebook=NB)
    display(fig)"""),
    ("md", "## What was excluded"),
    ("code", """\
excluded = pv.excluded_table(result)
classes = pv.class_counts(result)
save_table(excluded, "excluded_components", run_dir, notebook=NB)
save_table(classes, "iclabel_classes", run_dir, notebook=NB)
display(classes)
excluded"""),
    ("md", "## Cache\nThe same inputs and settings again: every recording comes from the cache."),
    ("code", """\
again = run_pipeline(inputs, cfg=cfg, out_dir=out_dir, n_jobs=n_jobs) if inputs is not None else \\
    run_pipeline(dataset=dataset, data_path=data_path, cfg=cfg, out_dir=out_dir, n_jobs=n_jobs,
                 limit=limit)
print(f"first run {result.seconds:.1f} s, second run {again.seconds:.2f} s "
      f"({int(again.reports['from_cache'].sum())}/{len(again.reports)} from the cache)")"""),
    ("md", "## Browse recordings and components\nPick a recording and a component: its scalp "
           "map, its seven ICLabel probabilities and the recording's spectra (needs a live "
           "kernel; under papermill the first view is rendered once)."),
    ("code", """\
browser = None
if interactive:
    try:
        browser = pv.ica_browser(result, inputs)
    except Exception as e:  # widgets are a convenience; never fail a batch run on them
        print(f"browser unavailable: {e}")
browser"""),
    ("code", """\
n_comp = int(result.reports["n_components"].sum())
n_excl = int(len(excluded))
blink = excluded["label"].eq("eye blink").groupby(excluded["key"]).any() if n_excl else pd.Series()
record_metrics(NB, {
    "dataset": dataset, "recipe": recipe, "n_recordings": len(result.reports),
    "n_failures": len(result.failures), "n_windows": len(result.store) if result.store else 0,
    "n_components": n_comp, "n_excluded": n_excl,
    "recordings_with_blink_excluded": int(blink.sum()),
    "power_reduction_db_49_51hz": line_db, "seconds_per_recording":
        result.seconds / max(1, len(result.reports)),
    "cached_rerun_s": again.seconds, "cached_rerun_all_from_cache":
        bool(again.reports["from_cache"].all()),
}, run_dir)"""),
]


def build() -> nbformat.NotebookNode:
    cells = []
    for kind, src in CELLS:
        if kind == "md":
            cells.append(new_markdown_cell(src))
        elif kind == "params":
            cells.append(new_code_cell(src, metadata={"tags": ["parameters"]}))
        else:
            cells.append(new_code_cell(src))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "01_preprocess.ipynb"
    nbformat.write(build(), path)
    print(f"wrote {path}")
