"""Data: Recording (the currency), readers, synthetic corpus, preprocessing, WindowStore, Datasets, splits."""

from .corpus import load_store
from .recording import Recording, make_events
from .store import WindowStore, build_store

__all__ = ["Recording", "WindowStore", "build_store", "load_store", "make_events"]
