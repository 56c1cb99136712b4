"""The notebook chat app, driven in Python: set values, press Enter or click, wait, read the transcript.

What the browser adds (keys, focus, layout) is in test_browser.py; here are the rules the app keeps
headless, as papermill and nbval run it: Enter sends and leaving the box does not, text typed
during an answer is kept, the controls show the settings in use, long prompts fold."""

from __future__ import annotations

import time

import pytest

from atomlib.apps.commands import COMMANDS, help_text
from atomlib.apps.promptbox import PromptBox
from atomlib.apps.session import ChatSession
from atomlib.apps.transcript_html import FOLD_CHARS, fold, plain_text
from atomlib.apps.widgets import ChatApp, build_chat_app, setting_sliders
from lmstudio_stub import StubServer, free_port_url

PRESET_DECIDED = ("temperature", "max_new_tokens", "top_p", "repetition_penalty")


@pytest.fixture
def app(loaded, tiny_run):
    model, tok, state = loaded
    a = ChatApp(ChatSession(model, tok, state, run_dir=tiny_run, seed=3))
    yield a
    a.stop()
    a.wait(30)


def wait_until(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def browser_enter(box: PromptBox, text: str) -> None:
    """What the front end does on Enter: empty the box, then send the text as a message."""
    box.value = ""
    box._handle_custom_msg({"event": "submit", "text": text}, [])


def shown_settings(app) -> dict:
    return {name: slider.value for name, slider in app.sliders.items()}


def in_use(app) -> dict:
    used = app.session.effective()
    return {name: pytest.approx(used[name]) for name in app.sliders}


def test_build_chat_app_in_one_call(tiny_run):
    a = build_chat_app(tiny_run, lmstudio_url="http://localhost:1234/v1")
    assert isinstance(a, ChatApp) and a.session.run_dir == tiny_run
    assert a.session.surface == "widget"
    assert a.url.value == "http://localhost:1234/v1"
    assert a.session.enhancer.urls == ["http://localhost:1234/v1"]
    assert "Type a prompt" in a.transcript_text()
    # the app is itself a widget: the notebook displays it by leaving it last in a cell
    assert a._repr_mimebundle_ is not None and a.children


def test_sliders_come_from_the_command_table():
    sliders = setting_sliders()
    rows = [c for c in COMMANDS if c.setting and "widget" in c.surfaces]
    assert rows and set(sliders) == {c.setting for c in rows}
    for c in rows:
        s = sliders[c.setting]
        assert (s.min, s.max, s.step) == (c.lo, c.hi, c.step), c.name
        assert s.description == c.label
        assert isinstance(s.value, int) == c.whole


def test_send_button_streams_an_answer(app):
    app.sliders["max_new_tokens"].value = 40  # moving a slider fixes that value: the adaptive box unticks
    assert not app.adaptive.value and app.session.settings.max_new_tokens == 40
    snapshots = []
    app.live.observe(lambda ch: snapshots.append(ch["new"]), names="value")
    app.input.value = "fire and steel"
    app.send_button.click()
    assert app.wait(60)
    text = app.transcript_text()
    assert "you>fire and steel" in text and "atom>" in text
    assert app.session.history[-1].role == "atom"
    assert app.session.history[-1].text in text
    # while generating, the transcript showed the sample growing behind a cursor block
    streaming = [s for s in snapshots if "\u2588" in s]
    assert streaming and snapshots[-1].count("\u2588") == 0
    assert app.input.value == "" and app.stop_button.disabled and not app.send_button.disabled


def test_enter_sends_and_leaving_the_box_does_not(app):
    app.session.set("max_new_tokens", 16)
    app.input.value = "what is the night"  # typed; then the user clicks elsewhere: nothing is sent
    assert app.session.history == [] and not app.busy
    app.input.submit()  # Enter
    assert app.wait(60)
    assert "you>what is the night" in app.transcript_text()
    assert app.input.value == ""
    assert len(app.session.history) == 2
    browser_enter(app.input, "two lines\nof verse")  # the front end's Enter, Shift+Enter's line break kept
    assert app.wait(60)
    assert app.session.history[-2].text == "two lines\nof verse"


def test_text_typed_during_an_answer_is_kept(app):
    app.session.set("max_new_tokens", 4096)
    app.send("write a song about the burning night")
    assert wait_until(lambda: app.busy)
    assert app.input.busy  # the front end sends nothing on Enter now
    app.input.value = "the next prompt"
    app.input.submit()
    assert app.input.value == "the next prompt"
    browser_enter(app.input, "the next prompt")  # a message sent just before the box heard "busy"
    assert app.input.value == "the next prompt" and "still answering" in app.info.value
    app.stop_button.click()
    assert app.wait(30)
    assert not app.input.busy and app.input.value == "the next prompt"
    assert [t.text for t in app.session.history if t.role == "user"] == ["write a song about the burning night"]
    app.session.set("max_new_tokens", 16)
    app.input.submit()
    assert app.wait(60)
    assert app.session.history[-2].text == "the next prompt" and app.input.value == ""


def test_mode_toggle_and_sliders(app):
    app.mode.value = "completion"
    assert app.session.mode == "completion"
    app.sliders["temperature"].value = 0.35
    assert app.session.settings.temperature == 0.35 and not app.adaptive.value
    app.adaptive.value = True
    assert all(getattr(app.session.settings, n) is None for n in PRESET_DECIDED)
    app.sliders["max_new_tokens"].value = 16
    app.send("Deep into that darkness peering")
    assert app.wait(60)
    last = app.session.history[-1]
    assert last.mode == "completion" and last.text.startswith("Deep into that darkness peering")
    assert "[completion]" in app.transcript_text()


def test_typed_commands_update_the_controls(app):
    app.send("/temp 0.3")
    assert app.sliders["temperature"].value == pytest.approx(0.3) and not app.adaptive.value
    app.send("/tokens 160")
    assert app.sliders["max_new_tokens"].value == 160
    assert shown_settings(app) == in_use(app)
    app.send("/complete")
    assert app.mode.value == "completion" and shown_settings(app) == in_use(app)
    app.send("/candidates 4")
    assert app.sliders["candidates"].value == 4
    app.send("/tokens auto")
    assert app.session.settings.max_new_tokens is None and shown_settings(app) == in_use(app)
    assert "atom-auto" in app.sliders["max_new_tokens"]._dom_classes  # drawn as the preset's value
    app.send("/enhance on")
    assert app.lmstudio.value and app.session.enhance_on
    app.send("/bogus")
    assert "Unknown command /bogus" in app.transcript_text()
    app.send("/quit")
    assert "works in the terminal only" in app.transcript_text()


def test_re_ticking_adaptive_shows_the_presets_in_use(app):
    app.send("/temp 1.7")
    app.send("/tokens 800")
    assert not app.adaptive.value
    app.adaptive.value = True
    assert all(getattr(app.session.settings, n) is None for n in PRESET_DECIDED)
    assert shown_settings(app) == in_use(app)
    assert app.sliders["temperature"].value != pytest.approx(1.7)
    app.adaptive.value = False  # unticking fixes the values shown, so nothing changes under the user
    assert {n: getattr(app.session.settings, n) for n in PRESET_DECIDED} == \
        {n: pytest.approx(app.sliders[n].value) for n in PRESET_DECIDED}
    assert shown_settings(app) == in_use(app)


def test_help_lists_only_what_works_in_the_notebook(app):
    app.send("/help")
    shown = app._log[-1].text
    assert shown == help_text("widget")
    assert "Ctrl-D" not in shown and "Ctrl-C" not in shown and "/quit" not in shown
    assert "Shift+Enter" in shown
    for c in COMMANDS:
        assert (c.usage in shown) == ("widget" in c.surfaces), c.name


def test_a_long_prompt_is_folded(app):
    app.session.set("max_new_tokens", 8)
    prompt = ("the night is burning " * 1000)[:20_000]
    app.send(prompt)
    assert app.wait(120)
    assert "<details class='fold'>" in app.past.value
    assert app.transcript_text().count(prompt) == 1  # the whole text is there, once, behind the fold
    assert "20,000 characters" in app.past.value
    assert fold("short prompt") == "short prompt"
    assert "<details" in fold("x" * (FOLD_CHARS + 1)) and "<details" in fold("a\n" * 10)
    assert plain_text(fold("<b>&</b>\n" * 10)) == ("<b>&</b>\n" * 10).strip()


def test_regenerate_replaces_the_last_answer(app):
    app.session.set("max_new_tokens", 24)
    assert app.regen_button.disabled  # nothing to regenerate yet
    app.send("fire and steel")
    assert app.wait(60)
    assert not app.regen_button.disabled
    old = app.session.history[-1]
    app.regen_button.click()
    assert app.wait(60)
    assert [t.text for t in app.session.history if t.role == "user"] == ["fire and steel"]
    assert len(app.session.history) == 2 and app.session.history[-1] is not old
    assert app.transcript_text().count("you>fire and steel") == 1
    app.send("/retry")  # the typed command does the same, streaming in the background
    assert app.wait(60)
    assert len(app.session.history) == 2 and app.regen_button.disabled is False


def test_stop_button_ends_a_long_generation(app):
    app.session.set("max_new_tokens", 4096)
    app.send("write a song about the burning night")
    assert wait_until(lambda: app._live is not None and len(app._live.raw) > 5)
    assert not app.stop_button.disabled and app.send_button.disabled
    app.stop_button.click()
    assert app.wait(30)
    assert app.session.history[-1].meta["finish_reason"] == "aborted"
    assert "stopped)" in app.transcript_text()
    assert app.stop_button.disabled and not app.send_button.disabled


def test_clear_button(app):
    app.session.set("max_new_tokens", 8)
    app.send("fire")
    app.wait(60)
    app.send("/status")
    assert app.session.history
    app.clear_button.click()
    assert app.session.history == [] and "Type a prompt" in app.transcript_text()


def test_a_script_run_on_the_session_shows_in_the_app(app, capsys):
    """Notebook 06 runs a scripted exchange on app.session (the terminal's reader): the app's
    transcript follows it, with no call to redraw, and so does a /clear typed there."""
    from atomlib.apps.terminal import run_script

    run_script(app.session, ["/tokens 8", "ravens over the pyre"])
    assert app.session.history.exchanges == 1
    assert "you>ravens over the pyre" in app.transcript_text()
    run_script(app.session, ["/clear"])
    assert "ravens over the pyre" not in app.transcript_text() and "Type a prompt" in app.transcript_text()


def test_lmstudio_toggle_status_and_rewrite(app):
    def rewrite(body):
        return "Dark night falls. " + body["messages"][1]["content"].split("Rewrite this answer:\n", 1)[1]

    with StubServer(reply=rewrite) as srv:
        app.url.value = srv.url
        assert "not checked" in app.status.value
        app.lmstudio.value = True
        assert app.session.enhance_on
        assert "dark-editor-7b" in app.status.value and "#4c4" in app.status.value  # green light
        app.sliders["max_new_tokens"].value = 24
        app.send("fire and steel")
        assert app.wait(60)
    last = app.session.history[-1]
    assert last.meta["enhance"]["applied"], last.meta
    assert "atom+>Dark night falls." in app.transcript_text()
    app.url.value = free_port_url()  # now nothing listens there: the light turns red with the reason
    assert "offline" in app.status.value and "refused" in app.status.value
    app.lmstudio.value = False
    assert not app.session.enhance_on


def test_busy_app_refuses_a_second_prompt(app):
    app.session.set("max_new_tokens", 4096)
    app.send("write a song about the storm")
    assert wait_until(lambda: app.busy)
    app.send("another")
    assert "still answering" in app.info.value
    app.stop()
    assert app.wait(30)
    assert [t.text for t in app.session.history if t.role == "user"] == ["write a song about the storm"]
