import os

import numpy as np
import pytest
import torch

from workbench.config import Profile, TrainConfig, from_dict, get_profile, load_yaml
from workbench.utils import atomic_write_text, get_device, seed_everything, stable_hash


def test_from_dict_names_the_field():
    with pytest.raises(ValueError, match="lrr"):
        from_dict(TrainConfig, {"lrr": 1e-3})
    with pytest.raises(TypeError, match=r"TrainConfig\.epochs"):
        from_dict(TrainConfig, {"epochs": "ten"})
    with pytest.raises(ValueError, match="schedule"):
        from_dict(TrainConfig, {"schedule": "linear"})
    cfg = from_dict(TrainConfig, {"lr": 1, "betas": [0.9, 0.95], "grad_clip": None})
    assert cfg.lr == 1.0 and cfg.betas == (0.9, 0.95) and cfg.grad_clip is None


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("name: smoke\nmax_subjectz: 3\n")
    with pytest.raises(ValueError, match="p.yaml.*max_subjectz"):
        load_yaml(Profile, p)


def test_profiles():
    assert get_profile("smoke").preset == "tiny"
    assert get_profile("paper").preset == "paper"
    assert get_profile("smoke", max_subjects=1).max_subjects == 1
    with pytest.raises(ValueError, match="profile"):
        get_profile("huge")


def test_seed_everything_reproducible():
    seed_everything(3)
    a = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    seed_everything(3)
    b = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    seed_everything(4)
    c = (np.random.rand(3), torch.rand(3))  # noqa: NPY002
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_get_device():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.txt"]


def test_stable_hash():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
