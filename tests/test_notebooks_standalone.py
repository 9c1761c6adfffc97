"""Analysis notebooks opened on their own, as a researcher opens them from ``notebooks/``.

A small temporary project (a ``pyproject.toml`` and a copy of ``notebooks/``) stands in for a
checkout. Executed with papermill from its ``notebooks/`` folder with default parameters (but
``interactive=False``, as in every batch run), an
analysis notebook finds the runs of the reproduction in ``runs/<profile>`` at the project root and
uses them without retraining (the run folders' ``done.json`` are untouched), and with no runs at
all it trains what it needs and says so. Only 07 and 09 run (through a profile that holds only
them), so the module costs a few minutes rather than a whole smoke reproduction.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from workbench.reproduce import reproduce

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TRAINED = "trained it now"
FOUND = "Found the finished pre-training in runs/smoke/"


def _text(nb_path: Path) -> str:
    """Every text output of an executed notebook (streams, results, Markdown, errors)."""
    out = []
    for cell in json.loads(nb_path.read_text())["cells"]:
        for o in cell.get("outputs", []):
            out.append("".join(o.get("text", "")))
            for key in ("text/plain", "text/markdown"):
                out.append("".join(o.get("data", {}).get(key, "")))
            out.append(o.get("evalue", ""))
    return "\n".join(out)


def _markers(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in (root / "runs").glob("**/done.json")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text("[project]\nname = 'a-study'\n")  # marks the root
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "runs", "figures"))
    (root / "profile.yaml").write_text(
        "default: {profile: smoke, interactive: false}\n07_gat_connectivity: {}\n")
    saved = {k: os.environ.get(k) for k in ("WORKBENCH_HOME", "WORKBENCH_CACHE", "PYTHONPATH")}
    os.environ["WORKBENCH_CACHE"] = str(root / ".cache" / "workbench")  # inherited by kernels
    os.environ["WORKBENCH_HOME"] = str(root)
    try:
        # the reproduction: trains what 07 needs into runs/smoke of the project
        status = reproduce(root / "profile.yaml", only=["07"], run_dir=root / "runs" / "smoke",
                           figures_dir=root / "figures", notebooks_dir=root / "notebooks",
                           report=False)
        # from here on the notebooks find the project from their working folder, as in JupyterLab
        os.environ.pop("WORKBENCH_HOME")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(REPO)] + ([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else []))
        yield {"root": root, "status": status}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(project, stem: str, out: str, **parameters):
    import papermill as pm

    root = project["root"]
    dest = root / "executed" / f"{out}.ipynb"
    dest.parent.mkdir(exist_ok=True)
    # widgets off, as every batch run: ipywidgets displayed in a kernel that papermill drives
    # (no front end to answer their comm messages) can hang it; every other parameter keeps
    # the notebook's default, as a researcher opening it finds it
    pm.execute_notebook(str(root / "notebooks" / f"{stem}.ipynb"), str(dest),
                        parameters={"interactive": False, **parameters},
                        cwd=str(root / "notebooks"), kernel_name="python3",
                        progress_bar=False, log_output=False)
    return dest


def test_reproduction_trained_what_07_needs_and_said_so(project):
    st = project["status"]
    assert (st["status"] == "ok").all(), st[["notebook", "error"]].to_string()
    text = _text(Path(st["executed_path"].iloc[0]))
    assert "No finished pre-training with these settings was under runs/smoke: trained it now" \
        in text
    assert "No finished fine-tuning with these settings" in text and TRAINED in text


def test_07_opened_on_its_own_finds_the_reproductions_runs(project):
    root = project["root"]
    before = _markers(root)
    assert any("/pretrain/" in k for k in before) and any("/finetune/" in k for k in before)
    text = _text(_run(project, "07_gat_connectivity", "07_default"))
    assert FOUND in text and "Found the finished fine-tuning in runs/smoke/" in text
    assert TRAINED not in text
    assert _markers(root) == before  # nothing retrained, nothing rewritten
    # it recorded into the reproduction's folder, and closed with the outcome in words
    metrics = json.loads((root / "runs" / "smoke" / "metrics" / "07_gat_connectivity.json")
                         .read_text())
    assert 0 < metrics["class_difference_p"] <= 1
    assert "**Outcome (07_gat_connectivity)**" in text and "KL from uniform" in text
    assert not (root / "notebooks" / "runs").exists()  # never relative to the notebook's folder
    assert (root / "figures" / "07_gat_connectivity__connectivity_class0.png").exists()


def test_07_with_a_subject_it_has_no_model_for_says_what_to_do(project):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        _run(project, "07_gat_connectivity", "07_bad_subject", subject="nobody")
    assert err.value.ename == "ValueError"
    assert "'subject' parameter: 'nobody' was not fine-tuned" in err.value.evalue
    assert "run 04_finetune with more subjects" in err.value.evalue


def test_09_with_no_runs_trains_and_says_so_then_finds_its_run(project):
    root = project["root"]
    assert not any("eegm2" in k for k in _markers(root))  # no run of 09's method yet
    first = _text(_run(project, "09_reconstruction", "09_first"))
    assert "No finished pre-training with these settings was under runs/smoke: trained it now" \
        in first and "03_pretrain makes it" in first
    assert "**Outcome (09_reconstruction)**" in first
    before = _markers(root)
    second = _text(_run(project, "09_reconstruction", "09_second"))
    assert FOUND in second and TRAINED not in second
    assert _markers(root) == before
