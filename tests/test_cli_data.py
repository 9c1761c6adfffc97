"""The data commands take labels tables and reader options: `workbench preprocess` and
`workbench data check` with --labels TABLE, --reader-option KEY=VALUE and --resample HZ."""

from __future__ import annotations

import pandas as pd

from workbench.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from workbench.data.store import WindowStore

from .test_device_csv import write_muse


def _folder(tmp_path):
    data = tmp_path / "muse"
    for s in range(2):
        write_muse(data / f"s{s}.csv", seed=s, seconds=8.0)
    table = pd.DataFrame({"file": ["s0.csv", "s0.csv", "s1.csv", "s1.csv"],
                          "onset": [1.0, 4.0, 1.0, 4.0], "duration": 2.0,
                          "label": [0, 1, 1, 0]})
    table.to_csv(tmp_path / "labels.csv", index=False)
    return data, tmp_path / "labels.csv"


def test_preprocess_with_labels_reader_option_and_resample(tmp_path, capsys):
    data, labels = _folder(tmp_path)
    out = tmp_path / "out"
    rc = main(["preprocess", "--dataset", "csv", "--data-path", str(data), "--recipe",
               "minimal", "--out", str(out), "--labels", str(labels),
               "--reader-option", "units=uV", "--resample", "128"])
    assert rc == EXIT_OK, capsys.readouterr().err
    store = WindowStore(out / "store")
    assert store.sfreq == 128.0 and store.ch_names == ["TP9", "AF7", "AF8", "TP10"]
    assert store.labels.tolist() == [0, 1, 1, 0]  # one 2 s window per 2 s event of the table
    # a reader option reaches the reader: a declared rate overrides the timestamps
    rc = main(["preprocess", "--dataset", "csv", "--data-path", str(data), "--recipe",
               "minimal", "--out", str(tmp_path / "o2"), "--reader-option", "sfreq=250"])
    assert rc == EXIT_OK and WindowStore(tmp_path / "o2" / "store").sfreq == 250.0
    rc = main(["preprocess", "--dataset", "csv", "--data-path", str(data), "--out",
               str(tmp_path / "o3"), "--reader-option", "bogus=1"])
    assert rc == EXIT_USAGE and "bogus" in capsys.readouterr().err


def test_rows_for_missing_files_fail_the_run_and_the_check(tmp_path, capsys):
    data, labels = _folder(tmp_path)
    table = pd.read_csv(labels)
    table.loc[len(table)] = ["s9.csv", 0.0, 2.0, 0]
    table.to_csv(labels, index=False)
    out = tmp_path / "out"
    rc = main(["preprocess", "--dataset", "csv", "--data-path", str(data), "--recipe",
               "minimal", "--out", str(out), "--labels", str(labels)])
    assert rc == EXIT_FAILED
    fails = pd.read_csv(out / "failures.csv")
    assert fails["stage"].tolist() == ["labels"] and "s9.csv" in fails["error"].iloc[0]
    capsys.readouterr()
    rc = main(["data", "check", "csv", str(data), "--labels", str(labels)])
    printed = capsys.readouterr().out
    assert rc == EXIT_FAILED and "s9.csv" in printed and "matches no file" in printed
