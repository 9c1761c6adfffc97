"""Benchmark suites: folds on fixture indexes (published subject lists, no subject crossing
train / validation / test), the published-number files, missing data, the runner's tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.data.splits import subject_keys
from workbench.evaluation.protocols import make_splits
from workbench.suites import (
    SuiteDataMissing,
    list_suites,
    load_suite,
    published_numbers,
    subject_range,
    suite_store,
)
from workbench.suites.run import comparison_table, summarise, tidy
from workbench.suites.suite import to_fraction


def fixture_index(subjects: list[str], windows: int = 4, dataset: str = "d") -> pd.DataFrame:
    """A store index: ``windows`` windows of two classes per subject."""
    rows = [{"dataset": dataset, "subject": s, "session": "0", "recording": f"{s}_{w % 2}",
             "trial": 0, "start": 1000 * w, "label": w % 2}
            for s in subjects for w in range(windows)]
    return pd.DataFrame(rows)


def assert_disjoint(index: pd.DataFrame, sp) -> dict[str, set[str]]:
    keys = subject_keys(index)
    sets = {k: set(keys.iloc[getattr(sp, k)]) for k in ("train", "val", "test")}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["val"]
    assert not sets["val"] & sets["test"]
    assert len(sp.train) + len(sp.val) + len(sp.test) <= len(index)
    return sets


def test_shipped_suites_load():
    assert list_suites() == ["eegmat", "physionet_mi", "sleep_edf"]
    for name in list_suites():
        s = load_suite(name)
        assert s.name == name and s.metric == "balanced_accuracy"
        assert math.isclose(s.chance, 1 / len(s.classes))
        assert set(s.modes) == {"linear", "full"}
        assert "DIR" in s.download and s.url.startswith("https://")


def test_subject_range():
    assert subject_range("0-3") == ["0", "1", "2", "3"]
    assert subject_range("1-2, 7") == ["1", "2", "7"]
    assert subject_range(["S001", 2]) == ["S001", "2"]
    with pytest.raises(ValueError, match="below the start"):
        subject_range("5-2")
    with pytest.raises(ValueError, match="expected 'A-B'"):
        subject_range("a-b")


def test_eegmat_published_split_with_all_36_subjects():
    suite = load_suite("eegmat")
    subjects = [f"Subject{i:02d}" for i in range(36)]
    folds, exact, note = suite.folds(subjects)
    assert exact and note == "" and len(folds) == 1
    proto = folds[0][1]
    assert proto.train_subjects == [f"Subject{i:02d}" for i in range(28)]
    assert proto.val_subjects == [f"Subject{i:02d}" for i in range(28, 32)]
    assert proto.test_subjects == [f"Subject{i:02d}" for i in range(32, 36)]
    index = fixture_index(subjects)
    (sp,) = make_splits(proto, index, n_times=500)
    sets = assert_disjoint(index, sp)
    assert sets["test"] == {f"Subject{i}" for i in range(32, 36)}
    assert len(sp.train) + len(sp.val) + len(sp.test) == len(index)


def test_physionet_mi_published_split():
    suite = load_suite("physionet_mi")
    subjects = [f"S{i:03d}" for i in range(1, 110)]
    folds, exact, _ = suite.folds(subjects)
    proto = folds[0][1]
    assert exact
    assert proto.train_subjects[0] == "S001" and proto.train_subjects[-1] == "S070"
    assert proto.val_subjects == [f"S{i:03d}" for i in range(71, 90)]
    assert proto.test_subjects == [f"S{i:03d}" for i in range(90, 110)]
    index = fixture_index(subjects)
    assert_disjoint(index, make_splits(proto, index, n_times=400)[0])


def test_sleep_edf_subject_folds_cover_every_subject_once():
    suite = load_suite("sleep_edf")
    subjects = [f"SC4{i:03d}" for i in range(78)]
    folds, exact, _ = suite.folds(subjects, seed=3)
    assert exact and len(folds) == 5
    index = fixture_index(subjects)
    tested: list[str] = []
    for _, proto in folds:
        sets = assert_disjoint(index, make_splits(proto, index, n_times=3000)[0])
        assert sets["val"], "every fold validates on held-out subjects"
        tested += sorted(sets["test"])
    assert sorted(tested) == sorted(subjects)  # each subject is a test subject exactly once


def test_restricted_split_keeps_order_and_is_flagged():
    suite = load_suite("eegmat")
    subjects = [f"Subject{i:02d}" for i in range(12)]  # what ../shared/data/eegmat holds
    folds, exact, note = suite.folds(subjects)
    proto = folds[0][1]
    assert not exact and "not comparable" in note and "12 subjects" in note
    assert proto.train_subjects == [f"Subject{i:02d}" for i in range(8)]
    assert proto.val_subjects == ["Subject08", "Subject09"]
    assert proto.test_subjects == ["Subject10", "Subject11"]
    # a cap on subjects is a restriction too, even when all 36 are present
    folds, exact, _ = suite.folds([f"Subject{i:02d}" for i in range(36)], max_subjects=6)
    assert not exact and len(folds[0][1].test_subjects) == 1
    with pytest.raises(ValueError, match="too few"):
        suite.folds(["Subject00", "Subject01"])
    # a subject-fold suite run on its first folds only is flagged
    sleep = load_suite("sleep_edf")
    folds, exact, note = sleep.folds([f"SC4{i:03d}" for i in range(78)], max_folds=2)
    assert len(folds) == 2 and not exact and "2 run" in note


def test_bad_suite_files_are_named(tmp_path):
    good = load_suite("eegmat").path.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(good + "colour: blue\n")
    with pytest.raises(ValueError, match="unknown suite fields \\['colour'\\]"):
        load_suite(bad)
    bad.write_text(good.replace('val_subjects: "28-31"', 'val_subjects: "27-31"'))
    with pytest.raises(ValueError, match="subject 27 is in both"):
        load_suite(bad)
    with pytest.raises(ValueError, match="suite"):
        load_suite("no_such_suite")


def test_published_numbers_parse_and_convert():
    pub = published_numbers()
    assert len(pub) > 40
    assert (pub["source"].str.strip() != "").all() and (pub["table"].str.strip() != "").all()
    assert set(pub["suite"]) <= set(list_suites())
    assert pub["value_fraction"].between(0, 1).all()
    # OpenEEGBench's rescaled balanced accuracy, by hand: chance + (1 - chance) x / 100
    reve = pub[(pub.suite == "eegmat") & (pub.model == "REVE") & (pub["mode"] == "linear")]
    assert reve["value_fraction"].iloc[0] == pytest.approx(0.5 + 0.5 * 0.2954)
    cbra = pub[(pub.suite == "physionet_mi") & (pub.model == "CBraMod") & (pub["mode"] == "full")
               & (pub.scale != "fraction")]
    assert cbra["value_fraction"].iloc[0] == pytest.approx(0.25 + 0.75 * 0.4352)
    assert to_fraction(0.61, "fraction", 0.25) == pytest.approx(0.61)
    # Wang et al.'s EEGPT is not our EEGPT (Yue et al.): never matched to it
    wang = pub[pub.model.str.startswith("EEGPT")]
    assert (wang["ours"] == "").all()
    assert set(pub["ours"]) - {""} <= {"stelar", "trace", "eegnet"}
    assert pub["same_split"].dtype == bool
    assert not pub[(pub.suite == "physionet_mi") & pub.source.str.startswith("Trace")][
        "same_split"].any()  # Trace's split is not legible in its text: never assumed


def test_published_row_without_source_is_named(tmp_path):
    df = pd.read_csv(load_suite("eegmat").path.parent / "published.csv", dtype=str,
                     keep_default_na=False)
    df.loc[3, "source"] = " "
    path = tmp_path / "published.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ValueError, match="row 5 .*no source"):
        published_numbers(path=path)


def test_missing_data_folder_says_how_to_get_it(tmp_path):
    suite = load_suite("eegmat")
    for where in (None, tmp_path / "absent", tmp_path):
        with pytest.raises(SuiteDataMissing, match="workbench data download eegmat"):
            suite_store(suite, where, cache_dir=tmp_path / "cache")


def test_tables_summary_and_comparison():
    suite = load_suite("eegmat")

    class _Store:  # what tidy reads of a store
        sfreq, n_times = 200.0, 1000

    rows = pd.DataFrame([{"method": "stelar", "variant": "stelar", "mode": "linear",
                          "dataset": "eegmat", "seed": s, "n_train": 10, "n_val": 2,
                          "n_test": 2, "balanced_accuracy": v, "cohen_kappa": 2 * v - 1}
                         for s, v in ((1, 0.6), (2, 0.7))])
    t = tidy(rows, suite, "fixed", _Store(), exact=False)
    assert list(t.columns[:9]) == ["suite", "dataset", "method", "mode", "variant", "fold",
                                   "seed", "metric", "value"]
    assert len(t) == 4 and set(t["window_s"]) == {5.0}
    s = summarise(t)
    ba = s[s.metric == "balanced_accuracy"].iloc[0]
    assert ba["mean"] == pytest.approx(0.65) and ba["std"] == pytest.approx(np.std([.6, .7],
                                                                                   ddof=1))
    comp = comparison_table(suite, s, exact=False)
    assert set(comp["kind"]) == {"ours", "published"}
    assert not comp["comparable"].any()  # a restricted split is never comparable
    comp = comparison_table(suite, s, exact=True)
    pub = comp[comp.kind == "published"]
    assert pub["comparable"].all()  # same window (5 s) and split as OpenEEGBench
    mi = comparison_table(load_suite("physionet_mi"), s, exact=True)
    oeb = mi[(mi.kind == "published") & mi.source.str.startswith("OpenEEGBench")]
    assert oeb["protocol_differs"].str.contains("window 3 s").all()
    assert not oeb["comparable"].any()
    stelar = mi[(mi.kind == "published") & mi.source.str.startswith("STELAR")]
    assert stelar["protocol_differs"].str.startswith("split: 5 subject folds").all()
    sleep = comparison_table(load_suite("sleep_edf"), s, exact=True)
    assert sleep.loc[sleep.kind == "published", "comparable"].all()  # 5 subject folds, 30 s


@pytest.mark.slow
def test_run_suite_on_real_eegmat(shared_data, tmp_path):
    """The runner end to end on six real subjects: one method in both modes, the DE baseline,
    the leakage rule of its pre-training, tables written, a failing method recorded, and a
    second call served from the finished runs."""
    import torch

    from workbench.suites import run_suite

    torch.set_num_threads(1)
    kw = dict(methods=["eegpt"], baselines=["de"], max_subjects=6,
              run_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="no_such_method"):
        run_suite("eegmat", shared_data / "eegmat", **{**kw, "methods": ["no_such_method"]})
    # a bad checkpoint fails that method's runs, recorded; the others still run
    bad = run_suite("eegmat", shared_data / "eegmat", **{**kw, "methods": ["eegpt", "trace"],
                                                         "pretrained": {"trace": tmp_path}})
    assert list(bad.failures["method"]) == ["trace", "trace"]
    assert set(bad.summary["method"]) == {"eegpt", "de_baseline"}
    res = run_suite("eegmat", shared_data / "eegmat", **kw)
    assert not res.exact and "6 subjects" in res.note
    assert res.subjects == [f"Subject{i:02d}" for i in range(6)]
    ba = res.summary[res.summary.metric == "balanced_accuracy"].set_index(["method", "mode"])
    assert {("eegpt", "linear"), ("eegpt", "full"), ("de_baseline", "features")} <= set(ba.index)
    assert ba["mean"].between(0, 1).all()
    assert res.failures.empty
    # pre-training saw the training subjects only
    pre = next((tmp_path / "cache" / "stores").rglob("store-subjects-*/meta.json"))
    import json

    prov = json.loads(pre.read_text())["provenance"]
    assert prov["subjects"] == [f"Subject{i:02d}" for i in range(4)]
    for name in ("results", "summary", "comparison", "failures"):
        assert (res.out_dir / f"{name}.csv").exists()
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("done.json")}
    again = run_suite("eegmat", shared_data / "eegmat", **kw)  # finished runs are reused
    pd.testing.assert_frame_equal(again.summary, res.summary)
    assert done and {p: p.stat().st_mtime_ns for p in done} == done  # nothing retrained


def test_physionet_checksums_are_parsed_and_enforced(tmp_path, monkeypatch):
    import pooch

    from workbench.data.readers.physionet import fetch, parse_sha256sums

    a, b = "a" * 64, "B" * 64
    sums = parse_sha256sums(f"{a}  Subject00_1.edf\n\n{b} *./sub/x.csv\n")
    assert sums == {"Subject00_1.edf": a, "sub/x.csv": b.lower()}
    with pytest.raises(ValueError, match="line 1"):
        parse_sha256sums("1234  file.edf")
    calls = []
    monkeypatch.setattr(pooch, "retrieve", lambda url, known_hash, fname, path, **kw:
                        calls.append((url, known_hash, fname, str(path))) or str(path / fname))
    with pytest.raises(ValueError, match="No published checksum"):
        fetch("https://x/", ["Subject99_1.edf"], tmp_path, sums=sums)
    assert not calls  # nothing downloaded before every name is known
    fetch("https://x/", ["Subject00_1.edf", "sub/x.csv"], tmp_path, sums=sums)
    assert calls == [("https://x/Subject00_1.edf", f"sha256:{a}", "Subject00_1.edf",
                      str(tmp_path)),
                     ("https://x/sub/x.csv", f"sha256:{b.lower()}", "x.csv",
                      str(tmp_path / "sub"))]


def test_benchmark_command_rejects_bad_arguments(capsys):
    from workbench.cli import main

    assert main(["benchmark", "no_such_suite"]) == 2
    assert "available: ['eegmat'" in capsys.readouterr().err
    assert main(["benchmark", "eegmat", "sleep_edf", "--data-path", "x"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["benchmark", "eegmat", "--baselines", "lda"]) == 2


def test_outcome_sentences():
    from workbench.report.narrative import outcome

    text = outcome("11_benchmark", {
        "suites_run": ["eegmat"], "suites_missing": ["sleep_edf"],
        "eegmat": {"exact": False, "note": "split restricted", "subjects": 12, "chance": 0.5,
                   "metric": "balanced_accuracy", "failures": 1,
                   "ours": {"stelar/linear": 0.62, "eegpt/full": 0.5},
                   "published": {"REVE/linear": 0.65, "LaBraM/linear": 0.5}}})
    assert "best of ours stelar/linear 0.62" in text
    assert "1 of 2 runs more than 0.05 above chance 0.5" in text
    assert "Not comparable" in text and "No data for sleep_edf" in text
    assert "1 runs failed" in text


@pytest.mark.slow
def test_a_folder_with_all_36_subjects_gets_the_published_split(shared_data, tmp_path):
    """A folder laid out like the full eegmat (36 subjects; here links to the 12 real subjects'
    files under 36 names) runs exactly the published split, and its rows are comparable with
    OpenEEGBench's (same split, same 5 s windows)."""
    from workbench.suites import run_suite

    folder = tmp_path / "eegmat36"
    folder.mkdir()
    for i in range(36):
        for c in (1, 2):
            (folder / f"Subject{i:02d}_{c}.edf").symlink_to(
                shared_data / "eegmat" / f"Subject{i % 12:02d}_{c}.edf")
    res = run_suite("eegmat", folder, methods=[], baselines=["de"], run_dir=tmp_path / "runs",
                    cache_dir=tmp_path / "cache")
    assert res.exact and res.note == ""
    assert len(res.subjects) == 36
    rows = res.results[res.results.metric == "balanced_accuracy"]
    assert len(rows) == 1 and bool(rows["exact"].iloc[0])
    store = suite_store(load_suite("eegmat"), folder, cache_dir=tmp_path / "cache")  # cached
    per = subject_keys(store.index).str[-2:].astype(int).value_counts()
    expected = [per[per.index < 28].sum(), per[per.index.isin(range(28, 32))].sum(),
                per[per.index >= 32].sum()]
    assert rows[["n_train", "n_val", "n_test"]].iloc[0].tolist() == expected
    comp = res.comparison
    assert comp.loc[comp.kind == "published", "comparable"].all()
    assert comp.loc[comp.kind == "ours", "comparable"].all()


def test_a_folder_with_too_few_subjects_is_missing_data(shared_data, tmp_path):
    """EEGMMIDB with one subject cannot be split: reported like missing data (the notebook
    goes on with the other suites), with the download command."""
    from workbench.suites import run_suite

    with pytest.raises(SuiteDataMissing, match="1 subjects are too few.*109.*workbench data "
                                              "download eegmmidb"):
        run_suite("physionet_mi", shared_data / "eegmmidb", methods=[], baselines=["de"],
                  run_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
