"""Figure export, metrics/tables/provenance, the HTML report, and the plotting helpers."""

from __future__ import annotations

import base64
import json
import re
import threading

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from workbench import report, viz  # noqa: E402
from workbench.channels import DEAP_32, SEED_62  # noqa: E402


def _mpl_figure(title: str = "A line") -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 0, 1])
    ax.set_title(title)
    return fig


def _plotly_figure():
    import plotly.graph_objects as go

    return go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode="markers"),
                     layout={"title": {"text": "Routing"}})


def _tmp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- export
def test_slug():
    assert report.slug("t-SNE: pre-trained (SEED)") == "t-sne_pre-trained_seed"
    assert report.slug("  Loss / Epoch  ") == "loss_epoch"
    assert report.figure_stem("GAT edges", "06_gat") == "06_gat__gat_edges"
    with pytest.raises(ValueError, match="'name'"):
        report.slug("???")
    with pytest.raises(ValueError, match="'notebook'"):
        report.figure_stem("x", "../escape")


def test_export_matplotlib_files_data_and_manifest(tmp_path):
    df = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.25], "split": ["a", "b", "c"]})
    paths = report.export_figure(_mpl_figure(), "t-SNE: pre-trained", out_dir=tmp_path, data=df,
                                 notebook="05_embeddings")
    stem = "05_embeddings__t-sne_pre-trained"
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.svg", f"{stem}.csv"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()
    pd.testing.assert_frame_equal(pd.read_csv(paths[2]), df)
    (entry,) = report.read_manifest(tmp_path)
    assert entry["key"] == stem and entry["name"] == "t-SNE: pre-trained"
    assert entry["notebook"] == "05_embeddings" and entry["kind"] == "matplotlib"
    assert entry["files"] == [p.name for p in paths]
    assert entry["caption"] == "A line"  # default caption: the axes title
    assert _tmp_files(tmp_path) == []


def test_export_is_deterministic_and_replaces_its_entry(tmp_path):
    p1 = report.export_figure(_mpl_figure(), "fig", out_dir=tmp_path, notebook="01_x")
    svg1 = p1[1].read_bytes()
    report.export_figure(_mpl_figure("other"), "other", out_dir=tmp_path, notebook="01_x")
    p2 = report.export_figure(_mpl_figure(), "fig", out_dir=tmp_path, notebook="01_x")
    assert p2[1].read_bytes() == svg1  # same figure -> same SVG bytes (no dates, fixed ids)
    report.export_figure(_mpl_figure(), "fig", out_dir=tmp_path, notebook="01_x",
                         formats=("png",), caption="new caption")
    entries = report.read_manifest(tmp_path)
    assert [e["key"] for e in entries] == ["01_x__fig", "01_x__other"]  # order kept
    assert entries[0]["files"] == ["01_x__fig.png"] and entries[0]["caption"] == "new caption"
    assert not (tmp_path / "01_x__fig.svg").exists()  # stale format removed


def test_export_keeps_a_meaningful_index(tmp_path):
    s = pd.Series([0.5, 0.7], index=pd.Index(["SEED", "DEAP"], name="dataset"), name="acc")
    paths = report.export_figure(_mpl_figure(), "acc", out_dir=tmp_path, data=s,
                                 formats=("png",))
    back = pd.read_csv(paths[-1], index_col="dataset")["acc"]
    pd.testing.assert_series_equal(back, s)
    assert report.read_manifest(tmp_path)[0]["notebook"] is None


def test_export_plotly_opens_offline(tmp_path):
    fig = _plotly_figure()
    paths = report.export_figure(fig, "Expert usage", out_dir=tmp_path, notebook="07_routing",
                                 data=pd.DataFrame({"x": [1, 2, 3]}))
    names = [p.name for p in paths]
    assert names[:2] == ["07_routing__expert_usage.html", "07_routing__expert_usage.plotly.json"]
    assert names[-1] == "07_routing__expert_usage.csv"
    page = paths[0].read_text()
    assert 'src="plotly.min.js"' in page and "cdn.plot.ly" not in page
    js = (tmp_path / "plotly.min.js").read_text()
    from plotly.offline import get_plotlyjs

    assert js == get_plotlyjs()
    spec = json.loads(paths[1].read_text())
    assert spec["data"][0]["y"] == [3, 1, 2]
    (entry,) = report.read_manifest(tmp_path)
    assert entry["kind"] == "plotly" and entry["caption"] == "Routing"


def test_export_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="matplotlib Figure or a plotly Figure"):
        report.export_figure(np.zeros(3), "x", out_dir=tmp_path)
    with pytest.raises(ValueError, match="'formats'.*'jpg'"):
        report.export_figure(_mpl_figure(), "x", out_dir=tmp_path, formats=("jpg",))
    with pytest.raises(TypeError, match="DataFrame"):
        report.export_figure(_mpl_figure(), "x", out_dir=tmp_path, data=[1, 2])


# ----------------------------------------------------------------------------- metrics, tables
def test_record_metrics_merges_and_converts(tmp_path):
    report.record_metrics("03_finetune", {"acc": 0.5, "n": 3}, tmp_path)
    out = report.record_metrics("03_finetune", {"acc": np.float32(0.75),
                                                "loss": torch.tensor(2.5),
                                                "per_seed": np.array([1, 2])}, tmp_path)
    expected = {"acc": 0.75, "n": 3, "loss": 2.5, "per_seed": [1, 2]}
    assert out == expected
    assert json.loads((tmp_path / "metrics" / "03_finetune.json").read_text()) == expected
    report.record_metrics("00_data", {"windows": 10}, tmp_path)
    assert report.load_metrics(tmp_path) == {"00_data": {"windows": 10}, "03_finetune": expected}
    with pytest.raises(ValueError, match="'bad'.*4 elements"):
        report.record_metrics("03_finetune", {"bad": torch.zeros(4)}, tmp_path)
    with pytest.raises(TypeError, match="'obj'"):
        report.record_metrics("03_finetune", {"obj": object()}, tmp_path)
    assert _tmp_files(tmp_path) == []


def test_record_metrics_concurrent_writers_lose_nothing(tmp_path):
    def work(i):
        for j in range(5):
            report.record_metrics("04_ablations", {f"k{i}_{j}": i * 10 + j}, tmp_path)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = report.load_metrics(tmp_path)["04_ablations"]
    assert got == {f"k{i}_{j}": i * 10 + j for i in range(6) for j in range(5)}


def test_save_table_round_trip(tmp_path):
    df = pd.DataFrame({"subject": [1, 2], "acc": [0.81, 0.9]})
    path = report.save_table(df, "Within subject", tmp_path, notebook="03_finetune")
    assert path == tmp_path / "tables" / "03_finetune__within_subject.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path), df)


def test_provenance():
    prov = report.provenance()
    if (report.REPO_ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
        assert isinstance(prov["git_dirty"], bool)
    else:  # an installed copy: no checkout to describe
        assert prov["git_commit"] is None and prov["git_dirty"] is None
    assert prov["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert prov["packages"]["numpy"] == np.__version__
    assert prov["cpu_count"] >= 1 and prov["python"].count(".") == 2
    if not torch.cuda.is_available():
        assert prov["cuda_device"] is None


# ----------------------------------------------------------------------------- report
@pytest.fixture()
def run(tmp_path):
    run_dir, fig_dir = tmp_path / "run", tmp_path / "figs"
    executed = run_dir / "executed" / "02_bad.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text("{}")
    pd.DataFrame([
        {"notebook": "01_good", "status": "ok", "seconds": 3.25,
         "executed_path": str(run_dir / "executed" / "01_good.ipynb"), "error": ""},
        {"notebook": "02_bad", "status": "failed", "seconds": 1.5,
         "executed_path": str(executed), "error": "ValueError: <boom> & co"},
    ]).to_csv(run_dir / "status.csv", index=False)
    (run_dir / "parameters.json").write_text(json.dumps({"01_good": {"method": "omfa"}}))
    report.record_metrics("01_good", {"accuracy": 0.8765}, run_dir)
    report.save_table(pd.DataFrame({"subject": ["s1"], "kappa": [0.4321]}), "per subject",
                      run_dir, notebook="01_good")
    pngs = report.export_figure(_mpl_figure(), "curve", out_dir=fig_dir, notebook="01_good",
                                caption="Loss falls")
    report.export_figure(_plotly_figure(), "usage", out_dir=fig_dir, notebook="02_bad")
    report.export_figure(_mpl_figure(), "loose", out_dir=fig_dir, formats=("svg",))
    return run_dir, fig_dir, pngs[0]


def test_report_is_self_contained(run):
    run_dir, fig_dir, png = run
    path = report.build_report(run_dir, fig_dir)
    assert path == fig_dir / "report.html"
    html = path.read_text()
    assert base64.b64encode(png.read_bytes()).decode() in html  # embedded, not linked
    assert "data:image/svg+xml;base64," in html  # the SVG-only figure
    assert "Loss falls" in html and "0.8765" in html and "0.4321" in html
    assert "omfa" in html  # parameters
    assert "3.2 s" in html or "3.3 s" in html  # wall time
    assert "ValueError: &lt;boom&gt; &amp; co" in html  # escaped error text
    assert "../run/executed/02_bad.ipynb" in html  # relative link to the executed copy
    prov = report.provenance()
    assert prov["git_commit"] in html and prov["packages"]["torch"] in html
    assert html.count("Plotly.newPlot(") == 1
    assert html.count("<script>") == 2  # plotly.js once + the one figure
    assert "<script src" not in html and "<link" not in html  # nothing fetched
    assert html.index('id="01_good"') < html.index('id="02_bad"') < html.index("other-figures")


def test_report_without_plotly_js_links_the_page(run):
    run_dir, fig_dir, _ = run
    out = report.build_report(run_dir, fig_dir, out_path=run_dir / "small.html",
                              embed_plotly=False)
    html = out.read_text()
    assert "Plotly.newPlot" not in html and len(html) < 1_000_000
    assert 'href="../figs/02_bad__usage.html"' in html


def test_report_of_a_manual_run(tmp_path):
    report.record_metrics("05_embeddings", {"ari": 0.5}, tmp_path / "run")
    html = report.build_report(tmp_path / "run", tmp_path / "figs").read_text()
    assert 'id="05_embeddings"' in html and "0.5" in html


# ----------------------------------------------------------------------------- viz
@pytest.fixture()
def no_pyplot():
    plt.close("all")
    yield
    assert plt.get_fignums() == []  # the helpers never create pyplot figures


@pytest.mark.parametrize("names", [SEED_62, DEAP_32])
def test_scalp_layout_matches_mne(names):
    from mne.channels.layout import _find_topomap_coords

    info = viz._make_info(names)
    for sphere in (viz.head_sphere(), (0.0, 0.0, 0.0, 0.095)):
        ref = _find_topomap_coords(info, None, sphere=sphere)
        np.testing.assert_allclose(viz.scalp_layout(names, sphere=sphere), ref, atol=1e-12)


def test_head_sphere_puts_the_equator_on_the_circle():
    x0, y0, _, r = viz.head_sphere()
    xy = viz.scalp_layout(["Fpz", "Oz", "T7", "T8", "Cz"])
    dist = np.hypot(xy[:, 0] - x0, xy[:, 1] - y0)
    np.testing.assert_allclose(dist[:4], r, rtol=0.12)
    assert dist[4] < 0.1 * r  # the vertex is near the centre


def test_plot_connectivity_draws_each_edge_between_its_channels(no_pyplot):
    edges = pd.DataFrame({"source": ["Fp1", "cz", 2], "target": ["O2", "Pz", 5],
                          "weight": [0.2, 0.9, 0.5]})
    fig = viz.plot_connectivity(edges, DEAP_32)
    ax = fig.axes[0]
    (lc,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    xy = viz.scalp_layout(DEAP_32)
    idx = {n: i for i, n in enumerate(DEAP_32)}
    expected = [(idx["Fp1"], idx["O2"]), (idx["Cz"], idx["Pz"]), (2, 5)]
    for seg, (a, b) in zip(lc.get_segments(), expected):
        np.testing.assert_allclose(seg, xy[[a, b]])
    widths = lc.get_linewidths()
    assert widths[1] == pytest.approx(3.0) and widths[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'Xx9'"):
        viz.plot_connectivity(pd.DataFrame({"source": ["Xx9"], "target": ["Cz"],
                                            "weight": [1.0]}), DEAP_32)


def test_plot_topomap_places_sensors_like_the_layout(no_pyplot):
    values = np.linspace(-1, 1, len(DEAP_32))
    fig = viz.plot_topomap(values, DEAP_32, title="alpha")
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.get_title() == "alpha"
    offsets = [np.asarray(c.get_offsets()) for c in ax.collections
               if len(np.asarray(c.get_offsets())) == len(DEAP_32)]
    np.testing.assert_allclose(offsets[0], viz.scalp_layout(DEAP_32), atol=1e-12)
    lo, hi = ax.images[0].get_clim()
    assert lo <= -1 + 1e-6 and hi >= 1 - 1e-6
    with pytest.raises(ValueError, match=r"\(32,\)"):
        viz.plot_topomap(values[:5], DEAP_32)


def test_plot_confusion_writes_row_normalised_values(no_pyplot):
    cm = np.array([[3, 1], [0, 4]])
    fig = viz.plot_confusion(cm, ["neg", "pos"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.75", "0.25", "0.00", "1.00"]
    counts = viz.plot_confusion(cm, ["neg", "pos"], normalize=False)
    assert [t.get_text() for t in counts.axes[0].texts] == ["3", "1", "0", "4"]
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        viz.plot_confusion(cm, ["a", "b", "c"])


def test_plot_results_bar_heights_are_group_means(no_pyplot):
    table = pd.DataFrame({"variant": ["full", "full", "nograph", "nograph", "nograph"],
                          "acc": [0.9, 0.8, 0.5, 0.7, 0.6], "seed": [1, 2, 1, 2, 3]})
    fig = viz.plot_results_bar(table, "acc", by="variant")
    ax = fig.axes[0]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.85, 0.6])
    from matplotlib.container import ErrorbarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (err,) = bars.lines[2]
    seg = err.get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in seg],
                               [2 * np.std([0.9, 0.8], ddof=1), 2 * np.std([0.5, 0.7, 0.6],
                                                                           ddof=1)])
    hue = viz.plot_results_bar(table, "acc", by="variant", hue="seed")
    assert len(hue.axes[0].patches) == 6  # 2 variants x 3 seeds (missing -> NaN bar)


def test_plot_loss_curves_average_steps_per_epoch(no_pyplot):
    hist = pd.DataFrame({"epoch": [0, 0, 1, 1, 1], "train_loss": [4.0, 2.0, 1.0, 1.0, 1.0],
                         "val_loss": [np.nan, 3.0, np.nan, np.nan, 0.5], "lr": [1e-3] * 5})
    fig = viz.plot_loss_curves(hist)
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    assert set(lines) == {"train_loss", "val_loss"}
    np.testing.assert_allclose(lines["train_loss"].get_ydata(), [3.0, 1.0])
    np.testing.assert_allclose(lines["val_loss"].get_xydata(), [[0, 3.0], [1, 0.5]])
    with pytest.raises(KeyError, match="'nope'"):
        viz.plot_loss_curves(hist, keys=["nope"])


def test_plot_scatter_2d_colours(no_pyplot):
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(30, 2))
    subj = np.repeat(["s1", "s2", "s3"], 10)
    fig = viz.plot_scatter_2d(Y, subj, title="t-SNE")
    ax = fig.axes[0]
    assert len(ax.collections) == 3
    np.testing.assert_allclose(ax.collections[1].get_offsets(), Y[10:20])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["s1", "s2", "s3"]
    cont = viz.plot_scatter_2d(Y, Y[:, 0])
    assert len(cont.axes) == 2  # a colour bar
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        viz.plot_scatter_2d(Y[:, :1])


def test_plotly_scatter_2d():
    Y = np.arange(12, dtype=float).reshape(6, 2)
    fig = viz.plotly_scatter_2d(Y, np.array([0, 0, 1, 1, 2, 2]), hover={"window": range(6)})
    assert len(fig.data) == 3
    np.testing.assert_allclose(fig.data[2].x, [8.0, 10.0])
    assert [int(v[0]) for v in fig.data[1].customdata] == [2, 3]


def test_plot_psd_mean_and_band(no_pyplot):
    f = np.linspace(1, 40, 40)
    psd = {"rest": np.stack([1 / f, 3 / f]), "task": 2 / f}
    fig = viz.plot_psd(f, psd)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 2 / f)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 2 / f)
    assert ax.get_yscale() == "log" and len(ax.collections) == 1  # one band (2-D group only)


def test_plot_efficiency_log_axes_and_means(no_pyplot):
    df = pd.DataFrame({"model": ["a", "a", "a", "b", "b"], "length": [256, 256, 1024, 256, 1024],
                       "time_s": [1.0, 3.0, 8.0, 1.0, 2.0],
                       "peak_mem_mb": [10.0, 10.0, 40.0, np.nan, np.nan]})
    fig = viz.plot_efficiency(df)
    t_ax, m_ax = fig.axes
    assert t_ax.get_xscale() == t_ax.get_yscale() == m_ax.get_yscale() == "log"
    np.testing.assert_allclose(t_ax.lines[0].get_xydata(), [[256, 2.0], [1024, 8.0]])
    assert len(m_ax.lines) == 1  # model b has no memory numbers
