"""The CSV/TSV reader (``csv``) on fixtures that reproduce device exports: a muse-lsl recording
(timestamps, TP9, AF7, AF8, TP10, Right AUX and a marker column named ``Marker`` or ``Marker0``)
and an OpenBCI GUI export (``%`` header with the rate, ``EXG Channel N`` columns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.data.readers import check_dataset, get_reader, read_dataset
from workbench.data.store import build_store

MUSE = ["TP9", "AF7", "AF8", "TP10"]


def write_muse(path: Path, *, marker: str = "Marker0", seconds: float = 8.0, seed: int = 0,
               sfreq: float = 256.0, markers: dict[float, int] | None = None) -> np.ndarray:
    """A muse-lsl CSV: unix timestamps with LSL jitter, microvolts, markers at given times.

    Returns the (5, T) samples in microvolts (4 EEG + Right AUX)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = 1_561_646_400.0 + np.arange(n) / sfreq + rng.uniform(-2e-4, 2e-4, n)
    x = rng.standard_normal((5, n)) * 20.0 + 800.0  # Muse writes uV around an offset
    mark = np.zeros(n, int)
    for when, code in (markers or {2.0: 1, 5.0: 2}).items():
        mark[int(when * sfreq)] = code
    table = pd.DataFrame({"timestamps": t, **dict(zip([*MUSE, "Right AUX"], x)), marker: mark})
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6f")
    return x


def write_openbci(path: Path, *, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """An OpenBCI GUI v5 raw export (Cyton, 8 channels, 250 Hz declared in the header)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 250)
    x = rng.standard_normal((8, n)) * 15.0
    cols = (["Sample Index"] + [f"EXG Channel {i}" for i in range(8)]
            + [f"Accel Channel {i}" for i in range(3)] + ["Other"] * 7
            + [f"Analog Channel {i}" for i in range(3)] + ["Timestamp", "Other",
                                                           "Timestamp (Formatted)"])
    lines = ["%OpenBCI Raw EXG Data", "%Number of channels = 8", "%Sample Rate = 250 Hz",
             "%Board = OpenBCI_GUI$BoardCytonSerial", ", ".join(cols)]
    t0 = 1_620_000_000.0
    for i in range(n):
        row = ([str(i % 256)] + [f"{v:.3f}" for v in x[:, i]] + ["0.0"] * 3 + ["0"] * 7
               + ["0"] * 3 + [f"{t0 + i / 250 + 0.003 * (i % 7):.4f}", "0",
                              "2021-05-03 00:00:00.000"])
        lines.append(", ".join(row))
    path.write_text("\n".join(lines) + "\n")
    return x


@pytest.mark.parametrize("marker", ["Marker", "Marker0"])
def test_muse_export_rate_channels_units_and_events(tmp_path, marker):
    x = write_muse(tmp_path / "muse" / "sub01.csv", marker=marker)
    (rec,) = get_reader("csv").read_file(tmp_path / "muse" / "sub01.csv",
                                         event_labels={1: 0, 2: 1}, event_duration=1.0)
    assert rec.sfreq == 256.0                         # jittered LSL clock snapped to 256 Hz
    assert abs(rec.meta["sfreq_estimated"] - 256.0) < 0.05
    assert rec.ch_names == [*MUSE, "Right AUX"]
    assert rec.ch_types == ["eeg"] * 4 + ["misc"]
    np.testing.assert_allclose(rec.data, x * 1e-6, rtol=1e-5)  # microvolts -> volts
    ev = rec.events
    assert ev["description"].tolist() == ["1", "2"] and ev["label"].tolist() == [0, 1]
    np.testing.assert_allclose(ev["onset"], [2.0, 5.0], atol=1e-3)
    assert rec.meta["marker_column"] == marker and rec.subject == "sub01"
    # labelled 1 s events -> one 1 s window each in a store
    store = build_store([rec], tmp_path / "s", window_s=1.0)
    assert store.labels.tolist() == [0, 1] and store.sfreq == 256.0


def test_openbci_export_rate_from_header_and_channel_names(tmp_path):
    x = write_openbci(tmp_path / "obci.txt")
    reader = get_reader("openbci")
    with pytest.raises(ValueError, match=r"EXG Channel 0.*channels=\["):
        reader.read_file(tmp_path / "obci.txt")  # EXG columns are not electrodes: say what to do
    names = ["Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"]
    (rec,) = reader.read_file(tmp_path / "obci.txt", channels=names)
    assert rec.sfreq == 250.0 and rec.meta["sfreq_source"] == "header"
    assert rec.ch_names == names and rec.n_times == 1000
    np.testing.assert_allclose(rec.data, x * 1e-6, rtol=1e-4, atol=1e-9)
    (mv,) = reader.read_file(tmp_path / "obci.txt", channels=names, units="mV", sfreq=200.0)
    np.testing.assert_allclose(mv.data, x * 1e-3, rtol=1e-4, atol=1e-6)
    assert mv.sfreq == 200.0


def test_folder_of_one_device_and_bad_inputs(tmp_path):
    for s in range(3):
        write_muse(tmp_path / f"s{s}.csv", seed=s)
    (tmp_path / "broken.csv").write_text("timestamps,TP9\n")
    res = read_dataset("csv", tmp_path)
    assert sorted(r.subject for r in res.recordings) == ["s0", "s1", "s2"]
    assert res.failures["file"].str.endswith("broken.csv").tolist() == [True]
    table = pd.DataFrame({"TP9": [1.0, np.nan, 2.0], "AF7": [0.0, 1.0, 2.0]})
    table.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"NaN or inf samples in channels \['TP9'\]"):
        get_reader("csv").read_file(tmp_path / "nan.csv", sfreq=128.0)
    with pytest.raises(ValueError, match="no sampling rate"):
        get_reader("csv").read_file(tmp_path / "nan.csv")


def test_labels_table_problems_are_reported(tmp_path):
    data = tmp_path / "data"
    for s in range(2):
        write_muse(data / f"s{s}.csv", seed=s, seconds=8.0)
    labels = pd.DataFrame({"file": ["s0.csv", "s0.csv", "s1.csv", "gone.csv"],
                           "onset": [1.0, 7.5, 2.0, 0.0], "duration": [2.0, 2.0, 2.0, 1.0],
                           "label": [0, 1, 1, 0]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    res = read_dataset("csv", data, labels=tmp_path / "labels.csv")
    # the row naming a file that does not exist is a failure, not silently ignored
    assert res.failures["error"].str.contains("'gone.csv'.*matches no file").tolist() == [True]
    s0 = next(r for r in res.recordings if r.subject == "s0")
    assert s0.meta["label_problems"] == [
        "1 labels-table events run past the end of the recording (8 s): clipped"]
    check = check_dataset("csv", data, labels=tmp_path / "labels.csv")
    problems = check[check["status"] == "labels"]
    assert len(problems) == 2 and problems["message"].str.contains("gone.csv").any()
