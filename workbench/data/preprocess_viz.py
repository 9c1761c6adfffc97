"""Figures and tables for inspecting a preprocessing run (notebook ``01_preprocess``).

Raw vs cleaned spectra, ICA component scalp maps titled with their ICLabel class and probability,
the table of excluded components, and an ipywidgets browser over recordings and components.
Everything takes a :class:`~workbench.data.preprocess.PipelineResult` (or arrays) and returns a
figure or a table; nothing is shown.

References
----------
Pion-Tonachini L., Kreutz-Delgado K., Makeig S. (2019). ICLabel: an automated
electroencephalographic independent component classifier. NeuroImage 198.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.signal import welch

from .. import viz
from .preprocess import ICLABEL_CLASSES, PipelineResult
from .recording import Recording

REPORT_COLUMNS = ("key", "sfreq_in", "sfreq_out", "duration_s", "n_eeg", "bad_channels",
                  "n_components", "excluded_labels", "n_windows", "n_rejected_windows",
                  "seconds", "from_cache")


def report_table(result: PipelineResult) -> pd.DataFrame:
    """The per-recording report with the columns worth reading."""
    return result.reports[[c for c in REPORT_COLUMNS if c in result.reports.columns]].copy()


def excluded_table(result: PipelineResult) -> pd.DataFrame:
    """One row per excluded component: recording, component, label, probability."""
    rows = [t.loc[t["excluded"], ["component", "label", "probability"]].assign(key=k)
            for k, t in result.ica.items()]
    cols = ["key", "component", "label", "probability"]
    return (pd.concat(rows, ignore_index=True)[cols] if rows else pd.DataFrame(columns=cols))


def original_recording(result: PipelineResult, key: str,
                       recordings: Sequence[Recording] | None = None) -> Recording:
    """The input recording ``key``: from ``recordings`` or read again from its source file."""
    if recordings is not None:
        for rec in recordings:
            if rec.key == key:
                return rec
        raise KeyError(f"Recording {key!r} is not among the {len(recordings)} given.")
    from .readers import get_reader

    row = result.reports[result.reports["key"] == key]
    if row.empty:
        raise KeyError(f"No recording {key!r} in this result.")
    dataset, source = row["dataset"].iloc[0], row["source"].iloc[0]
    for rec in get_reader(dataset).read_file(source, **result.reader_options):
        if rec.key == key:
            return rec
    raise KeyError(f"{source}: reading it again gave no recording {key!r}.")


def psd(rec: Recording, seconds: float = 2.0, channels: Sequence[str] | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (V^2/Hz) of the EEG channels of ``rec``: ``freqs`` (F,), ``psd`` (C, F)."""
    picks = rec.eeg_picks
    if channels is not None:
        picks = np.array([rec.ch_names.index(c) for c in channels], dtype=np.int64)
    x = rec.data[picks].astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    nper = min(x.shape[1], int(seconds * rec.sfreq))
    return welch(x, fs=rec.sfreq, nperseg=nper, axis=-1)


def spectra_table(raw: Recording, clean: Recording) -> pd.DataFrame:
    """Tidy channel-mean PSDs of the raw and cleaned recording: stage, freq, psd."""
    common = [c for c in clean.ch_names if c in raw.ch_names]
    out = []
    for stage, rec in (("raw", raw), ("cleaned", clean)):
        f, p = psd(rec, channels=common)
        out.append(pd.DataFrame({"stage": stage, "freq": f, "psd": p.mean(axis=0)}))
    return pd.concat(out, ignore_index=True)


def plot_spectra(table: pd.DataFrame, title: str = "", fmax: float | None = None) -> Figure:
    """Raw vs cleaned PSD (log scale) from :func:`spectra_table` (their rates may differ)."""
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for stage, color in zip(("raw", "cleaned"), ("tab:gray", "tab:blue")):
        t = table[table["stage"] == stage]
        if fmax is not None:
            t = t[t["freq"] <= fmax]
        ax.semilogy(t["freq"], t["psd"], color=color, label=stage)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("PSD (V$^2$/Hz), mean over channels")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return fig


def band_reduction_db(table: pd.DataFrame, lo: float, hi: float) -> float:
    """How much power in [lo, hi] Hz the cleaning removed, in dB (raw / cleaned)."""
    def power(stage: str) -> float:
        t = table[(table["stage"] == stage) & (table["freq"] >= lo) & (table["freq"] <= hi)]
        return float(t["psd"].mean())

    return 10 * np.log10(power("raw") / power("cleaned"))


def component_title(row: pd.Series) -> str:
    mark = "excluded" if row["excluded"] else "kept"
    return f"IC{int(row['component'])}: {row['label']} {row['probability']:.2f} ({mark})"


def plot_components(maps: np.ndarray, ch_names: Sequence[str], table: pd.DataFrame,
                    components: Sequence[int] | None = None, ncols: int = 5) -> Figure:
    """Scalp maps of ICA components titled with the ICLabel class and probability.

    Parameters
    ----------
    maps : ndarray, shape (C, K)
        Mixing columns (``ica.get_components()``), one map per component.
    ch_names : list of str
        The C channel names.
    table : DataFrame
        The ICLabel table (``result.ica[key]``); excluded components get red titles.
    components : list of int, optional
        Which components (default all).
    """
    comps = list(range(maps.shape[1]) if components is None else components)
    nrows = int(np.ceil(len(comps) / ncols))
    fig = Figure(figsize=(2.3 * min(ncols, len(comps)), 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, min(ncols, len(comps)), squeeze=False).ravel()
    for ax, k in zip(axes, comps):
        row = table.iloc[k]
        viz.plot_topomap(maps[:, k], ch_names, ax=ax, colorbar=False, contours=0)
        ax.set_title(component_title(row), fontsize=7,
                     color="tab:red" if row["excluded"] else "black")
    for ax in axes[len(comps):]:
        ax.axis("off")
    return fig


def ica_maps(result: PipelineResult, key: str) -> tuple[np.ndarray, list[str]] | None:
    """(maps (C, K), channel names) of the ICA of ``key``, or None when ICA was off."""
    ica = result.load_ica(key)
    if ica is None:
        return None
    return ica.get_components(), list(ica.ch_names)


def class_counts(result: PipelineResult) -> pd.DataFrame:
    """Per ICLabel class: number of components, number excluded, mean top probability."""
    rows = pd.concat(list(result.ica.values()), ignore_index=True) if result.ica else None
    if rows is None:
        return pd.DataFrame(columns=["label", "n_components", "n_excluded", "mean_probability"])
    g = rows.groupby("label")
    out = pd.DataFrame({"n_components": g.size(), "n_excluded": g["excluded"].sum(),
                        "mean_probability": g["probability"].mean()})
    return out.reindex([c for c in ICLABEL_CLASSES if c in out.index]).reset_index()


def ica_browser(result: PipelineResult, recordings: Sequence[Recording] | None = None):
    """An ipywidgets browser: a recording dropdown and a component slider.

    Shows the selected component's scalp map and its seven ICLabel probabilities, and the
    recording's raw vs cleaned spectrum. Returns the widget (display it), or None when
    ipywidgets is missing or no recording has an ICA.
    """
    try:
        import ipywidgets as widgets
    except ImportError:  # pragma: no cover - optional in a bare environment
        return None
    keys = list(result.ica)
    if not keys:
        return None
    out = widgets.Output()
    rec_dd = widgets.Dropdown(options=keys, description="recording")
    comp = widgets.IntSlider(min=0, max=len(result.ica[keys[0]]) - 1, description="component")

    def draw(*_):
        key, k = rec_dd.value, comp.value
        table = result.ica[key]
        maps = ica_maps(result, key)
        with out:
            out.clear_output(wait=True)
            fig = Figure(figsize=(10, 3.2), layout="constrained")
            a1, a2, a3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.2, 1.6]})
            if maps is not None:
                viz.plot_topomap(maps[0][:, k], maps[1], ax=a1, colorbar=False, contours=0)
            a1.set_title(component_title(table.iloc[k]), fontsize=8)
            probs = table.iloc[k][list(ICLABEL_CLASSES)].astype(float)
            a2.barh(list(ICLABEL_CLASSES), probs.to_numpy(), color="tab:blue")
            a2.set_xlim(0, 1)
            a2.set_xlabel("ICLabel probability")
            spec = spectra_table(original_recording(result, key, recordings),
                                 result.cleaned(key))
            for stage, color in (("raw", "tab:gray"), ("cleaned", "tab:blue")):
                t = spec[spec["stage"] == stage]
                a3.semilogy(t["freq"], t["psd"], color=color, label=stage)
            a3.legend(fontsize=7)
            a3.set_xlabel("Hz")
            from IPython.display import display

            display(fig)

    def on_recording(change):
        comp.max = len(result.ica[change["new"]]) - 1
        comp.value = min(comp.value, comp.max)
        draw()

    rec_dd.observe(on_recording, names="value")
    comp.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([rec_dd, comp]), out])
