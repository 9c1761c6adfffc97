"""The papermill runner and the ``workbench`` command line.

Two tiny notebooks are generated here: ``01_bad`` (records a metric, then raises) and ``02_good``
(records a metric computed from an injected parameter, exports a figure), which runs after the
failure. One reproduction runs them through the CLI; the tests check what it left on disk.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from workbench import cli, reproduce
from workbench.report import read_manifest

PARAMS = '''profile: str = "smoke"  # run profile
run_dir: str = "runs/manual"  # folder of this run's artefacts
figures_dir: str = "figures"  # exported figures
device: str = "auto"  # auto, cpu, cuda
seed: int = 42  # random seed
scale: float = 1.0  # multiplies the curve'''

GOOD = '''import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from workbench import report

x = np.arange(5)
y = scale * x**2
fig = Figure()
fig.add_subplot().plot(x, y)
report.export_figure(fig, "Squares", out_dir=figures_dir, data=pd.DataFrame({"x": x, "y": y}),
                     notebook="02_good")
report.record_metrics("02_good", {"total": float(y.sum()), "profile": profile, "seed": seed},
                      run_dir)'''

BAD = '''from workbench import report

report.record_metrics("01_bad", {"before_error": 1}, run_dir)
raise ValueError("boom 123")'''


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(PARAMS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test notebook"), cell,
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    nb_dir = root / "notebooks"
    nb_dir.mkdir()
    _notebook(nb_dir / "02_good.ipynb", GOOD)
    _notebook(nb_dir / "01_bad.ipynb", BAD)
    (nb_dir / "scratch.ipynb").write_text("not a stage")  # no NN_ prefix: ignored
    profile = root / "test.yaml"
    profile.write_text("default:\n  profile: test\n  seed: 7\n02_good:\n  scale: 2.0\n")
    return {"root": root, "notebooks": nb_dir, "profile": profile}


@pytest.fixture(scope="module")
def cli_run(project):
    """One reproduction of both notebooks through ``workbench reproduce``."""
    root = project["root"]
    run_dir, fig_dir = root / "run", root / "figures"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["--log-level", "WARNING", "reproduce", "--profile",
                       str(project["profile"]), "--notebooks-dir", str(project["notebooks"]),
                       "--run-dir", str(run_dir), "--figures-dir", str(fig_dir),
                       "--timeout", "120"])
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "run_dir": run_dir,
            "figures_dir": fig_dir, **project}


# ----------------------------------------------------------------------------- no kernel
def test_discover_stages_sorted_and_filtered(project):
    assert reproduce.discover_stages(project["notebooks"]) == ["01_bad", "02_good"]


def test_select_stages_by_stem_prefix_and_name():
    stages = ["00_data", "01_preprocess", "03_finetune"]
    assert reproduce.select_stages(stages, None) == stages
    assert reproduce.select_stages(stages, ["03", "00_data"]) == ["00_data", "03_finetune"]
    assert reproduce.select_stages(stages, ["preprocess", "01"]) == ["01_preprocess"]
    with pytest.raises(ValueError, match=r"'07'.*00_data.*01_preprocess.*03_finetune"):
        reproduce.select_stages(stages, ["07"])


def test_profile_sections_and_parameter_precedence(project, tmp_path):
    sections = reproduce.load_profile(project["profile"])
    assert sections["default"] == {"profile": "test", "seed": 7}
    params = reproduce.stage_parameters("02_good", sections, tmp_path / "r", "figs",
                                        overrides={"seed": 9})
    assert params["scale"] == 2.0 and params["seed"] == 9 and params["profile"] == "test"
    assert params["run_dir"] == str((tmp_path / "r").resolve())
    assert Path(params["figures_dir"]).is_absolute()


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_shipped_profiles(name):
    assert name in reproduce.list_profiles()
    default = reproduce.load_profile(name)["default"]
    assert default == {"profile": name, "device": "auto", "seed": 42, "interactive": False}


def test_profile_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'profile'.*paper.*smoke.*'nope'"):
        reproduce.load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default:\n  model: {depth: 2}\n")
    with pytest.raises(ValueError, match=r"default\.model.*flat"):
        reproduce.load_profile(bad)


def test_cli_usage_errors(project, capsys):
    nb = str(project["notebooks"])
    assert cli.main(["reproduce", "--notebooks-dir", nb, "--only", "99"]) == 2
    err = capsys.readouterr().err
    assert "'99' is not a notebook" in err and "02_good" in err and "01_bad" in err
    assert cli.main(["reproduce", "--notebooks-dir", nb, "--profile", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
    assert cli.main(["reproduce", "--bogus-option"]) == 2
    assert cli.main(["reproduce", "-p", "no_equals_sign"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["bench", "no_such_benchmark"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert cli.main(["report", "--run-dir", str(project["root"] / "missing")]) == 2


def test_cli_param_values_are_parsed_as_yaml():
    assert cli._parse_param("epochs=3") == ("epochs", 3)
    assert cli._parse_param("method=trace") == ("method", "trace")
    assert cli._parse_param("seeds=[1, 2]") == ("seeds", [1, 2])


def test_cli_models_lists_the_registry(capsys):
    from workbench.models import list_models, model_presets

    assert cli.main(["models", "--presets"]) == 0
    out = capsys.readouterr().out
    names = list_models()
    if not names:
        assert out.strip() == "No models registered."
    for name in names:
        assert f"{name}: presets {', '.join(sorted(model_presets(name)))}" in out


# ----------------------------------------------------------------------------- papermill
@pytest.mark.notebooks
def test_failing_notebook_reported_with_executed_copy(cli_run):
    assert cli_run["rc"] == 1
    status = pd.read_csv(cli_run["run_dir"] / "status.csv", keep_default_na=False)
    assert list(status["notebook"]) == ["01_bad", "02_good"]
    assert list(status["status"]) == ["failed", "ok"]  # the failure did not stop the run
    bad = status.set_index("notebook").loc["01_bad"]
    assert "ValueError: boom 123" in bad["error"]
    executed = Path(bad["executed_path"])
    assert executed == cli_run["run_dir"] / "executed" / "01_bad.ipynb" and executed.exists()
    assert "boom 123" in executed.read_text()
    # the CLI names the failed notebook and its executed copy
    assert "01_bad failed" in cli_run["stderr"] and str(executed) in cli_run["stderr"]
    assert "02_good failed" not in cli_run["stderr"]


@pytest.mark.notebooks
def test_good_notebook_results_recorded_and_kept(cli_run):
    run_dir, fig_dir = cli_run["run_dir"], cli_run["figures_dir"]
    metrics = json.loads((run_dir / "metrics" / "02_good.json").read_text())
    # scale=2.0 from the profile section, seed=7 from its default: 2 * (0+1+4+9+16) = 60
    assert metrics == {"total": 60.0, "profile": "test", "seed": 7}
    # what the failing notebook recorded before raising stays
    assert json.loads((run_dir / "metrics" / "01_bad.json").read_text()) == {"before_error": 1}
    png = fig_dir / "02_good__squares.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = pd.read_csv(fig_dir / "02_good__squares.csv")
    assert data["y"].tolist() == [0.0, 2.0, 8.0, 18.0, 32.0]
    assert [e["key"] for e in read_manifest(fig_dir)] == ["02_good__squares"]
    executed = nbformat.read(run_dir / "executed" / "02_good.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "scale = 2.0" in injected[0].source
    timings = json.loads((run_dir / "timings.json").read_text())
    assert set(timings["stages"]) == {"02_good", "01_bad"}
    assert timings["total_seconds"] == pytest.approx(sum(timings["stages"].values()))
    params = json.loads((run_dir / "parameters.json").read_text())
    assert params["02_good"]["scale"] == 2.0 and "scale" not in params["01_bad"]


@pytest.mark.notebooks
def test_report_built_after_the_run(cli_run):
    html = (cli_run["figures_dir"] / "report.html").read_text()
    png = (cli_run["figures_dir"] / "02_good__squares.png").read_bytes()
    assert base64.b64encode(png).decode() in html
    assert "boom 123" in html and "01_bad.ipynb" in html
    assert 'class="failed"' in html and 'class="ok"' in html
    assert "60.0" in html  # the recorded metric


@pytest.mark.notebooks
def test_only_reruns_one_notebook_and_keeps_the_others(cli_run):
    run_dir, fig_dir = cli_run["run_dir"], cli_run["figures_dir"]
    before = (fig_dir / "02_good__squares.png").stat().st_mtime_ns
    status = reproduce.reproduce(profile=cli_run["profile"], only=["01"], run_dir=run_dir,
                                 figures_dir=fig_dir, notebooks_dir=cli_run["notebooks"],
                                 parameters={"scale": 5.0}, report=False)
    assert list(status["notebook"]) == ["01_bad"] and list(status["status"]) == ["failed"]
    merged = pd.read_csv(run_dir / "status.csv", keep_default_na=False)
    assert list(zip(merged["notebook"], merged["status"])) == [("01_bad", "failed"),
                                                               ("02_good", "ok")]
    assert (fig_dir / "02_good__squares.png").stat().st_mtime_ns == before  # not re-run
    assert json.loads((run_dir / "metrics" / "02_good.json").read_text())["total"] == 60.0
    params = json.loads((run_dir / "parameters.json").read_text())
    assert params["01_bad"]["scale"] == 5.0 and params["02_good"]["scale"] == 2.0


@pytest.mark.notebooks
def test_cli_report_rebuilds_from_the_run_folder(cli_run, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert cli.main(["report", "--run-dir", str(cli_run["run_dir"]), "--figures-dir",
                     str(cli_run["figures_dir"]), "--out", str(out), "--title", "Again"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text()
    assert "<title>Again</title>" in html and "02_good__squares.png" in html and "60.0" in html
