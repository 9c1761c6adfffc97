"""Shared fixtures: real-data location, small synthetic recordings, deterministic torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data.recording import Recording, make_events

# Tiny test models run fastest on one thread (and the suite often shares the machine).
torch.set_num_threads(1)


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout, or ``$WORKBENCH_SHARED_DATA``; None if absent."""
    env = os.environ.get("WORKBENCH_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real recordings (../shared/data or $WORKBENCH_SHARED_DATA) not available")
    return path


def make_recording(subject: str = "1", ch_names=("Fp1", "Fz", "Cz", "Pz", "O1", "O2"),
                   sfreq: float = 128.0, n_trials: int = 10, trial_s: float = 4.0,
                   gap_s: float = 1.0, seed: int = 0, dataset: str = "toy") -> Recording:
    """A small labelled recording: alternating classes, class 1 has more 10 Hz power."""
    rng = np.random.default_rng(seed)
    n = int((n_trials * (trial_s + gap_s) + gap_s) * sfreq)
    t = np.arange(n) / sfreq
    data = rng.standard_normal((len(ch_names), n)) * 5e-6
    onsets = gap_s + np.arange(n_trials) * (trial_s + gap_s)
    labels = np.arange(n_trials) % 2
    for o, lab in zip(onsets, labels):
        m = (t >= o) & (t < o + trial_s)
        data[:, m] += (1 + 2 * lab) * 4e-6 * np.sin(2 * np.pi * 10 * t[m])
    return Recording(data, sfreq, list(ch_names), dataset, subject,
                     events=make_events(onsets, trial_s, labels), label_names={0: "a", 1: "b"})


@pytest.fixture
def toy_recordings() -> list[Recording]:
    return [make_recording(str(s), seed=s) for s in range(3)]
