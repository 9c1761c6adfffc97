"""Readers on small files written in the exact on-disk layout of each dataset.

Each fixture states which facts of the real release it reproduces (file and folder names,
variable names, nesting, shapes, dtypes, units, encodings, EDF headers); sizes (trial counts,
durations) are shrunk, which the readers do not depend on. Recordings that are public and small
are tested on the real files in ``test_readers_realdata.py``.
"""

from __future__ import annotations

import datetime
import os
import pickle
import struct
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import scipy.io

from workbench.channels import DEAP_32, DREAMER_14, SEED_62, TCP_BIPOLAR_22
from workbench.data.readers import (
    READERS,
    DatasetNotDownloadable,
    bcic2a,
    chbmit,
    check_dataset,
    deap,
    download_dataset,
    dreamer,
    eegmmidb,
    generic,
    get_reader,
    iter_dataset,
    read_dataset,
    seed,
    sleep_edf,
    tuh,
    uci_eye_state,
)
from workbench.data.readers.generic import classify_channel, read_edf_header

RNG = np.random.default_rng(0)


# ============================================================================= writers
def write_edf(path: Path, signals: list[tuple[str, np.ndarray, float]], *,
              annotations=(), dims: str = "uV") -> Path:
    """An EDF(+) file with edfio: ``signals`` = (label, samples in ``dims``, rate)."""
    import edfio

    sigs = []
    for label, x, fs in signals:
        lo, hi = float(np.min(x)), float(np.max(x))
        if hi - lo < 1e-6:  # flat channels still need a valid physical range
            lo, hi = lo - 1.0, hi + 1.0
        sigs.append(edfio.EdfSignal(np.asarray(x, float), fs, label=label,
                                    physical_dimension=dims, physical_range=(lo, hi)))
    ann = [edfio.EdfAnnotation(o, d, t) for o, d, t in annotations]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(sigs, annotations=ann or None).write(path)
    return path


def noise(n_ch: int, n: int, scale: float = 20.0) -> np.ndarray:
    return RNG.normal(0, scale, (n_ch, n))


def py2_pickle(obj: dict) -> bytes:
    """Pickle ``obj`` (dict of str -> ndarray) exactly as Python 2 ``cPickle`` protocol 2 does.

    Reproduces the real DEAP ``.dat`` facts: the dict keys and the array buffers are Python-2
    ``str`` objects (opcodes SHORT_BINSTRING/BINSTRING, not BINBYTES), arrays are rebuilt by
    ``numpy.core.multiarray._reconstruct`` + ``ndarray.__setstate__`` with a version-3 dtype
    state; so Python 3 needs ``encoding="latin1"`` to load it.
    """
    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def i(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    out = [b"\x80\x02}("]
    for key, arr in obj.items():
        arr = np.ascontiguousarray(arr)
        out += [s(key.encode()),
                b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n", i(0), b"\x85",
                s(b"b"), b"\x87R(", i(1), b"(", *[i(d) for d in arr.shape], b"t",
                b"cnumpy\ndtype\n", s(arr.dtype.str[1:].encode()), i(0), i(1), b"\x87R(", i(3),
                s(b"<"), b"NNN", i(-1), i(-1), i(0), b"tb\x89", s(arr.tobytes()), b"tb"]
    out.append(b"u.")
    return b"".join(out)


# ============================================================================= registry
def test_registry_has_every_dataset_with_its_interface():
    assert set(READERS) == {"seed", "deap", "dreamer", "eegmmidb", "eegmat", "bcic2a", "tuab",
                            "tuev", "sleep_edf", "chbmit", "uci_eye_state", "generic", "csv"}
    for name, r in READERS.items():
        assert r.INFO.name == name
        assert callable(r.list_files) and callable(r.read_file)
        assert r.INFO.layout, name
        if not r.INFO.public:
            assert r.INFO.request_url.startswith("https://"), name
    assert get_reader("physionet_mi") is eegmmidb
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_reader("nope")


@pytest.mark.parametrize("name", ["seed", "deap", "dreamer", "tuab", "tuev"])
def test_download_of_licence_gated_data_says_where_to_request_it(name, tmp_path):
    info = get_reader(name).INFO
    with pytest.raises(DatasetNotDownloadable) as e:
        download_dataset(name, tmp_path)
    msg = str(e.value)
    assert info.request_url.split()[0] in msg and "workbench data check" in msg
    assert info.layout.split()[0] in msg


def test_bcic2a_download_names_moabb_when_missing(tmp_path):
    try:
        import moabb  # noqa: F401
        pytest.skip("moabb is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install moabb"):
        download_dataset("bcic2a", tmp_path)


def test_unknown_reader_option_fails_once_with_the_accepted_options(tmp_path):
    with pytest.raises(TypeError, match="unknown option.*'threshold'"):
        list(iter_dataset("eegmat", tmp_path, threshold=3))


# ============================================================================= channels
@pytest.mark.parametrize("raw, expected", [
    ("EEG FP1-REF", ("Fp1", "eeg")), ("EEG T3-LE", ("T7", "eeg")), ("Fc5.", ("FC5", "eeg")),
    ("FP1-F7", ("Fp1-F7", "eeg")), ("EEG Fpz-Cz", ("Fpz-Cz", "eeg")),
    ("EEG A2-A1", ("EEG A2-A1", "misc")), ("ECG ECG", ("ECG ECG", "ecg")),
    ("EEG EKG1-REF", ("EEG EKG1-REF", "ecg")), ("EEG LOC-REF", ("EEG LOC-REF", "eog")),
    ("EOG horizontal", ("EOG horizontal", "eog")), ("hEOG", ("hEOG", "eog")),
    ("zEMG", ("zEMG", "emg")), ("EMG submental", ("EMG submental", "emg")),
    ("Resp oro-nasal", ("Resp oro-nasal", "misc")), ("PHOTIC-REF", ("PHOTIC-REF", "misc")),
    ("VNS", ("VNS", "misc")), ("EOG1", ("EOG1", "eog")),
])
def test_classify_channel(raw, expected):
    name, typ, known = classify_channel(raw)
    assert (name, typ) == expected and known


def test_unknown_channel_is_typed_misc_and_reported_or_raises(tmp_path):
    f = write_edf(tmp_path / "x.edf", [("Cz", noise(1, 500)[0], 100.0),
                                       ("XYZ123", noise(1, 500)[0], 100.0)])
    rec = generic.read_file(f)[0]
    assert rec.ch_types == ["eeg", "misc"] and rec.meta["unknown_channels"] == ["XYZ123"]
    with pytest.raises(ValueError, match=r"x\.edf.*unknown channel names \['XYZ123'\]"):
        generic.read_file(f, unknown="raise")


# ============================================================================= SEED
SEED_LABELS = np.array([[1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1]])


def make_seed(root: Path, files=(("1_20131027", "djc"), ("1_20131030", "djc"),
                                 ("2_20140404", "jl")), n_trials: int = 15) -> Path:
    """SEED ``Preprocessed_EEG`` layout: ``<subject>_<YYYYMMDD>.mat`` with variables
    ``<initials>_eeg1..15`` (62 x T float64, microvolts, T differs per clip) and ``label.mat``
    (variable ``label``, 1 x 15 in {-1, 0, 1}). Clips are 1-2 s here instead of ~4 min."""
    folder = root / "Preprocessed_EEG"
    folder.mkdir(parents=True)
    scipy.io.savemat(folder / "label.mat", {"label": SEED_LABELS})
    for stem, initials in files:
        scipy.io.savemat(folder / f"{stem}.mat", {
            f"{initials}_eeg{k}": noise(62, 200 + 10 * k) for k in range(1, n_trials + 1)})
    return root


def test_seed_reads_clips_with_labels_sessions_and_volts(tmp_path):
    root = make_seed(tmp_path)
    res = read_dataset("seed", root)
    assert res.failures.empty and res.n_files == 3 and len(res) == 45
    first = [r for r in res.recordings if r.subject == "1" and r.session == "1"]
    assert [r.label for r in first] == (SEED_LABELS[0] + 1).tolist()
    assert {r.session for r in res.recordings if r.subject == "1"} == {"1", "2"}
    assert first[0].ch_names == list(SEED_62) and first[0].sfreq == 200.0
    raw = scipy.io.loadmat(root / "Preprocessed_EEG" / "1_20131027.mat")["djc_eeg3"]
    np.testing.assert_allclose(first[2].data, (raw * 1e-6).astype(np.float32))
    assert first[2].events["duration"].iloc[0] == pytest.approx(230 / 200)
    assert first[0].label_names == {0: "negative", 1: "neutral", 2: "positive"}
    assert [r.subject for r in read_dataset("seed", root, subjects=[2]).recordings] == ["2"] * 15


def test_seed_trial_label_count_mismatch_names_both_counts(tmp_path):
    root = make_seed(tmp_path, files=(("3_20140101", "ab"),), n_trials=14)
    with pytest.raises(ValueError, match=r"3_20140101\.mat: 14 trial variables but label\.mat "
                                         r"has 15 labels"):
        seed.read_file(root / "Preprocessed_EEG" / "3_20140101.mat")


def test_seed_nan_raises_naming_the_channel_or_is_flagged(tmp_path):
    root = make_seed(tmp_path, files=(("4_20140101", "cd"),))
    f = root / "Preprocessed_EEG" / "4_20140101.mat"
    mat = {k: v for k, v in scipy.io.loadmat(f).items() if not k.startswith("__")}
    mat["cd_eeg2"][5, 10] = np.nan
    mat["cd_eeg2"][7, :] = 0.0  # a flat channel
    scipy.io.savemat(f, mat)
    with pytest.raises(ValueError, match=r"4_20140101\.mat:cd_eeg2: NaN or inf samples in channels "
                                         r"\['F7'\]"):
        seed.read_file(f)
    recs = seed.read_file(f, nonfinite="flag")
    assert recs[1].meta["nonfinite"] == {"F7": 1}
    assert recs[1].meta["flat_channels"] == ["F3"] and recs[0].meta["flat_channels"] == []
    with pytest.raises(ValueError, match=r"flat channels \['F3'\]"):
        seed.read_file(f, nonfinite="flag", flat="raise")
    dropped = seed.read_file(f, nonfinite="flag", flat="drop")[1]
    assert "F3" not in dropped.ch_names and len(dropped.ch_names) == 61


def test_batch_continues_past_a_corrupt_mat_and_reports_it(tmp_path):
    root = make_seed(tmp_path, files=(("1_20131027", "djc"), ("2_20140404", "jl")))
    bad = root / "Preprocessed_EEG" / "5_20140101.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + os.urandom(300))
    res = read_dataset("seed", root)
    assert len(res) == 30 and {r.subject for r in res.recordings} == {"1", "2"}
    assert res.failures["file"].tolist() == [str(bad)]
    assert "not a readable MATLAB file" in res.failures["error"].iloc[0]
    with pytest.raises(ValueError, match="5_20140101.mat"):
        read_dataset("seed", root, on_error="raise")
    table = check_dataset("seed", root)
    assert table.loc[table.file == str(bad), "status"].item() == "unreadable"
    assert (table.loc[table.file.str.endswith("1_20131027.mat"), "message"]
            == "15 trials, 62 channels").all()
    missing = table[table.status == "missing"]
    assert any("subject 1: 1 of 3 session files" in m for m in missing.message)
    assert any("subject 15: 0 of 3" in m for m in missing.message)


# ============================================================================= DEAP
def make_deap(folder: Path, subjects=(1, 2), n_trials: int = 4, n_times: int = 640) -> Path:
    """``data_preprocessed_python/sNN.dat``: Python-2 protocol-2 pickles of
    ``{'labels': (trials, 4) float64 on 1-9, 'data': (trials, 40, T) float64}`` (the real files
    have 40 trials of 8064 samples; the first 3 s = 384 samples are the baseline)."""
    folder = folder / "data_preprocessed_python"
    folder.mkdir(parents=True)
    for s in subjects:
        labels = np.round(RNG.uniform(1, 9, (n_trials, 4)), 2)
        labels[0, 0], labels[1, 0] = 5.0, 5.01  # exactly at / just above the threshold
        data = RNG.normal(0, 10, (n_trials, 40, n_times))
        (folder / f"s{s:02d}.dat").write_bytes(py2_pickle({"labels": labels, "data": data}))
    return folder.parent


def test_deap_fixture_is_a_python2_pickle():
    blob = py2_pickle({"labels": np.arange(8.0).reshape(2, 4)})
    with pytest.raises(UnicodeDecodeError):  # Python-2 str buffers: ASCII decoding fails
        pickle.loads(blob)
    ref = pickle.loads(blob, encoding="latin1")  # the standard (unsafe) way people load DEAP
    np.testing.assert_array_equal(ref["labels"], np.arange(8.0).reshape(2, 4))


def test_deap_reads_trials_with_threshold_labels_and_baseline_events(tmp_path):
    root = make_deap(tmp_path)
    f = root / "data_preprocessed_python" / "s01.dat"
    ref = pickle.loads(f.read_bytes(), encoding="latin1")
    recs = deap.read_file(f)
    assert len(recs) == 4 and recs[0].subject == "s01"
    assert [r.label for r in recs] == (ref["labels"][:, 0] > 5).astype(int).tolist()
    assert recs[0].label == 0 and recs[1].label == 1  # 5.0 is low, 5.01 high
    r = recs[2]
    assert r.ch_names[:32] == list(DEAP_32) and r.ch_names[32:] == list(deap.PERIPHERAL)
    assert r.ch_types[32:] == ["eog", "eog", "emg", "emg", "misc", "misc", "misc", "misc"]
    np.testing.assert_allclose(r.data[:34], (ref["data"][2, :34] * 1e-6).astype(np.float32))
    np.testing.assert_allclose(r.data[36:], ref["data"][2, 36:].astype(np.float32))
    ev = r.events
    assert ev["onset"].tolist() == [0.0, 3.0] and ev["duration"].tolist() == [3.0, 640 / 128 - 3]
    assert ev["label"].tolist() == [-1, r.label]
    aro = deap.read_file(f, target="arousal", threshold=3.0, include_peripheral=False)
    assert [x.label for x in aro] == (ref["labels"][:, 1] > 3).astype(int).tolist()
    assert len(aro[0].ch_names) == 32 and aro[0].label_names == {0: "low_arousal",
                                                                 1: "high_arousal"}


def test_deap_label_trial_mismatch_is_an_error(tmp_path):
    f = tmp_path / "s03.dat"
    f.write_bytes(py2_pickle({"labels": np.ones((3, 4)), "data": np.zeros((4, 40, 500))}))
    with pytest.raises(ValueError, match=r"s03\.dat: 4 trials in 'data' but 3 rows in 'labels'"):
        deap.read_file(f)


def test_deap_truncated_pickle_is_a_clear_error(tmp_path):
    root = make_deap(tmp_path, subjects=(1,))
    f = root / "data_preprocessed_python" / "s01.dat"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"s01\.dat: not a readable DEAP pickle"):
        deap.read_file(f)


@pytest.mark.parametrize("make_payload", [
    lambda cmd: b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.",
    lambda cmd: b"cposix\nsystem\n(S'" + cmd.encode() + b"'\ntR.",
    lambda cmd: (b"\x80\x02}(U\x04datacbuiltins\neval\n(U" + bytes([len(
        f"__import__('os').system('{cmd}')")]) + f"__import__('os').system('{cmd}')".encode()
        + b"tRU\x06labelsNu."),
])
def test_malicious_deap_pickle_fails_without_running_code(tmp_path, make_payload):
    marker = tmp_path / "pwned"
    payload = make_payload(f"touch {marker}")
    # the payload is live: the standard unpickler would run it
    probe = tmp_path / "probe"
    pickle.loads(make_payload(f"touch {probe}"), encoding="latin1")
    assert probe.exists()
    f = tmp_path / "data_preprocessed_python" / "s07.dat"
    f.parent.mkdir()
    f.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        deap.read_file(f)
    res = read_dataset("deap", tmp_path)
    assert len(res) == 0 and "refusing to load global" in res.failures["error"].item()
    assert not marker.exists()


def test_deap_check_lists_missing_subjects(tmp_path):
    root = make_deap(tmp_path, subjects=(1,), n_trials=2)
    table = check_dataset("deap", root)
    assert table.loc[table.status == "ok", "message"].item() == "2 trials, 40 channels, 640 samples"
    assert (table.status == "missing").sum() == 31


# ============================================================================= DREAMER
def make_dreamer(folder: Path, n_subjects: int = 2, n_clips: int = 18,
                 n_valence: int | None = None) -> Path:
    """``DREAMER.mat``: struct ``DREAMER`` with ``Data`` (1 x n cell of subject structs with
    ``Age``, ``Gender``, ``EEG``/``ECG`` structs of ``baseline``/``stimuli`` (18 x 1 cells of
    samples x channels arrays) and ``ScoreValence/Arousal/Dominance`` (18 x 1, 1-5)),
    ``EEG_SamplingRate`` 128, ``ECG_SamplingRate`` 256, ``EEG_Electrodes`` (1 x 14 cell),
    ``noOfSubjects``, ``noOfVideoSequences`` and the text fields. Clips are ~1 s here."""
    def cell(items, shape):
        c = np.empty(shape, dtype=object)
        for k, v in enumerate(items):
            c.flat[k] = v
        return c

    subjects = []
    for s in range(n_subjects):
        subjects.append({
            "Age": str(20 + s), "Gender": "male" if s else "female",
            "EEG": {"baseline": cell([noise(14, 100).T for _ in range(n_clips)], (n_clips, 1)),
                    "stimuli": cell([noise(14, 128 + k).T for k in range(n_clips)],
                                    (n_clips, 1))},
            "ECG": {"baseline": cell([noise(2, 200).T for _ in range(n_clips)], (n_clips, 1)),
                    "stimuli": cell([noise(2, 256).T for _ in range(n_clips)], (n_clips, 1))},
            "ScoreValence": RNG.integers(1, 6, (n_valence or n_clips, 1)).astype(float),
            "ScoreArousal": RNG.integers(1, 6, (n_clips, 1)).astype(float),
            "ScoreDominance": RNG.integers(1, 6, (n_clips, 1)).astype(float),
        })
    d = {"Data": cell(subjects, (1, n_subjects)), "EEG_SamplingRate": 128.0,
         "ECG_SamplingRate": 256.0, "EEG_Electrodes": cell(list(DREAMER_14), (1, 14)),
         "noOfSubjects": float(n_subjects), "noOfVideoSequences": float(n_clips),
         "Disclaimer": "test", "Provider": "test", "Version": "1.0.0", "Acknowledgement": "x"}
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "DREAMER.mat", {"DREAMER": d})
    return folder


def test_dreamer_reads_subjects_clips_and_scores(tmp_path):
    folder = make_dreamer(tmp_path)
    mat = scipy.io.loadmat(folder / "DREAMER.mat", squeeze_me=True, struct_as_record=False)
    s2 = mat["DREAMER"].Data[1]
    res = read_dataset("dreamer", folder)
    assert len(res) == 36 and res.failures.empty
    r = [x for x in res.recordings if x.subject == "02" and x.recording == "clip05"][0]
    np.testing.assert_allclose(r.data, (s2.EEG.stimuli[4].T * 1e-6).astype(np.float32))
    assert r.ch_names == list(DREAMER_14) and r.sfreq == 128.0 and r.n_times == 132
    assert r.label == int(s2.ScoreValence[4] > 3)
    assert r.meta["scores"]["arousal"] == s2.ScoreArousal[4]
    aro = dreamer.read_file(folder / "DREAMER.mat", target="arousal", threshold=2.0,
                            include_baseline=True)
    assert len(aro) == 72
    base = [x for x in aro if x.recording == "clip01_baseline"][0]
    assert base.label is None and base.n_times == 100
    assert len(read_dataset("dreamer", folder, subjects=["01"]).recordings) == 18


def test_dreamer_score_count_mismatch_is_an_error(tmp_path):
    folder = make_dreamer(tmp_path, n_subjects=1, n_valence=17)
    with pytest.raises(ValueError, match=r"Data\{1\}: 18 stimuli, 18 baselines and 17 "
                                         r"ScoreValence values"):
        dreamer.read_file(folder / "DREAMER.mat")


# ============================================================================= TUAB / TUEV
TUH_ELECTRODES = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8",
                  "T3", "T4", "T5", "T6", "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2")


def write_tuh(path: Path, *, electrodes=TUH_ELECTRODES, suffix="REF", fs=250.0, seconds=4):
    """A TUH EDF: channels ``EEG FP1-REF`` ... (referential, microvolts) plus ``EEG EKG1-REF``,
    ``PHOTIC-REF`` and ``IBI`` as in the real files; 250 Hz; seconds instead of minutes."""
    n = int(fs * seconds)
    sig = [(f"EEG {e}-{suffix}", noise(1, n)[0], fs) for e in electrodes]
    sig += [(f"EEG EKG1-{suffix}", noise(1, n, 300)[0], fs), ("PHOTIC-REF", noise(1, n)[0], fs),
            ("IBI", noise(1, n)[0], fs)]
    return write_edf(path, sig)


def test_tuab_labels_from_folders_and_tcp_montage(tmp_path):
    edf = tmp_path / "edf"
    a = write_tuh(edf / "train/normal/01_tcp_ar/aaaaaaaa_s001_t000.edf")
    b = write_tuh(edf / "eval/abnormal/01_tcp_ar/aaaaaaab_s002_t001.edf")
    write_tuh(edf / "train/abnormal/02_tcp_le/aaaaaaac_s001_t000.edf", suffix="LE")
    res = read_dataset("tuab", tmp_path)
    assert res.failures.empty and len(res) == 3
    by = {r.subject: r for r in res.recordings}
    assert by["aaaaaaaa"].label == 0 and by["aaaaaaab"].label == 1 and by["aaaaaaac"].label == 1
    assert by["aaaaaaab"].meta["split"] == "eval" and by["aaaaaaab"].session == "s002"
    r = by["aaaaaaaa"]
    assert r.ch_names == [f"{x}-{y}" for x, y in TCP_BIPOLAR_22] and set(r.ch_types) == {"eeg"}
    raw = mne.io.read_raw_edf(a, preload=True, verbose="error")
    ref = {c: raw.get_data(picks=[c])[0] for c in raw.ch_names}
    np.testing.assert_allclose(r.data[0], ref["EEG FP1-REF"] - ref["EEG F7-REF"], atol=1e-9)
    np.testing.assert_allclose(r.data[8], ref["EEG A1-REF"] - ref["EEG T3-REF"], atol=1e-9)
    ref16 = tuh.tuab_read_file(b, montage="bipolar16")[0]
    assert len(ref16.ch_names) == 16 and ref16.ch_names[0] == "Fp1-F7"
    refer = tuh.tuab_read_file(b, montage="referential")[0]
    types = dict(zip(refer.ch_names, refer.ch_types))
    assert types["T7"] == "eeg" and types["EEG EKG1-REF"] == "ecg" and types["IBI"] == "misc"
    assert types["EEG T1-REF"] == "misc" and "EEG T1-REF" in refer.meta["unknown_channels"]


def test_tuh_missing_electrodes_name_them(tmp_path):
    no_ears = [e for e in TUH_ELECTRODES if e not in ("A1", "A2")]
    f = write_tuh(tmp_path / "edf/train/normal/03_tcp_ar_a/x_s001_t000.edf", electrodes=no_ears)
    with pytest.raises(ValueError, match=r"x_s001_t000\.edf: montage 'tcp22'.*\['A1', 'A2'\]"):
        tuh.tuab_read_file(f)
    assert len(tuh.tuab_read_file(f, montage="bipolar16")[0].ch_names) == 16
    table = check_dataset("tuab", tmp_path)
    assert table.loc[table.file == str(f), "status"].item() == "unreadable"
    assert set(table.loc[table.status == "missing", "file"]) == {
        str(tmp_path / "edf" / s) for s in ("train/abnormal", "eval/normal", "eval/abnormal")}


def test_tuev_events_from_rec_and_lab_files(tmp_path):
    d = tmp_path / "edf" / "train" / "aaaaaaar"
    f = write_tuh(d / "aaaaaaar_00000001.edf")
    f.with_suffix(".rec").write_text("0,1.0,2.0,6\n13,2.5,3.5,1\n21,0.0,1.0,4\n")
    rec = tuh.tuev_read_file(f)[0]
    ev = rec.events
    assert ev["label"].tolist() == [3, 5, 0]
    assert ev["description"].tolist() == ["eyem", "bckg", "spsw"]
    assert ev["channel"].tolist() == ["P4-O2", "Fp1-F7", "T8-A2"]
    assert ev["onset"].tolist() == [0.0, 1.0, 2.5] and ev["duration"].tolist() == [1.0] * 3
    g = write_tuh(tmp_path / "edf" / "eval" / "aaaaaaas" / "aaaaaaas_00000002.edf")
    (g.parent / f"{g.stem}_ch000.lab").write_text("0 10000000 bckg\n10000000 20000000 pled\n")
    (g.parent / f"{g.stem}_ch013.lab").write_text("5000000 15000000 gped\n")
    ev2 = tuh.tuev_read_file(g)[0].events
    assert sorted(zip(ev2["onset"], ev2["label"], ev2["channel"])) == [
        (0.0, 5, "Fp1-F7"), (0.5, 1, "T8-A2"), (1.0, 2, "Fp1-F7")]
    f.with_suffix(".rec").write_text("0,1.0,2.0,9\n")
    with pytest.raises(ValueError, match=r"aaaaaaar_00000001\.rec:1: invalid event"):
        tuh.tuev_read_file(f)


# ============================================================================= Sleep-EDF
def make_sleep(folder: Path, seconds: int = 300, *, stem: str = "SC4001",
               hyp_delay_s: int = 0) -> Path:
    """``SC4001E0-PSG.edf`` + ``SC4001EC-Hypnogram.edf``: the PSG's EEG Fpz-Cz / Pz-Oz and
    EOG horizontal at 100 Hz and Resp oro-nasal, EMG submental, Temp rectal, Event marker at
    1 Hz (mixed rates inside one file, as in the cassette files); the hypnogram an EDF+ file
    with only annotations ``Sleep stage W/1/2/3/4/R/?`` and ``Movement time`` whose durations
    are multiples of 30 s, starting at the PSG start; the last one runs past the PSG end."""
    sig = [("EEG Fpz-Cz", noise(1, 100 * seconds)[0], 100.0),
           ("EEG Pz-Oz", noise(1, 100 * seconds)[0], 100.0),
           ("EOG horizontal", noise(1, 100 * seconds)[0], 100.0),
           ("Resp oro-nasal", noise(1, seconds)[0], 1.0),
           ("EMG submental", noise(1, seconds)[0], 1.0),
           ("Temp rectal", noise(1, seconds)[0], 1.0),
           ("Event marker", noise(1, seconds)[0], 1.0)]
    write_edf(folder / f"{stem}E0-PSG.edf", sig)
    stages = [(0, 60, "Sleep stage W"), (60, 30, "Sleep stage 1"), (90, 60, "Sleep stage 2"),
              (150, 30, "Sleep stage 3"), (180, 30, "Sleep stage 4"), (210, 30, "Sleep stage R"),
              (240, 30, "Movement time"), (270, 60, "Sleep stage ?")]
    import edfio

    start = datetime.time(0, 0, hyp_delay_s)
    edfio.Edf([], annotations=[edfio.EdfAnnotation(o, d, t) for o, d, t in stages],
              starttime=start).write(folder / f"{stem}EC-Hypnogram.edf")
    return folder


def test_sleep_edf_epochs_stages_and_mixed_rates(tmp_path):
    make_sleep(tmp_path)
    rec = read_dataset("sleep_edf", tmp_path).recordings[0]
    assert (rec.subject, rec.session, rec.sfreq) == ("SC00", "1", 100.0)
    assert rec.ch_names == ["Fpz-Cz", "Pz-Oz", "EOG horizontal"]
    assert rec.ch_types == ["eeg", "eeg", "eog"]
    assert sorted(d["name"] for d in rec.meta["dropped_channels"]) == [
        "EMG submental", "Event marker", "Resp oro-nasal", "Temp rectal"]
    ev = rec.events
    assert ev["label"].tolist() == [0, 0, 1, 2, 2, 3, 3, 4, -1, -1]
    assert ev["onset"].tolist() == [30.0 * k for k in range(10)]
    assert (ev["duration"] == 30.0).all()
    assert ev["description"].tolist()[-2:] == ["Movement time", "Sleep stage ?"]
    with pytest.raises(ValueError, match=r"SC4001E0-PSG\.edf: channels have different sampling"):
        sleep_edf.read_file(tmp_path / "SC4001E0-PSG.edf", mixed_rates="raise")
    assert len(sleep_edf.read_file(tmp_path / "SC4001E0-PSG.edf",
                                   mixed_rates="resample")[0].ch_names) == 7


def test_sleep_edf_hypnogram_starting_later_is_aligned(tmp_path):
    make_sleep(tmp_path, stem="SC4012", hyp_delay_s=30)
    rec = sleep_edf.read_file(tmp_path / "SC4012E0-PSG.edf")[0]
    assert (rec.subject, rec.session) == ("SC01", "2")
    assert rec.events["onset"].tolist() == [30.0 * k for k in range(1, 10)]
    assert rec.events["label"].tolist() == [0, 0, 1, 2, 2, 3, 3, 4, -1]


def test_sleep_edf_missing_hypnogram_is_reported(tmp_path):
    make_sleep(tmp_path)
    (tmp_path / "SC4001EC-Hypnogram.edf").unlink()
    res = read_dataset("sleep_edf", tmp_path)
    assert len(res) == 0 and "no hypnogram SC4001E??-Hypnogram.edf" in res.failures.error.item()
    table = check_dataset("sleep_edf", tmp_path)
    assert table.status.tolist() == ["unreadable", "missing"]


# ============================================================================= CHB-MIT
SUMMARY = """Data Sampling Rate: 256 Hz
*************************

Channels in EDF Files:
**********************
Channel 1: FP1-F7
Channel 2: F7-T7
Channel 3: T8-P8
Channel 4: ECG
Channel 5: -
Channel 6: T8-P8

File Name: chb01_01.edf
File Start Time: 11:42:54
File End Time: 11:43:14
Number of Seizures in File: 0

File Name: chb01_03.edf
File Start Time: 13:43:04
File End Time: 13:43:24
Number of Seizures in File: 2
Seizure 1 Start Time: 5 seconds
Seizure 1 End Time: 9 seconds
Seizure 2 Start Time: 12 seconds
Seizure 2 End Time: 14 seconds
"""


def make_chbmit(root: Path) -> Path:
    """``chb01/chb01_NN.edf`` + ``chb01/chb01-summary.txt`` (header, channel list, one block
    per file, the ``Seizure 1 Start Time:`` variant); bipolar channel labels ``FP1-F7``, a
    duplicated ``T8-P8`` (identical copies, as in most cases), ``ECG`` and a dummy ``-``
    channel (flat); 256 Hz; 20 s files instead of 1 h."""
    case = root / "chb01"
    case.mkdir(parents=True)
    for name in ("chb01_01.edf", "chb01_03.edf"):
        t8p8 = noise(1, 256 * 20)[0]
        write_edf(case / name, [("FP1-F7", noise(1, 5120)[0], 256.0),
                                ("F7-T7", noise(1, 5120)[0], 256.0), ("T8-P8", t8p8, 256.0),
                                ("ECG", noise(1, 5120, 500)[0], 256.0),
                                ("-", np.zeros(5120), 256.0), ("T8-P8", t8p8, 256.0)])
    (case / "chb01-summary.txt").write_text(SUMMARY)
    return root


def test_chbmit_seizure_events_channels_and_duplicates(tmp_path):
    root = make_chbmit(tmp_path)
    res = read_dataset("chbmit", root)
    assert res.failures.empty and len(res) == 2
    r0, r3 = res.recordings
    assert r0.events["label"].tolist() == [0] and r0.events["duration"].item() == 20.0
    ev = r3.events
    assert list(zip(ev.onset, ev.duration, ev.label)) == [
        (0.0, 5.0, 0), (5.0, 4.0, 1), (9.0, 3.0, 0), (12.0, 2.0, 1), (14.0, 6.0, 0)]
    assert r3.ch_names == ["Fp1-F7", "F7-T7", "T8-P8", "ECG", "-"]
    assert r3.ch_types == ["eeg", "eeg", "eeg", "ecg", "misc"]
    assert r3.meta["dropped_channels"][0]["reason"] == "duplicate of T8-P8"
    assert r3.meta["flat_channels"] == ["-"]
    only_sz = chbmit.read_file(root / "chb01" / "chb01_03.edf", background_events=False)[0]
    assert only_sz.events["label"].tolist() == [1, 1]


def test_chbmit_seizure_count_mismatch_and_unlisted_file(tmp_path):
    root = make_chbmit(tmp_path)
    summary = root / "chb01" / "chb01-summary.txt"
    summary.write_text(SUMMARY.replace("Number of Seizures in File: 2",
                                       "Number of Seizures in File: 3"))
    with pytest.raises(ValueError, match=r"chb01_03\.edf: 'Number of Seizures in File: 3' but 2"):
        chbmit.read_file(root / "chb01" / "chb01_03.edf")
    summary.write_text(SUMMARY.split("File Name: chb01_03.edf")[0])
    with pytest.raises(ValueError, match=r"chb01_03\.edf: not listed in chb01-summary\.txt"):
        chbmit.read_file(root / "chb01" / "chb01_03.edf")


# ============================================================================= BCIC-2a
def make_bnci(folder: Path, subject: int = 1, session: str = "T", n_trials: int = 8,
              n_labels: int | None = None) -> Path:
    """BNCI 2014-001 ``A01T.mat`` as MOABB downloads it: variable ``data`` = 1 x runs cell of
    structs ``X`` (samples x 25, microvolts: 22 EEG + 3 EOG), ``trial`` (trials x 1, 1-based
    start samples), ``y`` (trials x 1, 1-4), ``fs`` 250, ``classes`` (1 x 4 cell: 'left hand',
    'right hand', 'feet', 'tongue'), ``artifacts``, ``gender``, ``age``; the first run is an
    EOG run without trials. 3 runs of 8 trials instead of 9 runs of 48."""
    classes = np.empty((1, 4), dtype=object)
    classes[0, :] = ["left hand", "right hand", "feet", "tongue"]
    runs = np.empty((1, 3), dtype=object)
    for r in range(3):
        n = 250 * 8 * max(n_trials, 1)
        has = r > 0
        trial = (np.arange(n_trials) * 2000 + 1).reshape(-1, 1) if has else np.zeros((0, 0))
        y = (np.arange(n_labels or n_trials) % 4 + 1).reshape(-1, 1) if has else np.zeros((0, 0))
        art = np.zeros((n_trials, 1)) if has else np.zeros((0, 0))
        if has:
            art[3] = 1
        runs[0, r] = {"X": noise(25, n).T, "trial": trial.astype(float), "y": y.astype(float),
                      "fs": 250.0, "classes": classes, "artifacts": art, "gender": "f",
                      "age": 22.0}
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"A{subject:02d}{session}.mat"
    scipy.io.savemat(f, {"data": runs})
    return f


def test_bcic2a_bnci_mat_trials_labels_and_units(tmp_path):
    f = make_bnci(tmp_path)
    make_bnci(tmp_path, session="E")
    res = read_dataset("bcic2a", tmp_path)
    assert res.failures.empty and len(res) == 4
    r = bcic2a.read_file(f)[0]
    mat = scipy.io.loadmat(f, squeeze_me=True, struct_as_record=False)["data"][1]
    assert (r.session, r.recording, r.sfreq) == ("T", "run2", 250.0)
    assert r.ch_names[:22] == list(bcic2a.BCIC_22) and r.ch_types[22:] == ["eog"] * 3
    np.testing.assert_allclose(r.data, (mat.X.T * 1e-6).astype(np.float32))
    ev = r.events
    np.testing.assert_allclose(ev["onset"], (mat.trial - 1) / 250 + 2.0)
    assert ev["label"].tolist() == (mat.y - 1).astype(int).tolist()
    assert (ev["duration"] == 4.0).all() and r.meta["rejected_trials"] == [3]
    assert ev["description"].tolist()[:4] == ["left_hand", "right_hand", "feet", "tongue"]


def test_bcic2a_label_trial_mismatch(tmp_path):
    f = make_bnci(tmp_path, n_labels=5)
    with pytest.raises(ValueError, match=r"A01T\.mat: run 2 has 8 trial onsets but 5 labels"):
        bcic2a.read_file(f)


# ============================================================================= generic
def _raw_with_types():
    info = mne.create_info(["Fp1", "Cz", "EOG061", "ECG063", "STI 014"], 200.0,
                           ["eeg", "eeg", "eog", "ecg", "stim"])
    data = noise(5, 1000) * 1e-6
    data[4] = 0
    data[4, 200:205] = 3
    data[4, 600:605] = 5
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_annotations(mne.Annotations([1.0, 3.5], [0.5, 0.5], ["go", "stop"]))
    return raw


def test_generic_fif_types_stim_events_and_annotations(tmp_path):
    raw = _raw_with_types()
    f = tmp_path / "sub-01" / "ses-02" / "eeg" / "sub-01_ses-02_task-x_raw.fif"
    f.parent.mkdir(parents=True)
    raw.save(f, verbose="error")
    rec = read_dataset("generic", tmp_path, event_labels={"go": 1}).recordings[0]
    assert (rec.subject, rec.session) == ("01", "02")
    assert rec.ch_names == ["Fp1", "Cz", "EOG061", "ECG063"]
    assert rec.ch_types == ["eeg", "eeg", "eog", "ecg"]
    np.testing.assert_allclose(rec.data, raw.get_data()[:4].astype(np.float32))
    ev = rec.events
    assert list(zip(ev.onset, ev.description, ev.label)) == [
        (1.0, "go", 1), (1.0, "STI 014:3", -1), (3.0, "STI 014:5", -1), (3.5, "stop", -1)]
    assert rec.meta["dropped_channels"] == [{"name": "STI 014",
                                             "reason": "stim channel, turned into events"}]


def test_generic_edf_eeglab_and_labels_table(tmp_path):
    raw = _raw_with_types().pick(["Fp1", "Cz", "EOG061"])
    mne.export.export_raw(tmp_path / "a.edf", raw, verbose="error")
    mne.export.export_raw(tmp_path / "b.set", raw, verbose="error")
    table = pd.DataFrame({"file": ["a.edf", "b"], "label": [0, 1]})
    res = read_dataset("generic", tmp_path, labels=table, label_names={0: "x", 1: "y"})
    assert res.failures.empty
    by = {r.recording: r for r in res.recordings}
    assert by["a"].label == 0 and by["b"].label == 1
    for r in res.recordings:
        assert r.ch_names == ["Fp1", "Cz", "EOG061"] and r.ch_types == ["eeg", "eeg", "eog"]
        np.testing.assert_allclose(r.data, raw.get_data(), atol=2e-8)  # EDF quantisation
    ev_table = tmp_path / "events.tsv"
    pd.DataFrame({"file": ["a.edf", "a.edf"], "onset": [0.5, 2.0], "duration": [1.0, 1.0],
                  "label": [1, 0]}).to_csv(ev_table, sep="\t", index=False)
    ev = generic.read_file(tmp_path / "a.edf", labels=ev_table)[0].events
    assert ev[["onset", "label"]].values.tolist() == [[0.5, 1], [2.0, 0]]
    with pytest.raises(ValueError, match=r"b\.set: no row for this file in the labels table"):
        generic.read_file(tmp_path / "b.set", labels=ev_table)


def test_generic_brainvision(tmp_path):
    pytest.importorskip("pybv", reason="mne.export to BrainVision needs pybv")
    raw = _raw_with_types().pick(["Fp1", "Cz"])
    mne.export.export_raw(tmp_path / "a.vhdr", raw, verbose="error")
    rec = generic.read_file(tmp_path / "a.vhdr")[0]
    assert rec.ch_names == ["Fp1", "Cz"]
    np.testing.assert_allclose(rec.data, raw.get_data(), atol=1e-9)


def test_generic_mixed_rates_across_files(tmp_path):
    write_edf(tmp_path / "a.edf", [("Cz", noise(1, 500)[0], 250.0)])
    write_edf(tmp_path / "b.edf", [("Cz", noise(1, 512)[0], 256.0)])
    res = read_dataset("generic", tmp_path)
    assert res.sfreqs == {250.0: 1, 256.0: 1} and res.failures.empty
    res = read_dataset("generic", tmp_path, on_rate_mismatch="raise")
    assert len(res) == 1
    assert ("b.edf: sampling rate 256 Hz differs from the 250 Hz of the first recording"
            in res.failures.error.item())


# ============================================================================= EDF bad input
def test_truncated_edf_is_refused_and_batch_goes_on(tmp_path):
    good = write_edf(tmp_path / "S001" / "S001R04.edf",
                     [(f"{c}.", noise(1, 1600)[0], 160.0) for c in ("Cz", "C3")])
    hdr = read_edf_header(good)
    assert (hdr.kind, hdr.n_records, hdr.sfreqs) == ("EDF", 10, [160.0, 160.0])
    bad = tmp_path / "bad.edf"
    bad.write_bytes(good.read_bytes()[: hdr.header_bytes + hdr.record_bytes * 3 + 17])
    with pytest.raises(ValueError, match=r"bad\.edf: truncated EDF file: the header declares 10 "
                                         r"data records .*\(3 complete records\)"):
        generic.read_file(bad)
    (tmp_path / "junk.edf").write_bytes(b"not an edf at all" * 20)
    res = read_dataset("generic", tmp_path)
    assert len(res) == 1 and res.recordings[0].ch_names == ["Cz", "C3"]
    assert sorted(Path(f).name for f in res.failures.file) == ["bad.edf", "junk.edf"]
    assert "not a valid EDF/BDF header" in res.failures.set_index("file").loc[
        str(tmp_path / "junk.edf"), "error"]
    table = check_dataset("generic", tmp_path).set_index("file")
    assert table.loc[str(bad), "status"] == "unreadable" and "truncated" in table.loc[
        str(bad), "message"]
    assert table.loc[str(good), "status"] == "ok"


def test_eegmmidb_tasks_on_a_synthetic_run(tmp_path):
    """An EEGMMIDB-like run (``SxxxRyy.edf``, 10-10 labels with trailing dots such as ``Fc5.``,
    EDF+ annotations T0/T1/T2) with 64 channels; checks the task -> class mapping."""
    labels = ("Fc5. Fc3. Fc1. Fcz. Fc2. Fc4. Fc6. C5.. C3.. C1.. Cz.. C2.. C4.. C6.. Cp5. Cp3. "
              "Cp1. Cpz. Cp2. Cp4. Cp6. Fp1. Fpz. Fp2. Af7. Af3. Afz. Af4. Af8. F7.. F5.. F3.. "
              "F1.. Fz.. F2.. F4.. F6.. F8.. Ft7. Ft8. T7.. T8.. T9.. T10. Tp7. Tp8. P7.. P5.. "
              "P3.. P1.. Pz.. P2.. P4.. P6.. P8.. Po7. Po3. Poz. Po4. Po8. O1.. Oz.. O2.. "
              "Iz..").split()
    ann = [(0.0, 4.0, "T0"), (4.0, 4.0, "T1"), (8.0, 4.0, "T0"), (12.0, 4.0, "T2")]
    sig = [(lab, noise(1, 160 * 16)[0], 160.0) for lab in labels]
    for run in (6, 12):
        write_edf(tmp_path / "S002" / f"S002R{run:02d}.edf", sig, annotations=ann)
    r12 = eegmmidb.read_file(tmp_path / "S002" / "S002R12.edf")[0]
    assert len(r12.ch_names) == 64 and set(r12.ch_types) == {"eeg"}
    assert r12.events["label"].tolist() == [-1, 0, -1, 1]
    four = read_dataset("eegmmidb", tmp_path, task="4class", rest_as_class=True).recordings
    assert [r.events["label"].tolist() for r in four] == [[4, 2, 4, 3], [4, 0, 4, 1]]
    assert four[0].label_names == {0: "left_fist", 1: "right_fist", 2: "both_fists",
                                   3: "both_feet", 4: "rest"}
    with pytest.raises(ValueError, match=r"S002R06\.edf: run R06 is not part of task "
                                         r"'imagery_lr'"):
        eegmmidb.read_file(tmp_path / "S002" / "S002R06.edf")


# ============================================================================= UCI eye state
def test_uci_outlier_handling_on_a_synthetic_arff(tmp_path):
    """``eeg_eye_state.arff``: ``@RELATION EEG_DATA``, 14 NUMERIC attributes in the Emotiv order,
    ``eyeDetection {0,1}``, values around the 4200 uV Emotiv offset, whole-row spikes."""
    x = 4200 + RNG.normal(0, 20, (512, 14))
    x[100] = 300000.0
    x[300, 3] = 642564.0
    eye = np.r_[np.zeros(200, int), np.ones(250, int), np.zeros(62, int)]
    lines = ["@RELATION EEG_DATA", ""] + [f"@ATTRIBUTE {c} NUMERIC" for c in DREAMER_14]
    lines += ["@ATTRIBUTE eyeDetection {0,1}", "", "@DATA"]
    lines += [",".join(f"{v:.2f}" for v in row) + f",{e}" for row, e in zip(x, eye)]
    f = tmp_path / "eeg_eye_state.arff"
    f.write_text("\n".join(lines) + "\n")
    rec = uci_eye_state.read_file(f)[0]
    assert rec.meta["outliers"]["samples"] == [100, 300]
    assert rec.meta["outliers"]["channels"]["FC5"] == 2
    expected = (x[99] + x[101]) / 2 * 1e-6
    np.testing.assert_allclose(rec.data[:, 100], expected.astype(np.float32), rtol=1e-6)
    labelled = rec.events[rec.events.label >= 0]
    assert list(zip(labelled.onset * 128, labelled.duration * 128, labelled.label)) == [
        (0, 200, 0), (200, 250, 1), (450, 62, 0)]
    assert (rec.events.description == "BAD_outlier").sum() == 2
    flagged = uci_eye_state.read_file(f, outliers="flag")[0]
    assert flagged.data[0, 100] == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"eeg_eye_state\.arff: 2 outlier samples"):
        uci_eye_state.read_file(f, outliers="raise")
