import numpy as np
import pytest

from workbench.channels import (
    BIPOLAR_16,
    DEAP_32,
    DREAMER_14,
    SEED_62,
    TCP_BIPOLAR_22,
    ChannelVocabulary,
    bipolar_derivation,
    channel_positions,
    normalize_channel_name,
    rate_index,
)


@pytest.mark.parametrize("raw,canon", [
    ("EEG Fp1-REF", "Fp1"), ("EEG T3-LE", "T7"), ("Fc5.", "FC5"), ("Cz..", "Cz"), ("FP1", "Fp1"),
    ("fpz", "Fpz"), ("T4", "T8"), ("T5", "P7"), ("T6", "P8"), ("EEG CZ-REF", "Cz"), ("CB1", "CB1"),
    ("POZ", "POz"), ("Oz", "Oz"),
])
def test_alias_normalisation(raw, canon):
    assert normalize_channel_name(raw) == canon


@pytest.mark.parametrize("raw", ["ECG ECG", "EEG A2-A1", "STI 014", "EMG1", "foo"])
def test_non_electrodes_are_not_normalised(raw):
    assert normalize_channel_name(raw) is None
    with pytest.raises(ValueError, match=raw.split()[0]):
        normalize_channel_name(raw, strict=True)


def test_dataset_layouts():
    assert len(SEED_62) == 62 and len(set(SEED_62)) == 62
    assert len(DEAP_32) == 32 and len(DREAMER_14) == 14


def test_ucs_union_is_seed62_and_intersection():
    ucs = ChannelVocabulary.union(SEED_62, DEAP_32, DREAMER_14)
    assert len(ucs) == 62 and set(ucs.names) == set(SEED_62)
    inter = ChannelVocabulary.intersection(SEED_62, DEAP_32, DREAMER_14)
    assert set(inter.names) == set(DREAMER_14)
    assert len(ChannelVocabulary.intersection(SEED_62, DEAP_32)) == 32
    # ids do not depend on the order the datasets are given
    assert ChannelVocabulary.union(DREAMER_14, DEAP_32, SEED_62) == ucs
    assert ucs.index("T3") == ucs.index("T7")
    with pytest.raises(KeyError, match="TP9"):
        ucs.index("TP9")


def test_vocabulary_duplicates_after_normalisation_fail():
    with pytest.raises(ValueError, match="more than once"):
        ChannelVocabulary(["T3", "T7"])


def test_vocabulary_save_load(tmp_path):
    ucs = ChannelVocabulary.union(SEED_62, DEAP_32)
    path = ucs.save(tmp_path / "ucs.json")
    again = ChannelVocabulary.load(path)
    assert again == ucs
    np.testing.assert_array_equal(again.ids(DEAP_32), ucs.ids(DEAP_32))


def test_positions_are_on_the_head():
    pos = channel_positions(SEED_62)
    assert pos.shape == (62, 3) and np.isfinite(pos).all()
    r = np.linalg.norm(pos, axis=1)
    assert 0.05 < r.min() and r.max() < 0.15  # metres
    left, right = channel_positions(["C3", "C4"])
    assert left[0] < 0 < right[0]


def test_bipolar_derivation():
    names = ["EEG FP1-REF", "EEG F7-REF", "EEG T3-REF", "EEG T5-REF", "EEG O1-REF"]
    data = np.arange(5)[:, None] * np.ones((5, 3))
    out, bip = bipolar_derivation(data, names, TCP_BIPOLAR_22[:4])
    assert bip == ["Fp1-F7", "F7-T7", "T7-P7", "P7-O1"]
    np.testing.assert_array_equal(out[:, 0], [-1, -1, -1, -1])
    with pytest.raises(ValueError, match="Fp2"):
        bipolar_derivation(data, names, BIPOLAR_16)


def test_rate_index():
    assert rate_index(128) == 0 and rate_index(200.0) == 1
    with pytest.raises(ValueError, match="333"):
        rate_index(333)
