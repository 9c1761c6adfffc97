"""Embedding analyses: 2-D maps (t-SNE, UMAP) and agreement of K-means clusters with labels.

Arrays in, arrays out: the embeddings are computed once (e.g. the ``embedding`` output of a
model over a split) and saved, so figures can be redrawn without the model.

References
----------
.. [1] van der Maaten, L. & Hinton, G. (2008). Visualizing Data using t-SNE. JMLR 9.
.. [2] McInnes, L., Healy, J. & Melville, J. (2018). UMAP: Uniform Manifold Approximation and
       Projection for Dimension Reduction. arXiv:1802.03426.
.. [3] "One Model for All", Section IV (t-SNE of embeddings, K-means with k = 3).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from workbench.utils import check_option

logger = logging.getLogger("workbench")

__all__ = ["KMeansAgreement", "embed_2d", "kmeans_agreement"]


def _as_2d(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"Expected embeddings X of shape (n_samples, n_features), got {X.shape}.")
    if not np.isfinite(X).all():
        raise ValueError("Embeddings X contain NaN or inf values.")
    return X


def embed_2d(
    X: np.ndarray,
    method: str = "tsne",
    random_state: int = 42,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> np.ndarray:
    """Map embeddings to 2-D for plotting.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
    method : {"tsne", "umap"}
    random_state : int
        Seed of the embedding (the same seed gives the same map).
    perplexity : float
        t-SNE perplexity; lowered to ``(n_samples - 1) / 3`` for small inputs (logged).
    n_neighbors, min_dist
        UMAP parameters; ``n_neighbors`` is lowered to ``n_samples - 1`` for small inputs.

    Returns
    -------
    ndarray, shape (n_samples, 2)
    """
    check_option("method", method, ["tsne", "umap"])
    X = _as_2d(X)
    n = X.shape[0]
    if n < 4:
        raise ValueError(f"embed_2d needs at least 4 samples, got {n}.")
    if method == "tsne":
        p = min(perplexity, (n - 1) / 3)
        if p < perplexity:
            logger.info(
                "embed_2d: t-SNE perplexity lowered from %s to %.1f for %d samples.",
                perplexity,
                p,
                n,
            )
        tsne = TSNE(n_components=2, perplexity=p, init="pca", random_state=random_state)
        return tsne.fit_transform(X)
    import umap  # slow import (numba): only when asked for

    # n_jobs=1: a seeded UMAP is single-threaded anyway (and warns unless told so).
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=min_dist,
        random_state=random_state,
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(X), dtype=np.float64)


class KMeansAgreement(NamedTuple):
    """K-means labels and their agreement with the ground truth."""

    labels: np.ndarray
    ari: float
    nmi: float


def kmeans_agreement(
    X: np.ndarray, y_true: np.ndarray, k: int | None = None, random_state: int = 42
) -> KMeansAgreement:
    """Cluster ``X`` with K-means and compare the clusters with ``y_true``.

    Parameters
    ----------
    X : ndarray, shape (n_samples, n_features)
        Embeddings (or their 2-D map).
    y_true : ndarray, shape (n_samples,)
        Ground-truth labels (any hashable values).
    k : int, optional
        Number of clusters; defaults to the number of distinct labels (3 in the paper).
    random_state : int
        Seed of the K-means initialisation.

    Returns
    -------
    KMeansAgreement
        ``labels`` (n_samples,) int, ``ari`` (adjusted Rand index) and ``nmi`` (normalised
        mutual information), both 1 for a perfect match up to a relabelling.
    """
    X = _as_2d(X)
    y_true = np.asarray(y_true)
    if y_true.shape != (X.shape[0],):
        raise ValueError(
            f"kmeans_agreement: 'y_true' must have shape ({X.shape[0]},), got {y_true.shape}."
        )
    k = len(np.unique(y_true)) if k is None else k
    if not 1 <= k <= X.shape[0]:
        raise ValueError(f"Invalid value for the 'k' parameter: expected 1..{X.shape[0]}, got {k}.")
    labels = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit_predict(X)
    return KMeansAgreement(
        labels=labels,
        ari=float(adjusted_rand_score(y_true, labels)),
        nmi=float(normalized_mutual_info_score(y_true, labels)),
    )
