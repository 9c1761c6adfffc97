"""00_data in a real browser: JupyterLab on a local port, driven by headless Chromium.

The notebook is opened as a researcher opens it (from a project's ``notebooks/`` folder, default
parameters, widgets on), run with "Run All Cells"; the window browser's widget must render and
moving its slider must redraw the plot. Needs JupyterLab (the ``lab`` extra), Playwright (its
Python package only: the browser is the system Chromium, found on the PATH or in
``$WORKBENCH_CHROMIUM``; ``playwright install`` is not needed) and skips cleanly without them.

Run it with ``pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_MS = 420_000  # 00_data generates three synthetic datasets on a cold cache


def chromium_path() -> str | None:
    """The system Chromium binary: ``$WORKBENCH_CHROMIUM``, else the first one installed."""
    env = os.environ.get("WORKBENCH_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    # Debian's /usr/bin/chromium is a shell launcher; the binary beside it takes flags directly
    for path in ("/usr/lib/chromium/chromium",):
        if Path(path).is_file():
            return path
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(proc: subprocess.Popen, url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout_s:.0f} s")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a project that holds notebooks/00_data.ipynb."""
    pytest.importorskip("jupyterlab", reason="JupyterLab not installed (pip install -e '.[lab]')")
    pytest.importorskip("playwright.sync_api", reason="Playwright not installed (the lab extra)")
    if chromium_path() is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set WORKBENCH_CHROMIUM)")
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'a-study'\n")
    shutil.copy(REPO / "notebooks" / "00_data.ipynb", root / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),  # no personal settings
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORKBENCH_HOME", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(proc, f"http://127.0.0.1:{port}/api/status?token={token}")
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "root": root,
               "log": tmp_path / "jupyterlab.log"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


def test_data_notebook_widget_renders_and_slider_redraws(lab):
    from playwright.sync_api import sync_playwright

    url = f"{lab['url']}/lab/tree/notebooks/00_data.ipynb?token={lab['token']}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"], timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url, timeout=90_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            # the kernel is up when the toolbar's kernel name shows it and its status is idle
            page.wait_for_selector(".jp-NotebookPanel-toolbar :text('Python 3')", timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            slider = page.locator(".widget-interact .widget-hslider").first
            slider.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
            image = page.locator(".widget-interact .widget-output img").first
            image.wait_for(state="visible", timeout=120_000)
            first_src = image.get_attribute("src")
            readout = page.locator(".widget-interact .widget-hslider .widget-readout").first
            assert readout.inner_text().strip() == "0"
            assert page.locator(".widget-interact .widget-dropdown select").count() == 1

            # move the window slider one step with the keyboard, as a user can
            page.locator(".widget-interact .widget-hslider .noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                """([sel, old]) => {
                    const img = document.querySelector(sel);
                    return img !== null && img.getAttribute('src') !== old;
                }""", arg=[".widget-interact .widget-output img", first_src], timeout=120_000)
            assert readout.inner_text().strip() == "1"
            errors = page.locator(".jp-OutputArea-output[data-mime-type="
                                  "'application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            # the closing cell states the outcome in words, from the recorded metrics
            page.get_by_text("Outcome (00_data)").first.wait_for(timeout=RUN_TIMEOUT_MS)
        finally:
            browser.close()
    # the notebook wrote where a person expects: the project root, not notebooks/
    root = lab["root"]
    assert (root / "runs" / "smoke" / "metrics" / "00_data.json").is_file()
    assert not (root / "notebooks" / "runs").exists()
    # and everything JupyterLab and the notebook wrote is ignored by the repository's .gitignore
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                     and p.name not in ("00_data.ipynb", "pyproject.toml"))
    assert written
    if shutil.which("git") and (REPO / ".git").exists():
        check = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"],
                               input="\n".join(written), capture_output=True, text=True,
                               timeout=30)
        missed = sorted(set(written) - set(check.stdout.split("\n")))
        assert not missed, f"not ignored by .gitignore: {missed[:10]}"
