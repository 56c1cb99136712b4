"""06_chat in a real browser: JupyterLab + headless Chromium (Playwright), end to end.

Starts JupyterLab on 127.0.0.1 with a token over a temporary project (ATOM_HOME) that holds
the notebook and the tiny test run under outputs/runs/, runs all cells from the Run menu,
types a prompt into the widget, clicks Send, waits for the streamed answer in the transcript
and saves a screenshot to outputs/browser/06_chat.png of the test session's project (ATOM_HOME,
printed at the end of `make test`). Skips (with the reason) when Debian's
chromium or the playwright package is missing; it never downloads a browser.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from atomlib.paths import outputs_dir

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ATOM_CHROMIUM", "/usr/bin/chromium"))  # Debian's by default
PROMPT = "fire and steel"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


@pytest.fixture
def lab(tiny_run, tmp_path):
    """A JupyterLab server over a temporary project holding 06_chat and the tiny run."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs chromium at {CHROMIUM} (apt-get install chromium, or set ATOM_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package (pip install playwright)")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "06_chat.ipynb", project / "notebooks" / "06_chat.ipynb")
    shutil.copytree(tiny_run, project / "outputs" / "runs" / "tiny")
    port, token = _free_port(), secrets.token_hex(16)
    jhome = tmp_path / "jupyter"
    env = {k: v for k, v in os.environ.items() if k not in ("ATOM_LMSTUDIO_URL",)}
    env.update(ATOM_HOME=str(project), ATOM_SMOKE="1", ATOM_CHAT_CONFIG=str(tmp_path / "none.yaml"),
               HOME=str(tmp_path / "home"), JUPYTER_CONFIG_DIR=str(jhome / "config"),
               JUPYTER_DATA_DIR=str(jhome / "data"), JUPYTER_RUNTIME_DIR=str(jhome / "runtime"),
               IPYTHONDIR=str(jhome / "ipython"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    # no "get notified about Jupyter news?" toast over the app in the screenshot
    news = jhome / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={project}",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", 45):
            pytest.fail("JupyterLab did not start; log:\n" + (tmp_path / "lab.log").read_text()[-3000:])
        yield f"http://127.0.0.1:{port}", token, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_chat_notebook_in_chromium(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token, tmp = lab
    shot = outputs_dir() / "browser" / "06_chat.png"  # the test session's project, not the user's
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/notebooks/06_chat.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            # JupyterLab may ask which kernel to start: take the default (the server's Python 3)
            dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
            try:
                dialog.wait_for(state="visible", timeout=5_000)
                dialog.locator("button", has_text="Select").click()
            except PlaywrightTimeout:
                pass
            # wait until the kernel is up before running everything
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            box = page.locator(".jupyter-widgets input[placeholder^='Type a prompt']")
            box.wait_for(state="visible", timeout=60_000)
            transcript = page.locator(".atom-chat")
            # the scripted exchange of the notebook shows up in the app's transcript too
            page.wait_for_function(
                "() => { const t = document.querySelector('.atom-chat'); "
                "return t && t.innerText.includes('Deep into that darkness peering'); }", timeout=60_000)
            box.click()
            box.fill(PROMPT)
            page.locator(".jupyter-widgets button", has_text="Send").first.click()
            # the answer has streamed in when the prompt is in the transcript followed by an answer
            # and the Stop button is disabled again (the generation thread ended)
            page.wait_for_function(
                "(p) => { const t = document.querySelector('.atom-chat'); if (!t) return false;"
                " const s = t.innerText; const i = s.lastIndexOf('you>' + p);"
                " return i >= 0 && s.indexOf('atom>', i) > i && !s.includes('\\u2588'); }",
                arg=PROMPT, timeout=60_000)
            text = transcript.inner_text()
            after = text[text.rindex("you>" + PROMPT):]
            assert "atom>" in after
            # bring the app into view (dismissing JupyterLab's news toast) and keep the evidence
            toast = page.locator(".jp-Notification-Toast-Close, .Toastify__close-button")
            if toast.count():
                toast.first.click()
            transcript.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.mouse.wheel(0, -60)  # the app's title line too
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=False)
            page.locator(".jupyter-widgets").first.screenshot(path=str(shot.with_name("06_chat_app.png")))
        except Exception:
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot.with_name("06_chat_failure.png")), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
