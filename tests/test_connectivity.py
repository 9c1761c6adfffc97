"""Tests of the analyses of method 1: attention connectivity and embedding maps/clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.connectivity import (
    class_attention,
    degree_centrality,
    key_channels,
    top_edges,
)
from workbench.analysis.embeddings import embed_2d, kmeans_agreement

NAMES = ["Fp1", "Fz", "Cz", "Pz"]


# ----------------------------------------------------------------------------- connectivity
def test_class_attention_means_over_heads_and_windows():
    att = np.zeros((3, 2, 2, 2))  # (N, heads, C, C)
    att[0] = [[[1, 0], [0, 1]], [[0, 1], [1, 0]]]  # head mean [[.5, .5], [.5, .5]]
    att[1] = [[[1, 0], [1, 0]], [[1, 0], [1, 0]]]  # [[1, 0], [1, 0]]
    att[2] = [[[0, 1], [0, 1]], [[0, 1], [0, 1]]]  # [[0, 1], [0, 1]]
    labels = ["sad", "happy", "happy"]
    out = class_attention(att, labels)
    assert list(out) == ["happy", "sad"]
    np.testing.assert_allclose(out["sad"], [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(out["happy"], [[0.5, 0.5], [0.5, 0.5]])
    out = class_attention([torch.zeros(3, 2, 2, 2), torch.tensor(att)], [0, 1, 0], layer=-1)
    np.testing.assert_allclose(out[0], [[0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(out[1], [[1, 0], [1, 0]])
    sym = class_attention(att[1:2, 0], [1], symmetrize=True)  # (N, C, C) input
    np.testing.assert_allclose(sym[1], [[1, 0.5], [0.5, 0]])
    with pytest.raises(ValueError, match="labels"):
        class_attention(att, [0, 1])
    with pytest.raises(ValueError, match="empty"):
        class_attention([], [0])


def _matrix():
    # Undirected weights (after symmetrisation) of the 6 pairs, self loops very large.
    a = np.full((4, 4), 9.0)
    pairs = {(0, 1): 0.1, (0, 2): 0.6, (0, 3): 0.2, (1, 2): 0.5, (1, 3): 0.3, (2, 3): 0.4}
    for (i, j), w in pairs.items():
        a[i, j], a[j, i] = w + 0.05, w - 0.05  # asymmetric; the mean is w
    return a


def test_top_edges_undirected_hand_built():
    edges = top_edges(_matrix(), NAMES, quantile=0.5)
    # 6 pairs [.1 .2 .3 .4 .5 .6], quantile 0.5: keep 3 (.6, .5, .4), strongest first.
    assert list(zip(edges.source, edges.target)) == [("Fp1", "Cz"), ("Fz", "Cz"), ("Cz", "Pz")]
    np.testing.assert_allclose(edges.weight, [0.6, 0.5, 0.4])
    assert list(edges.columns) == ["source", "target", "weight", "source_idx", "target_idx"]
    top = top_edges(_matrix(), NAMES)  # default: top 15 % of 6 -> ceil(0.9) = 1 pair
    assert list(zip(top.source, top.target)) == [("Fp1", "Cz")]
    ties = top_edges(np.zeros((4, 4)), NAMES, quantile=0.5)  # all tied: still 3, in order
    assert list(zip(ties.source, ties.target)) == [("Fp1", "Fz"), ("Fp1", "Cz"), ("Fp1", "Pz")]


def test_top_edges_directed_keeps_orientation():
    edges = top_edges(_matrix(), NAMES, quantile=0.75, directed=True)
    # 12 ordered pairs, keep 3: .65 (Fp1->Cz), .55 (Fz->Cz), .55 (Cz->Fp1); next is .45.
    assert len(edges) == 3
    assert (edges.source.iloc[0], edges.target.iloc[0]) == ("Fp1", "Cz")
    assert set(zip(edges.source, edges.target)) == {("Fp1", "Cz"), ("Fz", "Cz"), ("Cz", "Fp1")}
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        top_edges(np.eye(4), NAMES[:3])


def test_degree_and_key_channels():
    names = [f"C{i}" for i in range(10)]
    a = np.random.default_rng(0).random((10, 10)) * 0.1  # weak background
    a[0, 1:] = a[1:, 0] = 1.0  # C0 is a hub connected to every other channel
    a[1, 2] = a[2, 1] = 0.9
    edges = top_edges(a, names, quantile=1 - 10 / 45)  # 45 pairs: keep the 10 strong ones
    assert len(edges) == 10
    deg = degree_centrality(edges, names)
    assert list(deg.channel) == names
    assert deg.degree.tolist() == [9, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    np.testing.assert_allclose(deg.centrality, deg.degree / 9)
    assert key_channels(edges, min_degree=8) == ["C0"]
    assert key_channels(edges, min_degree=2) == ["C0", "C1", "C2"]
    assert key_channels(edges, min_degree=10) == []
    with pytest.raises(ValueError, match="not in 'ch_names'"):
        degree_centrality(edges, names[:5])


def test_connectivity_pipeline_finds_the_planted_hub():
    """Attention that every channel pays to Cz in class 1 makes Cz a key channel there."""
    rng = np.random.default_rng(0)
    C, names = 12, [f"E{i}" for i in range(12)]
    names[5] = "Cz"
    att = rng.random((40, 4, C, C)) * 0.1
    labels = np.repeat([0, 1], 20)
    att[labels == 1, :, :, 5] += 1.0
    mats = class_attention(att, labels)
    hubs = {c: key_channels(top_edges(m, names), min_degree=8) for c, m in mats.items()}
    assert hubs[1] == ["Cz"] and hubs[0] == []


# ----------------------------------------------------------------------------- embeddings
def _blobs(n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 8, [10.0] * 8, [-10.0] + [0.0] * 7])
    X = np.concatenate([c + rng.standard_normal((n_per, 8)) for c in centres])
    return X, np.repeat(["neg", "neu", "pos"], n_per)


def test_kmeans_agreement_on_separated_clusters():
    X, y = _blobs()
    res = kmeans_agreement(X, y)  # k defaults to 3 distinct labels
    assert res.ari == pytest.approx(1.0) and res.nmi == pytest.approx(1.0)
    assert res.labels.shape == (60,) and len(np.unique(res.labels)) == 3
    labels, ari, nmi = kmeans_agreement(X, np.random.default_rng(1).permutation(y), k=3)
    assert ari < 0.2 and nmi < 0.2  # shuffled labels: no agreement
    with pytest.raises(ValueError, match="y_true"):
        kmeans_agreement(X, y[:10])


def test_embed_2d_tsne_keeps_clusters_and_is_seeded():
    X, y = _blobs()
    a = embed_2d(X, "tsne", random_state=0)
    assert a.shape == (60, 2)
    np.testing.assert_allclose(a, embed_2d(X, "tsne", random_state=0))
    assert kmeans_agreement(a, y).ari == pytest.approx(1.0)
    small = embed_2d(X[:6], "tsne", random_state=0)  # perplexity lowered automatically
    assert small.shape == (6, 2)
    with pytest.raises(ValueError, match="method"):
        embed_2d(X, "pca")


@pytest.mark.slow
def test_embed_2d_umap_keeps_clusters():
    X, y = _blobs()
    a = embed_2d(X, "umap", random_state=0)
    assert a.shape == (60, 2)
    assert kmeans_agreement(a, y).ari == pytest.approx(1.0)
