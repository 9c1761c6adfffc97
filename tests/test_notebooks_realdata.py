"""The stage notebooks on real recordings, selected by parameters alone (papermill).

One Model for All on eegmat (rest vs mental arithmetic) and EEGMMIDB S001 (imagined left vs
right fist); EEGM2 pre-trained briefly and probed on the UCI eye-state recording and on eegmat.
Skipped when ``../shared/data`` is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest

pytestmark = [pytest.mark.realdata, pytest.mark.notebooks, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(stem: str, tmp: Path, **params) -> dict:
    run_dir = tmp / "run"
    params = {"profile": "smoke", "run_dir": str(run_dir), "figures_dir": str(tmp / "figures"),
              "interactive": False, "run_name": stem, **params}
    pm.execute_notebook(str(NOTEBOOKS / f"{stem}.ipynb"), str(tmp / f"{stem}.ipynb"),
                        parameters=params, kernel_name="python3", progress_bar=False,
                        cwd=str(NOTEBOOKS.parent))
    return json.loads((run_dir / "metrics" / f"{stem}.json").read_text())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # inherited by the kernels
    return tmp_path


@pytest.mark.parametrize("dataset,folder", [("eegmat", "eegmat"), ("eegmmidb", "eegmmidb")])
def test_omfa_notebooks_on_real_data(dataset, folder, shared_data, cache):
    path = str(shared_data / folder)
    common = {"method": "omfa", "data_path": path, "recipe": "minimal"}
    pre = _run("03_pretrain", cache, datasets=[dataset], **common)
    assert pre["loss_last"] < pre["loss_first"]
    ft = _run("04_finetune", cache, dataset=dataset, scratch_variant="", finetune_epochs=16,
              pretrain_datasets=[dataset], **common)  # as in profiles/smoke.yaml
    assert ft["n_subjects"] == (2 if dataset == "eegmat" else 1)
    assert 0 <= ft["balanced_accuracy"] <= 1 and 0 <= ft["baseline_balanced_accuracy"] <= 1


@pytest.mark.parametrize("dataset,folder", [("uci_eye_state", "uci_eye_state"),
                                            ("eegmat", "eegmat")])
def test_eegm2_pretrains_and_probes_above_chance(dataset, folder, shared_data, cache):
    common = {"method": "eegm2", "data_path": str(shared_data / folder)}
    pre = _run("03_pretrain", cache, datasets=[dataset], **common)
    assert pre["loss_last"] < pre["loss_first"]
    ft = _run("04_finetune", cache, dataset=dataset, scratch_variant="", mode="probe",
              pretrain_datasets=[dataset], **common)
    assert ft["balanced_accuracy"] > 0.55, ft


def test_fixed_subject_split_on_eegmat(shared_data, cache):
    """A public benchmark's way: fixed train / validation / test subjects (here the 12 subjects
    at hand: 00-07 / 08-09 / 10-11), every recording read (max_subjects=0)."""
    common = {"method": "omfa", "data_path": str(shared_data / "eegmat"), "recipe": "minimal"}
    ft = _run("04_finetune", cache, dataset="eegmat", scratch_variant="scratch",
              pretrain_datasets=["eegmat"], protocol="fixed", max_subjects=0,
              train_subjects=[f"{i:02d}" for i in range(8)], val_subjects=["08", "09"],
              test_subjects=["10", "11"], **common)
    assert ft["protocol"] == "fixed" and ft["n_folds"] == 1 and ft["n_confounded_folds"] == 0
    assert 0 <= ft["balanced_accuracy"] <= 1 and 0 <= ft["baseline_balanced_accuracy"] <= 1


@pytest.mark.parametrize("dataset,folder", [("eegmat", "eegmat"), ("eegmmidb", "eegmmidb")])
def test_trace_notebooks_on_real_data(dataset, folder, shared_data, cache):
    """Trace pre-trained and fine-tuned on one real dataset (200 Hz; 5 s windows on eegmat,
    4 s on EEGMMIDB, whose imagery trials last 4.1 s: horizons {1, 2} there), beside the DE
    baseline on the same folds, as in profiles/smoke.yaml."""
    common = {"method": "trace", "data_path": str(shared_data / folder)}
    pre = _run("03_pretrain", cache, datasets=[dataset], **common)
    assert pre["loss_last"] < pre["loss_first"]
    ft = _run("04_finetune", cache, dataset=dataset, scratch_variant="scratch",
              finetune_epochs=10, pretrain_datasets=[dataset], **common)
    # one within-subject fold per subject read (smoke: 2 of eegmat's 12, EEGMMIDB has S001);
    # eegmat's folds are flagged: each class is one recording there
    assert ft["n_folds"] == (2 if dataset == "eegmat" else 1)
    assert ft["n_confounded_folds"] == (2 if dataset == "eegmat" else 0)
    for key in ("balanced_accuracy", "baseline_balanced_accuracy", "scratch_accuracy"):
        assert 0 <= ft[key] <= 1, ft
def test_eegpt_joint_finetuning_on_eegmat_and_eegmmidb(shared_data, cache):
    """EEGPT pre-trained on eegmat + EEGMMIDB S001 (every store resampled to 200 Hz), then one
    ETE + TEG fine-tuned jointly on eegmat (rest vs arithmetic) and EEGMMIDB S001 (imagined left
    vs right fist) with a head each, against per-task runs and the DE baseline on the same
    pooled within-subject folds (EEGMMIDB has one subject; all 12 eegmat subjects are read)."""
    m = _run("13_eegpt_studies", cache, data_root=str(shared_data), recipe="minimal",
             pretrain_datasets=["eegmat", "eegmmidb"], tasks=["eegmat", "eegmmidb"],
             heldout_dataset="", mae_variant="", scaling_presets=[], data_fractions=[],
             finetune_epochs=6, max_subjects=0)
    assert m["eegpt_loss_last"] < m["eegpt_loss_first"]
    assert m["multitask_same_folds"] is True
    for d in ("eegmat", "eegmmidb"):
        for k in ("pertask", "joint", "baseline"):
            assert 0 <= m[f"{k}_accuracy_{d}"] <= 1 and 0 <= m[f"{k}_balanced_accuracy_{d}"] <= 1
    # eegmat: rest and arithmetic are separate recordings of each subject, so a split within
    # subjects can only measure recording identity (flagged); EEGMMIDB alternates classes
    # inside each run
    assert m["confounded_eegmat"] is True and m["confounded_eegmmidb"] is False

@pytest.mark.parametrize("dataset,folder,protocol", [("eegmat", "eegmat", "subject_kfold"),
                                                     ("eegmmidb", "eegmmidb", "within_subject")])
def test_stelar_linear_probe_on_real_data(dataset, folder, protocol, shared_data, cache):
    """STELAR's 19-channel encoder, pre-trained on the embedded corpus as in profiles/smoke.yaml,
    probed linearly on real recordings through the 1x1-conv channel adapter: eegmat (19 10-20
    channels, 500 Hz, 4 of its subjects in subject-wise folds) and EEGMMIDB S001 (64 channels,
    160 Hz, imagined left vs right fist, one subject: within-subject), both resampled to 200 Hz
    and filtered by the STELAR recipe; the DE baseline on the same folds."""
    ft = _run("04_finetune", cache, method="stelar", dataset=dataset,
              data_path=str(shared_data / folder), pretrain_datasets=["syn_seed", "syn_deap"],
              scratch_variant="", mode="linear", protocol=protocol, folds=4, seed=7, seeds=[7],
              max_subjects=4 if dataset == "eegmat" else -1)
    print(f"STELAR linear probe on {dataset}: balanced accuracy {ft['balanced_accuracy']:.3f} "
          f"(DE baseline {ft['baseline_balanced_accuracy']:.3f}), {ft['n_folds']} folds")
    assert ft["selection_metric"] == "auc_pr" and ft["mode"] == "linear"
    assert ft["n_folds"] == (4 if dataset == "eegmat" else 1)
    assert 0 <= ft["balanced_accuracy"] <= 1 and 0 <= ft["baseline_balanced_accuracy"] <= 1


def test_benchmark_notebook_on_eegmat(shared_data, cache):
    """11_benchmark: the eegmat suite on six real subjects (split restricted and flagged) with
    one method in both modes and two baselines; the missing Sleep-EDF folder is reported with
    its download command while eegmat still runs."""
    m = _run("11_benchmark", cache, suites=["eegmat", "sleep_edf"], data_root=str(shared_data),
             methods=["stelar"], baselines=["de", "eegnet"], max_subjects=6)
    assert m["suites_run"] == ["eegmat"] and m["suites_missing"] == ["sleep_edf"]
    r = m["eegmat"]
    assert not r["exact"] and r["subjects"] == 6 and r["failures"] == 0
    assert set(r["ours"]) == {"stelar/linear", "stelar/full", "eegnet/full",
                              "de_baseline/features"}
    assert all(0 <= v <= 1 for v in r["ours"].values())
    assert len(r["published"]) == 10  # OpenEEGBench: five models, LP and FT
    assert (cache / "figures" / "11_benchmark__eegmat_vs_published.png").exists()
    missing = (cache / "run" / "tables" / "11_benchmark__missing_data.csv").read_text()
    assert "workbench data download sleep_edf" in missing
