"""Scaling laws: fit ``L(N) = a * N^(-alpha) + c`` to losses of models of ``N`` parameters.

The fit is a bounded non-linear least squares (``scipy.optimize.curve_fit``, trust-region
reflective) on ``N / N0`` with ``N0`` the geometric mean of the sizes, which keeps ``a`` of order
one whatever the parameter counts; ``a`` is converted back to the scale of ``N`` at the end.
It starts from several exponents (each with the least-squares ``a`` for an asymptote at half the
smallest loss) and keeps the best, so a flat region of the objective does not stop it early.

Arrays in, a small dataclass out (``workbench.analysis`` takes arrays or tidy tables, never
models).

References
----------
.. [1] Kaplan, J. et al. (2020). Scaling Laws for Neural Language Models. arXiv:2001.08361.
.. [2] Hoffmann, J. et al. (2022). Training Compute-Optimal Large Language Models.
       arXiv:2203.15556 (the ``E + A / N^alpha`` form).
.. [3] Yue, T. et al. (2024). EEGPT: Unleashing the Potential of EEG Generalist Foundation
       Model by Autoregressive Pre-training. arXiv:2410.19779, Figure 4b (scaling with size).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

__all__ = ["PowerLawFit", "fit_power_law", "power_law"]


def power_law(n: np.ndarray | float, a: float, alpha: float, c: float) -> np.ndarray:
    """``a * n^(-alpha) + c``."""
    return a * np.power(np.asarray(n, dtype=float), -alpha) + c


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    a, alpha, c : float
        ``L(N) = a * N^(-alpha) + c`` (``c``: the irreducible loss).
    alpha_se : float
        Standard error of ``alpha`` from the fit's covariance (NaN when not estimable, e.g.
        three points for three parameters).
    r2 : float
        Coefficient of determination of the fitted curve on the points.
    rmse : float
        Root mean squared residual.
    n_points : int
    """

    a: float
    alpha: float
    c: float
    alpha_se: float
    r2: float
    rmse: float
    n_points: int

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        """The fitted loss at sizes ``n``."""
        return power_law(n, self.a, self.alpha, self.c)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_power_law(n: Sequence[float] | np.ndarray, loss: Sequence[float] | np.ndarray, *,
                  alpha_bounds: tuple[float, float] = (0.0, 3.0),
                  c_bounds: tuple[float, float | None] = (0.0, None),
                  alpha_starts: Sequence[float] = (0.05, 0.2, 0.5, 1.0)) -> PowerLawFit:
    """Fit ``loss = a * n^(-alpha) + c`` with ``a >= 0`` and bounded ``alpha`` and ``c``.

    Parameters
    ----------
    n : array of float, shape (K,)
        Model sizes (parameter counts), all > 0.
    loss : array of float, shape (K,)
        Their (validation) losses.
    alpha_bounds : (float, float)
        Bounds of the exponent.
    c_bounds : (float, float or None)
        Bounds of the asymptote; an upper bound of None is the smallest observed loss (a
        decreasing curve cannot level off above its lowest point).
    alpha_starts : sequence of float
        Initial exponents tried; the fit with the smallest squared error is returned.

    Returns
    -------
    PowerLawFit

    Raises
    ------
    ValueError
        For fewer than 3 points, arrays of different lengths, or non-finite or non-positive
        sizes.
    """
    n = np.asarray(n, dtype=float).ravel()
    y = np.asarray(loss, dtype=float).ravel()
    if n.shape != y.shape:
        raise ValueError(f"Invalid inputs: 'n' has {n.size} values and 'loss' {y.size}.")
    if n.size < 3:
        raise ValueError(f"Invalid inputs: a 3-parameter power law needs at least 3 points, "
                         f"got {n.size}.")
    if not (np.isfinite(n).all() and np.isfinite(y).all() and (n > 0).all()):
        raise ValueError("Invalid inputs: 'n' must be finite and > 0 and 'loss' finite; got "
                         f"n={n.tolist()}, loss={y.tolist()}.")
    n0 = float(np.exp(np.log(n).mean()))
    u = n / n0  # sizes around 1: a, the fitted scale, stays of order one
    c_lo = float(c_bounds[0])
    c_hi = float(y.min()) if c_bounds[1] is None else float(c_bounds[1])
    c_hi = max(c_hi, c_lo + 1e-12)
    lower = [0.0, alpha_bounds[0], c_lo]
    upper = [np.inf, alpha_bounds[1], c_hi]

    def model(u_, a_, alpha_, c_):
        return a_ * np.power(u_, -alpha_) + c_

    best = None
    for alpha0 in alpha_starts:
        alpha0 = float(np.clip(alpha0, *alpha_bounds))
        c0 = float(np.clip(0.5 * y.min(), c_lo, c_hi))
        basis = np.power(u, -alpha0)
        a0 = max(float(basis @ (y - c0) / (basis @ basis)), 1e-12)  # least squares given alpha0, c0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                p, cov = curve_fit(model, u, y, p0=[a0, alpha0, c0], bounds=(lower, upper),
                                   method="trf", maxfev=20_000)
        except RuntimeError:  # no convergence from this start
            continue
        sse = float(np.sum((model(u, *p) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, p, cov)
    if best is None:
        raise ValueError("fit_power_law: the fit did not converge from any start; check the "
                         f"points (n={n.tolist()}, loss={y.tolist()}).")
    sse, (a_u, alpha, c), cov = best
    sst = float(np.sum((y - y.mean()) ** 2))
    var_alpha = float(cov[1, 1]) if np.isfinite(cov).all() else float("nan")
    return PowerLawFit(
        a=float(a_u * n0**alpha),  # a_u (n/n0)^-alpha = (a_u n0^alpha) n^-alpha
        alpha=float(alpha),
        c=float(c),
        alpha_se=float(np.sqrt(var_alpha)) if var_alpha >= 0 else float("nan"),
        r2=1.0 - sse / sst if sst > 0 else float("nan"),
        rmse=float(np.sqrt(sse / n.size)),
        n_points=int(n.size),
    )
