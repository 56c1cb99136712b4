"""The ipywidgets chat app, driven in Python: set values, click buttons, wait, read the transcript."""

from __future__ import annotations

import time

import pytest

from atomlib.apps.chat import ChatSession
from atomlib.apps.widgets import ChatApp, build_chat_app
from lmstudio_stub import StubServer, free_port_url


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


def test_build_chat_app_in_one_call(tiny_run):
    a = build_chat_app(tiny_run, lmstudio_url="http://localhost:1234/v1")
    assert isinstance(a, ChatApp) and a.session.run_dir == tiny_run
    assert a.url.value == "http://localhost:1234/v1"
    assert a.session.enhancer.urls == ["http://localhost:1234/v1"]
    assert "Type a prompt" in a.transcript.value
    # the app is itself a widget: the notebook displays it by leaving it last in a cell
    assert a._repr_mimebundle_ is not None and a.children


def test_send_button_streams_an_answer(app):
    app.max_tokens.value = 40  # moving a slider turns the adaptive presets off and fixes the value
    assert not app.adaptive.value and app.session.settings.max_new_tokens == 40
    snapshots = []
    app.transcript.observe(lambda ch: snapshots.append(ch["new"]), names="value")
    app._set_input("fire and steel")
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


def test_enter_in_the_text_box_sends(app):
    app.session.settings.max_new_tokens = 10
    app.input.value = "what is the night"  # continuous_update=False: the value changes on Enter
    assert app.wait(60)
    assert "you>what is the night" in app.transcript_text()
    assert app.input.value == ""
    assert len(app.session.history) == 2


def test_mode_toggle_and_sliders(app):
    app.mode.value = "completion"
    assert app.session.mode == "completion"
    app.temperature.value = 0.35
    assert app.session.settings.temperature == 0.35 and not app.adaptive.value
    app.adaptive.value = True
    assert app.session.settings.temperature is None and app.session.settings.max_new_tokens is None
    app.max_tokens.value = 16
    app.send("Deep into that darkness peering")
    assert app.wait(60)
    last = app.session.history[-1]
    assert last.mode == "completion" and last.text.startswith("Deep into that darkness peering")
    assert "[completion]" in app.transcript_text()


def test_typed_commands_update_the_controls(app):
    app.send("/temp 0.3")
    assert app.temperature.value == pytest.approx(0.3) and not app.adaptive.value
    app.send("/complete")
    assert app.mode.value == "completion"
    app.send("/bogus")
    assert "Unknown command /bogus" in app.transcript_text()
    app.send("/quit")
    assert "nothing to quit" in app.transcript_text()


def test_stop_button_ends_a_long_generation(app):
    app.session.settings.max_new_tokens = 20000
    app.send("write a song about the burning night")
    assert wait_until(lambda: app._pending is not None and len(app._pending["raw"]) > 5)
    assert not app.stop_button.disabled and app.send_button.disabled
    app.stop_button.click()
    assert app.wait(30)
    assert app.session.history[-1].meta["finish_reason"] == "aborted"
    assert "stopped)" in app.transcript_text()
    assert app.stop_button.disabled and not app.send_button.disabled


def test_clear_button(app):
    app.session.settings.max_new_tokens = 8
    app.send("fire")
    app.wait(60)
    app.send("/status")
    assert app.session.history
    app.clear_button.click()
    assert app.session.history == [] and "Type a prompt" in app.transcript.value


def test_lmstudio_toggle_status_and_rewrite(app):
    def rewrite(body):
        return "Dark night falls. " + body["messages"][1]["content"].split("Rewrite this answer:\n", 1)[1]

    with StubServer(reply=rewrite) as srv:
        app.url.value = srv.url
        assert "not checked" in app.status.value
        app.lmstudio.value = True
        assert app.session.enhance_on
        assert "dark-editor-7b" in app.status.value and "#4c4" in app.status.value  # green light
        app.max_tokens.value = 24
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
    app.session.settings.max_new_tokens = 20000
    app.send("write a song about the storm")
    assert wait_until(lambda: app.busy)
    app.send("another")
    assert "still answering" in app.info.value
    app.stop()
    assert app.wait(30)
    assert [t.text for t in app.session.history if t.role == "user"] == ["write a song about the storm"]
