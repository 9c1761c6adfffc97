"""Run folders: paths a person expects, folders keyed by settings, finished-run lookup."""

import pytest

from workbench.runs import RunFolder, RunLayout, project_root, resolve_path


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    monkeypatch.delenv("WORKBENCH_HOME", raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")  # JupyterLab runs a notebook in its folder
    return tmp_path


def test_relative_paths_resolve_against_the_project_root(project, monkeypatch):
    assert project_root() == project
    assert resolve_path("runs/manual") == project / "runs" / "manual"
    assert resolve_path("/abs/x").as_posix() == "/abs/x"
    assert RunLayout("", "smoke").root == project / "runs" / "smoke"
    monkeypatch.setenv("WORKBENCH_HOME", str(project / "elsewhere"))
    assert resolve_path("figures") == project / "elsewhere" / "figures"


def test_settings_name_the_folder_and_finished_runs_are_found(project):
    layout = RunLayout("runs/t")
    a = layout.run("pretrain", "m", "enc", {"lr": 1, "seed": 0})
    b = layout.run("pretrain", "m", "enc", {"seed": 0, "lr": 1})
    c = layout.run("pretrain", "m", "enc", {"lr": 2, "seed": 0})
    assert a.path == b.path != c.path and a.path.name.startswith("enc-")
    assert not a.finished and a.claim() is False  # nothing to resume in a new folder
    assert a.claim() is True  # the same settings: resume
    with pytest.raises(FileNotFoundError, match="03_pretrain"):
        layout.require("pretrain", "m", "pre-training", "Run 03_pretrain first.", lr=1)
    a.mark_finished({"seconds": 3})
    assert a.finished and layout.require("pretrain", "m", "x", "", lr=1).path == a.path
    assert layout.finished_runs("pretrain", "m", lr=2) == []
    # a folder whose recorded settings were changed by hand is not "finished" for these
    other = RunFolder(a.path, {"lr": 5})
    assert not other.finished and other.claim() is False and not a.finished
