"""Evaluation: classification metrics and mean ± std tables over subjects, folds and seeds."""

from .metrics import aggregate, classification_metrics, format_mean_std

__all__ = ["aggregate", "classification_metrics", "format_mean_std"]
