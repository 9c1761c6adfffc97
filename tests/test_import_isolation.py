"""The model, objective and training code imports without the data stack.

``benchmarks/gpu_check.py`` must run on a GPU machine whose Python has PyTorch, Triton, NumPy,
pandas and scikit-learn but not MNE, papermill, plotly or umap. A subprocess makes those four
unimportable with a meta-path finder (a ``sitecustomize`` on ``PYTHONPATH``, so that children
of the subprocess are blocked too) and imports what the script needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("mne", "papermill", "plotly", "umap")

SITECUSTOMIZE = textwrap.dedent(f"""
    import sys

    BLOCKED = {set(BLOCKED)!r}


    class _BlockDataStack:
        # A meta-path finder that refuses the data stack, as if it were not installed.
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked (workbench import-isolation test)")
            return None


    sys.meta_path.insert(0, _BlockDataStack())
""")


def blocked_env(tmp_path: Path) -> dict[str, str]:
    """Environment whose Python processes cannot import :data:`BLOCKED` (and find the
    checkout first)."""
    site = tmp_path / "block_data_stack"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run_blocked(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env=blocked_env(tmp_path), capture_output=True, text=True, timeout=120)


def test_the_blocker_refuses_every_blocked_package(tmp_path):
    installed = [m for m in BLOCKED if importlib.util.find_spec(m) is not None]
    if not installed:
        pytest.skip("none of the blocked packages is installed: nothing to refuse")
    res = run_blocked(tmp_path, f"""
        import importlib, json
        refused = []
        for name in {installed!r}:
            try:
                importlib.import_module(name)
            except ImportError:
                refused.append(name)
        print(json.dumps(refused))
    """)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == installed


def test_models_objectives_training_import_without_the_data_stack(tmp_path):
    res = run_blocked(tmp_path, """
        import json, sys
        import workbench.models, workbench.objectives, workbench.training
        from workbench.models import create_model, list_models
        names = list_models()  # imports every model module
        for name in names:
            create_model(name, "tiny")
        import workbench.analysis.efficiency, workbench.config
        import benchmarks.gpu_check  # the GPU check script itself
        blocked = sorted(m for m in sys.modules if m.partition(".")[0] in
                         {"mne", "papermill", "plotly", "umap"})
        print(json.dumps({"models": names, "blocked_loaded": blocked}))
    """)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["blocked_loaded"] == []
    assert "eegm2" in out["models"] and len(out["models"]) >= 2
