"""The report opens with the answer: the results overview from the per-fold tables."""

import pandas as pd
import pytest

from workbench.report import build_report
from workbench.report.overview import results_overview


def _rows(variant, mode, accs, confounded=False, method="omfa", dataset="DEAP"):
    return [{"method": method, "dataset": dataset, "n_classes": 2, "protocol": "within_subject",
             "fold": f"subject{i}", "subject": str(i), "seed": 42, "variant": variant,
             "mode": mode, "accuracy": a, "balanced_accuracy": a - 0.1,
             "confounded": confounded} for i, a in enumerate(accs)]


def test_overview_rows_baseline_paper_and_duplicates(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    ft = pd.DataFrame(_rows("art_gat", "full", [0.9, 0.8]) + _rows("DE baseline", "features",
                                                                    [0.7, 0.6]))
    ft.to_csv(tables / "04_finetune__omfa__results.csv", index=False)
    # 05 reuses 04's art_gat runs: the same rows again, plus a variant of its own
    abl = pd.DataFrame(_rows("art_gat", "full", [0.9, 0.8]) + _rows("gcn", "full", [0.5, 0.5],
                                                                     confounded=True))
    abl.to_csv(tables / "05_ablations__omfa__ablation_results.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(tables / "00_data__overview.csv", index=False)  # ignored
    ov = results_overview(tmp_path).set_index("variant")
    assert list(ov.index) == ["art_gat", "gcn"]
    row = ov.loc["art_gat"]
    assert row["metric"] == "accuracy" and row["n"] == 2  # not counted twice
    assert row["ours_mean"] == pytest.approx(0.85) and row["baseline_mean"] == pytest.approx(0.65)
    assert row["paper"] == pytest.approx(0.9369)  # One Model for All on DEAP, accuracy
    assert row["notebook"] == "04_finetune__omfa"
    assert ov.loc["gcn", "confounded"] == 2 and ov.loc["gcn", "paper"] == pytest.approx(0.715)
    html = build_report(tmp_path, tmp_path / "figures").read_text()
    assert html.index("Results overview") < html.index("Summary")
    assert "0.850 ± 0.071" in html and "measure recording identity" in html
    assert 'href="#04_finetune__omfa"' in html


def test_overview_synthetic_data_gets_no_paper_number(tmp_path):
    (tmp_path / "tables").mkdir()
    pd.DataFrame(_rows("eegm2", "probe", [0.6, 0.7], method="eegm2", dataset="syn_deap")).to_csv(
        tmp_path / "tables" / "04_finetune__eegm2__results.csv", index=False)
    row = results_overview(tmp_path).iloc[0]
    assert row["metric"] == "balanced_accuracy"  # EEGM2's paper metric, not accuracy
    assert row["ours_mean"] == pytest.approx(0.55) and pd.isna(row["paper"])
    assert pd.isna(row["baseline_mean"])
