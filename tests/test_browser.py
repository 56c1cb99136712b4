"""06_chat in a real browser: JupyterLab + headless Chromium (Playwright), end to end.

Starts JupyterLab on 127.0.0.1 with a token over a temporary project (ATOM_HOME) that holds
the notebook and the tiny test run under outputs/runs/, runs all cells from the Run menu, then
uses the app as a person would and checks that it behaves like a chat app:

* Enter sends, Shift+Enter adds a line (and runs no notebook cell), Send streams an answer;
* clicking elsewhere never sends a half-typed draft;
* text typed while an answer runs stays in the box, and Stop ends the answer;
* after a typed command (/tokens 160) or re-ticking "adaptive presets" the sliders show the
  values in use;
* a 20,000-character prompt is folded, not echoed as a wall of text;
* at 1280 px nothing scrolls sideways, and a long LM Studio status does not squeeze a button;
* /help lists only what works in the notebook; Regenerate replaces the last answer.

It saves a screenshot to outputs/browser/06_chat.png of the test session's project (ATOM_HOME,
printed at the end of `make test`). Skips (with the reason) when Debian's chromium or the
playwright package is missing; it never downloads a browser.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from atomlib.apps.session import ChatSession
from atomlib.paths import free_port, outputs_dir

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ATOM_CHROMIUM", "/usr/bin/chromium"))  # Debian's by default
PROMPT = "fire and steel"
LONG_PROMPT = ("the night is burning\n" * 1200)[:20_000]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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
    port, token = free_port(), secrets.token_hex(16)
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


# --- what the page shows -----------------------------------------------------------------------------

BOX = "textarea.atom-prompt"


def _past(page) -> str:
    return page.locator(".atom-chat .atom-past").inner_text()


def _button(page, name: str):
    return page.locator(".atom-app button", has_text=name).first


def _readout(page, label: str) -> str:
    slider = page.locator(".atom-app .widget-slider", has=page.get_by_text(label, exact=True))
    return slider.locator(".widget-readout").first.inner_text().strip()


def _settled(page, timeout: float = 90_000) -> None:
    """Wait until no answer runs: Stop is disabled and no cursor block is left."""
    page.wait_for_function(
        "() => { const b = [...document.querySelectorAll('.atom-app button')].find(x => x.innerText.includes('Stop'));"
        " const t = document.querySelector('.atom-chat');"
        " return b && b.disabled && t && !t.innerText.includes('\\u2588'); }",
        timeout=timeout)


def _answered(page, prompt: str, timeout: float = 90_000) -> None:
    page.wait_for_function("(p) => document.querySelector('.atom-chat .atom-past').innerText.includes('you>' + p)",
                           arg=prompt, timeout=timeout)
    _settled(page, timeout)


def _type(page, text: str, enter: bool = True) -> None:
    """Type into the prompt box (a long text is pasted), then press Enter."""
    box = page.locator(BOX)
    box.click()
    if len(text) > 200:
        box.fill(text)
    else:
        page.keyboard.type(text)
    if enter:
        page.keyboard.press("Enter")


def _command(page, line: str) -> None:
    n = page.locator(".atom-past .msg.cmd, .atom-past .msg.err").count()
    _type(page, line)
    page.wait_for_function("(n) => document.querySelectorAll('.atom-past .msg.cmd, .atom-past .msg.err').length > n",
                           arg=n, timeout=30_000)


# --- the checks, in the order a person would meet them ------------------------------------------------

def _open_notebook(page, base: str, token: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # lazy: optional, skipped without it

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
    page.locator(BOX).wait_for(state="visible", timeout=60_000)
    # the scripted exchange of the notebook shows up in the app's transcript too
    page.wait_for_function(
        "() => { const t = document.querySelector('.atom-chat .atom-past');"
        " return t && t.innerText.includes('Deep into that darkness peering'); }", timeout=90_000)
    toast = page.locator(".jp-Notification-Toast-Close, .Toastify__close-button")
    if toast.count():
        toast.first.click()


def check_send_streams_an_answer(page) -> None:
    page.locator(BOX).fill(PROMPT)
    _button(page, "Send").click()
    # the answer has streamed in when the prompt is in the finished turns and Stop is disabled again
    _answered(page, PROMPT)
    text = _past(page)
    assert "atom>" in text[text.rindex("you>" + PROMPT):]
    assert page.locator(BOX).input_value() == ""


def check_enter_and_shift_enter(page) -> None:
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    _type(page, "fire and steel", enter=False)
    page.keyboard.press("Shift+Enter")  # a new line in the box, not "run this cell"
    page.keyboard.type("and ice")
    assert page.locator(BOX).input_value() == "fire and steel\nand ice"
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    page.keyboard.press("Enter")
    _answered(page, "fire and steel\nand ice")
    assert page.locator(BOX).input_value() == ""
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells


def check_leaving_the_box_sends_nothing(page) -> None:
    _type(page, "half typed draft", enter=False)
    page.locator(".atom-app .widget-html", has_text="ATOM-GPT chat").first.click()  # the app's title line
    page.locator(".atom-chat").click()  # the transcript
    page.locator(".jp-Notebook .jp-Cell").first.click()  # and the notebook around it
    page.wait_for_timeout(1500)
    assert "half typed draft" not in page.locator(".atom-chat").inner_text()
    assert page.locator(BOX).input_value() == "half typed draft"
    page.locator(BOX).fill("")


def check_sliders_show_the_values_in_use(page, presets: dict) -> None:
    _command(page, "/tokens 160")
    assert _readout(page, "max tokens") == "160"
    _command(page, "/tokens 100")  # a value between the slider's steps is still shown as it is
    assert _readout(page, "max tokens") == "100"
    _command(page, "/temp 0.3")
    assert _readout(page, "temperature") == "0.30"
    adaptive = page.locator(".atom-app .widget-checkbox input")
    assert not adaptive.is_checked()
    adaptive.check()  # re-ticking: every slider shows the preset now in use
    page.wait_for_function("(v) => [...document.querySelectorAll('.atom-app .widget-slider')].some(s =>"
                           " s.innerText.includes('max tokens')"
                           " && s.querySelector('.widget-readout').innerText.trim() == v)",
                           arg=str(presets["max_new_tokens"]), timeout=30_000)
    assert _readout(page, "temperature") == f"{presets['temperature']:.2f}"
    assert _readout(page, "top-p") == f"{presets['top_p']:.2f}"
    assert _readout(page, "repetition penalty") == f"{presets['repetition_penalty']:.2f}"
    _command(page, "/settings")
    assert "fixed by you: none" in _past(page)


def check_help_and_long_prompt(page) -> None:
    _command(page, "/help")
    shown = page.locator(".atom-past .msg.cmd").last.inner_text()
    assert "Shift+Enter" in shown and "/temp" in shown
    assert "Ctrl-D" not in shown and "Ctrl-C" not in shown and "/quit" not in shown
    _command(page, "/tokens 8")
    _type(page, LONG_PROMPT)
    _answered(page, LONG_PROMPT[:40], 120_000)
    you = page.locator(".atom-past .msg.you", has=page.locator("details.fold")).last
    assert you.bounding_box()["height"] < 150, you.bounding_box()
    you.locator("summary").click()  # opened, it shows the whole text
    assert you.bounding_box()["height"] > 1000


def check_typing_during_an_answer_is_kept(page) -> None:
    _command(page, "/tokens 4096")
    _type(page, "write a song about the storm")
    page.wait_for_function("() => [...document.querySelectorAll('.atom-app button')]"
                           ".some(b => b.innerText.includes('Stop') && !b.disabled)", timeout=30_000)
    _type(page, "the next prompt")  # Enter while the answer runs: nothing is sent, nothing is lost
    page.wait_for_timeout(500)
    assert page.locator(BOX).input_value() == "the next prompt"
    _button(page, "Stop").click()
    _settled(page)
    assert "stopped" in _past(page)
    assert page.locator(BOX).input_value() == "the next prompt"
    assert "you>the next prompt" not in _past(page)
    page.locator(BOX).fill("")
    _command(page, "/tokens 24")


def check_regenerate(page) -> None:
    before = _past(page).count("you>")
    last = page.locator(".atom-past .msg.atom").last.inner_text()
    _button(page, "Regenerate").click()
    page.wait_for_function("(t) => { const m = [...document.querySelectorAll('.atom-past .msg.atom')];"
                           " return m.length && m[m.length - 1].innerText !== t; }", arg=last, timeout=60_000)
    _settled(page)
    assert _past(page).count("you>") == before


def check_layout_at_1280(page, offline_url: str) -> None:
    url = page.locator(".atom-app input[type='text']").first
    url.fill(offline_url)
    url.press("Tab")
    _button(page, "Check").click()
    page.wait_for_function("() => document.querySelector('.atom-status').innerText.includes('offline')", timeout=30_000)
    assert len(page.locator(".atom-status").inner_text()) > 60  # long enough to squeeze a button
    assert _scrolls_sideways(page, ".atom-app") == []
    for name in ("Send", "Stop", "Regenerate", "Clear", "Check", "LM Studio"):
        b = _button(page, name)
        assert b.inner_text().strip() == name
        assert b.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), f"the {name} button is cut"


def _scrolls_sideways(page, selector: str) -> list[str]:
    """The elements, from the app's rows up through the output area to the page, wider inside than out."""
    return page.evaluate(
        "(sel) => { const app = document.querySelector(sel); const wide = e => e.scrollWidth > e.clientWidth + 1;"
        " const out = [app, ...app.querySelectorAll('.atom-row')].filter(wide);"  # content cut or scrolled
        " for (let e = app.parentElement; e; e = e.parentElement)"  # a container that scrolls (or clips) it
        "   if (wide(e) && (getComputedStyle(e).overflowX !== 'visible' || e === document.scrollingElement))"
        "     out.push(e);"
        " return out.map(e => e.tagName + '.' + [...e.classList].join('.')); }", selector)


def _free_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1/a-long-path-to-a-server-that-is-not-there"


def test_chat_notebook_in_chromium(lab, loaded):
    from playwright.sync_api import sync_playwright  # lazy: optional, skipped without it

    base, token, tmp = lab
    model, tok, state = loaded
    presets = ChatSession(model, tok, state).effective()  # what "adaptive presets" uses in chat mode
    shot = outputs_dir() / "browser" / "06_chat.png"  # the test session's project, not the user's
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            _open_notebook(page, base, token)
            check_layout_at_1280(page, _free_url())
            check_send_streams_an_answer(page)
            check_enter_and_shift_enter(page)
            check_leaving_the_box_sends_nothing(page)
            check_sliders_show_the_values_in_use(page, presets)
            check_help_and_long_prompt(page)
            check_typing_during_an_answer_is_kept(page)
            check_regenerate(page)
            # bring the app into view and keep the evidence
            page.locator(".atom-chat").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.mouse.wheel(0, -60)  # the app's title line too
            page.screenshot(path=str(shot), full_page=False)
            page.locator(".atom-app").first.screenshot(path=str(shot.with_name("06_chat_app.png")))
        except Exception:
            page.screenshot(path=str(shot.with_name("06_chat_failure.png")), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
