"""Data: Recording (the currency), readers, synthetic corpus, preprocessing, WindowStore, Datasets, splits."""

from .recording import Recording

__all__ = ["Recording"]
