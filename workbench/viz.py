"""Plotting helpers shared by the notebooks: static (matplotlib, MNE topomaps) and interactive (plotly).

Every function takes arrays or tidy tables (never models) and returns a figure; nothing is shown
and no pyplot state is touched: figures are built as :class:`matplotlib.figure.Figure` objects
(safe under the Agg backend, displayed in Jupyter as the last expression of a cell) and handed to
:func:`workbench.report.export_figure`.

Scalp layouts follow MNE's topomap convention (:func:`scalp_layout`): the 3-D head positions of
:func:`workbench.channels.channel_positions` are flattened with an azimuthal equidistant projection
about the vertex of a head sphere. The sphere is fitted as MNE's ``sphere="eeglab"`` does, from
Fpz, Oz, T7 and T8 of the template (:func:`head_sphere`), so the 10-20 equator lies on the drawn
head circle, and edges drawn by :func:`plot_connectivity` land where :func:`plot_topomap` draws
its sensors.

References
----------
Gramfort A. et al. (2013). MEG and EEG data analysis with MNE-Python. Front. Neurosci. 7:267.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .channels import channel_positions, make_montage, normalize_channel_names

_CATEGORICAL_MAX = 40


def _figure(figsize: tuple[float, float] = (6.0, 4.0), ax=None):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: column(s) {missing} not in the table; columns are "
                       f"{list(df.columns)}.")


# ----------------------------------------------------------------------------- training
def plot_loss_curves(history_df: pd.DataFrame, keys: Sequence[str] | None = None,
                     x: str | None = None, logy: bool = False, title: str = "") -> Figure:
    """Curves of ``keys`` (e.g. ``train_loss``, ``val_loss``) against epoch or step.

    Parameters
    ----------
    history_df : DataFrame
        The Trainer history (one row per logged step or epoch; missing values are skipped).
    keys : list of str, optional
        Columns to draw; default every column whose name contains ``"loss"``.
    x : str, optional
        The x column; default ``"epoch"`` if present, else ``"step"``, else the row number.
        Several rows with the same x (per-step logs within an epoch) are averaged.
    logy : bool
        Log-scaled y axis.
    """
    df = history_df.reset_index(drop=True)
    if keys is None:
        keys = [c for c in df.columns if "loss" in str(c)]
    keys = list(keys)
    _check_columns(df, keys, "plot_loss_curves")
    if x is None:
        x = next((c for c in ("epoch", "step") if c in df.columns), None)
    if x is None:
        df = df.assign(row=np.arange(len(df)))
        x = "row"
    _check_columns(df, [x], "plot_loss_curves")
    fig, ax = _figure()
    for key, color in zip(keys, _colors(len(keys))):
        curve = df[[x, key]].dropna().groupby(x, sort=True)[key].mean()
        ax.plot(curve.index.to_numpy(), curve.to_numpy(), marker="o" if len(curve) < 40 else None,
                ms=3, label=key, color=color)
    ax.set_xlabel(x)
    ax.set_ylabel("value")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return fig


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], normalize: bool = True,
                   title: str = "", cmap: str = "Blues") -> Figure:
    """A confusion matrix (rows = true class, columns = prediction) with the values written in.

    ``normalize`` divides each row by its count (recall on the diagonal); rows with no sample
    stay zero.
    """
    cm = np.asarray(cm, dtype=float)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"plot_confusion: cm has shape {cm.shape}, expected ({k}, {k}) for "
                         f"class_names {list(class_names)}.")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1e-12) if normalize else cm
    fig, ax = _figure((1.2 + 0.8 * k, 1.0 + 0.7 * k))
    im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.8)
    thresh = (shown.max() if shown.size else 0) / 2
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{cm[i, j]:g}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="white" if shown[i, j] > thresh else "black")
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def plot_results_bar(table: pd.DataFrame, metric: str, by: str, hue: str | None = None,
                     title: str = "", ylabel: str | None = None) -> Figure:
    """Bars of the mean of ``metric`` per ``by`` (and ``hue``), error bars = standard deviation.

    The mean and std (ddof=1; 0 for a single row) run over the remaining rows of each group, e.g.
    subjects or seeds. Categories keep their order of first appearance.
    """
    _check_columns(table, [metric, by] + ([hue] if hue else []), "plot_results_bar")
    cats = list(pd.unique(table[by]))
    hues = list(pd.unique(table[hue])) if hue else [None]
    width = 0.8 / len(hues)
    fig, ax = _figure((max(4.0, 1.0 + 0.9 * len(cats) * max(1, len(hues) / 2)), 4.0))
    for h_i, (h, color) in enumerate(zip(hues, _colors(len(hues)))):
        sub = table if h is None else table[table[hue] == h]
        g = sub.groupby(by, sort=False)[metric]
        mean = g.mean().reindex(cats)
        std = g.std(ddof=1).reindex(cats).fillna(0.0)
        pos = np.arange(len(cats)) - 0.4 + width * (h_i + 0.5)
        ax.bar(pos, mean.to_numpy(), width=width * 0.95, yerr=std.to_numpy(), capsize=3,
               color=color, label=None if h is None else str(h))
    ax.set_xticks(np.arange(len(cats)), [str(c) for c in cats], rotation=30 if len(cats) > 4 else 0,
                  ha="right" if len(cats) > 4 else "center")
    ax.set_xlabel(by)
    ax.set_ylabel(ylabel or metric)
    ax.grid(axis="y", alpha=0.3)
    if hue:
        ax.legend(title=hue)
    ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- embeddings
def _is_categorical(color: np.ndarray) -> bool:
    return not np.issubdtype(color.dtype, np.floating)


def plot_scatter_2d(Y: np.ndarray, color: Sequence | np.ndarray | None = None, title: str = "",
                    ax=None, s: float = 8.0, label: str = "", cmap: str = "viridis") -> Figure:
    """A 2-D embedding (t-SNE / UMAP output), coloured by a label or a value.

    Parameters
    ----------
    Y : ndarray, shape (N, 2)
    color : array, shape (N,), optional
        Non-float values (subjects, classes, clusters) get one colour each and a legend; floats a
        colour map and a colour bar.
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[1] != 2:
        raise ValueError(f"plot_scatter_2d: Y must have shape (N, 2), got {Y.shape}.")
    fig, ax = _figure((5.5, 4.5), ax)
    if color is None:
        ax.scatter(Y[:, 0], Y[:, 1], s=s, alpha=0.8, linewidths=0)
    else:
        c = np.asarray(color)
        if c.shape != (len(Y),):
            raise ValueError(f"plot_scatter_2d: color must have shape ({len(Y)},), got {c.shape}.")
        if _is_categorical(c):
            cats = list(pd.unique(c))
            for cat, col in zip(cats, _colors(len(cats))):
                m = c == cat
                ax.scatter(Y[m, 0], Y[m, 1], s=s, alpha=0.8, linewidths=0, color=col,
                           label=str(cat))
            if len(cats) <= _CATEGORICAL_MAX:
                ax.legend(title=label or None, fontsize=7, markerscale=2, loc="best",
                          ncol=1 + len(cats) // 12)
        else:
            sc = ax.scatter(Y[:, 0], Y[:, 1], c=c, s=s, alpha=0.8, linewidths=0, cmap=cmap)
            fig.colorbar(sc, ax=ax, label=label)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig


def plotly_scatter_2d(Y: np.ndarray, color: Sequence | np.ndarray | None = None, title: str = "",
                      hover: Mapping[str, Sequence] | pd.DataFrame | None = None,
                      label: str = "color"):
    """Interactive version of :func:`plot_scatter_2d` (plotly); ``hover`` adds columns to the
    tooltip (e.g. subject, window id). Returns a ``plotly.graph_objects.Figure``."""
    import plotly.express as px

    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[1] != 2:
        raise ValueError(f"plotly_scatter_2d: Y must have shape (N, 2), got {Y.shape}.")
    df = pd.DataFrame({"dim 1": Y[:, 0], "dim 2": Y[:, 1]})
    if color is not None:
        c = np.asarray(color)
        if c.shape != (len(Y),):
            raise ValueError(f"plotly_scatter_2d: color must have shape ({len(Y)},), got "
                             f"{c.shape}.")
        df[label] = c.astype(str) if _is_categorical(c) else c
    hover_cols = []
    if hover is not None:
        for k, v in pd.DataFrame(hover).items():
            if len(v) != len(Y):
                raise ValueError(f"plotly_scatter_2d: hover column {k!r} has {len(v)} values, "
                                 f"expected {len(Y)}.")
            df[str(k)] = np.asarray(v)
            hover_cols.append(str(k))
    fig = px.scatter(df, x="dim 1", y="dim 2", color=label if color is not None else None,
                     hover_data=hover_cols or None, title=title or None)
    fig.update_traces(marker={"size": 5, "opacity": 0.8})
    fig.update_layout(template="simple_white")
    return fig


# ----------------------------------------------------------------------------- spectra
def plot_psd(freqs: np.ndarray, psd_by_group: Mapping[str, np.ndarray], logy: bool = True,
             title: str = "", ylabel: str = "PSD (V$^2$/Hz)", ax=None) -> Figure:
    """Power spectra per group: the mean over rows and a +/- 1 std band.

    ``psd_by_group`` maps a group name to an array of shape ``(F,)`` or ``(n, F)`` (windows or
    channels by frequencies), ``F = len(freqs)``.
    """
    freqs = np.asarray(freqs, dtype=float)
    fig, ax = _figure(ax=ax)
    for (name, psd), color in zip(psd_by_group.items(), _colors(len(psd_by_group))):
        p = np.atleast_2d(np.asarray(psd, dtype=float))  # (n, F)
        if p.shape[-1] != len(freqs):
            raise ValueError(f"plot_psd: group {name!r} has {p.shape[-1]} frequencies, expected "
                             f"{len(freqs)}.")
        mean = p.mean(axis=0)
        ax.plot(freqs, mean, color=color, label=str(name))
        if len(p) > 1:
            sd = p.std(axis=0)
            lo = np.maximum(mean - sd, mean * 1e-3) if logy else mean - sd
            ax.fill_between(freqs, lo, mean + sd, color=color, alpha=0.2, linewidth=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- scalp
@functools.lru_cache(maxsize=4)
def head_sphere(montage: str = "colin27_1005") -> tuple[float, float, float, float]:
    """``(x, y, z, radius)`` of the head circle, in metres, fitted like MNE's ``"eeglab"`` sphere.

    The centre is the mean of the template positions of Fpz, Oz, T7 and T8; the radius the mean
    of ``|x|`` of T7/T8 and ``|y|`` of Fpz/Oz.
    """
    fpz, oz, t7, t8 = channel_positions(["Fpz", "Oz", "T7", "T8"], montage)
    centre = np.mean([fpz, oz, t7, t8], axis=0)
    radius = np.mean(np.abs([t7[0], t8[0], fpz[1], oz[1]]))
    return (float(centre[0]), float(centre[1]), float(centre[2]), float(radius))


def scalp_layout(ch_names: Sequence[str], sphere: Sequence[float] | None = None,
                 montage: str = "colin27_1005") -> np.ndarray:
    """2-D scalp coordinates (metres) of ``ch_names``, shape ``(C, 2)``, as MNE's topomaps.

    Each electrode's position relative to the sphere centre is written in spherical coordinates
    ``(r, azimuth, polar)`` and mapped to the plane at distance ``polar / (pi/2) * r`` from the
    centre along its azimuth (an azimuthal equidistant projection about the vertex): electrodes
    on the sphere's equator land on the head circle. ``sphere`` defaults to :func:`head_sphere`.
    """
    sphere = head_sphere(montage) if sphere is None else tuple(sphere)
    xyz = channel_positions(ch_names, montage) - np.asarray(sphere[:3], dtype=float)  # (C, 3)
    r = np.linalg.norm(xyz, axis=1)
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    polar = np.arccos(np.clip(xyz[:, 2] / np.where(r > 0, r, 1.0), -1.0, 1.0))
    rho = polar * r / (np.pi / 2)
    out = np.stack([rho * np.cos(azimuth), rho * np.sin(azimuth)], axis=1)  # (C, 2)
    return out + np.asarray(sphere[:2], dtype=float)


def _draw_head(ax, sphere: Sequence[float]) -> None:
    x0, y0, radius = sphere[0], sphere[1], sphere[3]
    ax.add_patch(Circle((x0, y0), radius, fill=False, color="k", lw=1.2))
    ax.plot(x0 + np.array([-0.1, 0.0, 0.1]) * radius,
            y0 + np.array([0.995, 1.10, 0.995]) * radius, color="k", lw=1.2)  # nose
    t = np.linspace(-0.5, 0.5, 20) * np.pi * 0.5
    for side in (-1, 1):  # ears
        ax.plot(x0 + side * radius * (1.0 + 0.05 * np.cos(t)), y0 + radius * 0.36 * np.sin(t),
                color="k", lw=1.2)
    ax.set_aspect("equal")
    ax.axis("off")


def _fit_limits(ax, sphere: Sequence[float], xy: np.ndarray) -> None:
    """Axis limits that hold the head (nose and ears) and every sensor, even below the ears."""
    x0, y0, radius = sphere[0], sphere[1], sphere[3]
    pad = 0.08 * radius
    ax.set_xlim(min(x0 - 1.1 * radius, xy[:, 0].min() - pad),
                max(x0 + 1.1 * radius, xy[:, 0].max() + pad))
    ax.set_ylim(min(y0 - 1.05 * radius, xy[:, 1].min() - pad),
                max(y0 + 1.15 * radius, xy[:, 1].max() + pad))


def _make_info(ch_names: Sequence[str], montage: str = "colin27_1005"):
    import mne

    canon = normalize_channel_names(ch_names, strict=True)
    info = mne.create_info(list(canon), sfreq=100.0, ch_types="eeg")
    info.set_montage(make_montage(canon, montage), verbose="error")
    return info


def plot_topomap(values: np.ndarray, ch_names: Sequence[str], ax=None, title: str = "",
                 cmap: str = "RdBu_r", vlim: tuple[float | None, float | None] = (None, None),
                 names: bool = False, colorbar: bool = True, label: str = "",
                 montage: str = "colin27_1005", **kwargs: Any) -> Figure:
    """A scalp map of one value per channel (``mne.viz.plot_topomap``) on the 10-05 template.

    Parameters
    ----------
    values : ndarray, shape (C,)
    ch_names : list of str
        Any spelling :func:`workbench.channels.normalize_channel_name` accepts.
    names : bool
        Write the channel names next to the sensors.
    **kwargs
        Passed to :func:`mne.viz.plot_topomap` (``mask``, ``contours``, ``sensors``...).
    """
    import mne

    values = np.asarray(values, dtype=float)
    if values.shape != (len(ch_names),):
        raise ValueError(f"plot_topomap: values has shape {values.shape}, expected "
                         f"({len(ch_names)},) for {len(ch_names)} channels.")
    info = _make_info(ch_names, montage)
    fig, ax = _figure((4.2, 3.6), ax)
    im, _ = mne.viz.plot_topomap(values, info, axes=ax, show=False, cmap=cmap, vlim=vlim,
                                 names=list(info.ch_names) if names else None,
                                 sphere=head_sphere(montage), **kwargs)
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.7, label=label)
    ax.set_title(title)
    return fig


def _edge_index(v: Any, lookup: Mapping[str, int], n: int, col: str) -> int:
    if isinstance(v, int | np.integer):
        if not 0 <= int(v) < n:
            raise ValueError(f"plot_connectivity: {col} index {v} out of range for {n} channels.")
        return int(v)
    key = normalize_channel_names([str(v)], strict=False)[0]
    if key not in lookup:
        raise ValueError(f"plot_connectivity: {col} channel {v!r} is not among ch_names "
                         f"{list(lookup)}.")
    return lookup[key]


def plot_connectivity(edges_df: pd.DataFrame, ch_names: Sequence[str], ax=None, title: str = "",
                      source: str = "source", target: str = "target", weight: str | None = "weight",
                      node_values: np.ndarray | None = None, cmap: str = "viridis",
                      width: tuple[float, float] = (0.5, 3.0), labels: bool = True,
                      montage: str = "colin27_1005") -> Figure:
    """Edges between channels drawn on the 2-D scalp layout (e.g. the top-q GAT attention graph).

    Parameters
    ----------
    edges_df : DataFrame
        One row per edge: ``source`` and ``target`` (channel names or integer indices into
        ``ch_names``) and, optionally, ``weight`` (line width and colour).
    ch_names : list of str
        The channels (nodes), positioned with :func:`scalp_layout`.
    node_values : array, shape (C,), optional
        Node sizes (e.g. degree centrality); default equal sizes.
    width : (float, float)
        Line widths of the weakest and strongest edge.
    """
    cols = [source, target] + ([weight] if weight else [])
    _check_columns(edges_df, cols, "plot_connectivity")
    canon = normalize_channel_names(ch_names, strict=True)
    lookup = {c: i for i, c in enumerate(canon)}
    xy = scalp_layout(canon, montage=montage)  # (C, 2)
    src = [_edge_index(v, lookup, len(canon), source) for v in edges_df[source]]
    dst = [_edge_index(v, lookup, len(canon), target) for v in edges_df[target]]
    segs = np.stack([xy[src], xy[dst]], axis=1) if src else np.zeros((0, 2, 2))  # (E, 2, 2)
    fig, ax = _figure((5.0, 5.0), ax)
    sphere = head_sphere(montage)
    _draw_head(ax, sphere)
    _fit_limits(ax, sphere, xy)
    if len(segs):
        if weight:
            w = edges_df[weight].to_numpy(dtype=float)
            span = np.ptp(w)
            wn = (w - w.min()) / span if span > 0 else np.ones_like(w)
        else:
            w = wn = np.ones(len(segs))
        lc = LineCollection(segs, linewidths=width[0] + wn * (width[1] - width[0]),
                            cmap=cmap, alpha=0.8, zorder=2)
        lc.set_array(w)
        ax.add_collection(lc)
        if weight:
            fig.colorbar(lc, ax=ax, shrink=0.6, label=weight)
    sizes = 30.0
    if node_values is not None:
        nv = np.asarray(node_values, dtype=float)
        if nv.shape != (len(canon),):
            raise ValueError(f"plot_connectivity: node_values has shape {nv.shape}, expected "
                             f"({len(canon)},).")
        sizes = 15.0 + 120.0 * (nv - nv.min()) / (np.ptp(nv) or 1.0)
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, color="k", zorder=3)
    if labels:
        for (x, y), n in zip(xy, canon):
            ax.annotate(n, (x, y), xytext=(0, 4), textcoords="offset points", ha="center",
                        fontsize=6, zorder=4)
    ax.set_title(title)
    return fig


# ----------------------------------------------------------------------------- efficiency
def plot_efficiency(df: pd.DataFrame, x: str = "length", time: str = "time_s",
                    memory: str | None = "peak_mem_mb", hue: str = "model",
                    title: str = "") -> Figure:
    """Time (left) and peak memory (right) against sequence length, log-log, one line per model.

    Repeated measurements of one ``(hue, x)`` are averaged; a model without memory numbers (NaN)
    is left out of the right panel.
    """
    _check_columns(df, [x, time, hue] + ([memory] if memory else []), "plot_efficiency")
    panels = [(time, "time (s)" if time.endswith("_s") else time)]
    if memory:
        panels.append((memory, "peak memory (MB)" if memory.endswith("_mb") else memory))
    fig = Figure(figsize=(5.0 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    models = list(pd.unique(df[hue]))
    for ax, (col, ylabel) in zip(axes, panels):
        for m, color in zip(models, _colors(len(models))):
            s = df[df[hue] == m].dropna(subset=[col]).groupby(x, sort=True)[col].mean()
            if len(s):
                ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(), marker="o", color=color,
                        label=str(m))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- channel layouts
def plot_channel_membership(layouts: Mapping[str, Sequence[str]], vocab_names: Sequence[str],
                            title: str = "") -> Figure:
    """Which channel of a vocabulary (columns) each dataset (rows) records: the UCS at a glance."""
    names = list(vocab_names)
    from .channels import normalize_channel_name

    mat = np.array([[normalize_channel_name(n) in {normalize_channel_name(c) for c in chans}
                     for n in names] for chans in layouts.values()], float)
    fig, ax = _figure((max(6.0, 0.16 * len(names)), 0.5 + 0.45 * len(layouts)))
    ax.imshow(mat, aspect="auto", cmap="Greens", vmin=0, vmax=1.3, interpolation="nearest")
    ax.set_yticks(np.arange(len(layouts)),
                  [f"{k} ({int(r.sum())})" for k, r in zip(layouts, mat)])
    ax.set_xticks(np.arange(len(names)), names, rotation=90, fontsize=6)
    ax.set_title(title)
    return fig
