"""The chat's one table of commands and the session's settings API: help per surface, one range per
setting, set(), effective(), listeners and regenerate()."""

from __future__ import annotations

import dataclasses

import pytest

from atomlib.apps.commands import COMMANDS, find, help_text, parse_setting
from atomlib.apps.session import ChatSession, ChatSettings
from atomlib.errors import AtomError
from atomlib.generation.presets import PRESETS, params_for
from atomlib.generation.completion import default_params

SETTING_COMMANDS = [c for c in COMMANDS if c.setting]


@pytest.fixture
def session(loaded, tiny_run):
    model, tok, state = loaded
    return ChatSession(model, tok, state, run_dir=tiny_run, seed=7)


# --- the table ----------------------------------------------------------------------------------


def test_help_lists_each_surfaces_commands_and_keys():
    terminal, widget = help_text("terminal"), help_text("widget")
    for c in COMMANDS:
        assert (c.usage in terminal) == ("terminal" in c.surfaces)
        assert (c.usage in widget) == ("widget" in c.surfaces)
    assert "/quit" in terminal and "Ctrl-C" in terminal and "Ctrl-D" in terminal
    assert "/quit" not in widget and "Ctrl-" not in widget and "Shift+Enter" in widget
    assert find("/TEMP") is find("temp") and find("exit") is find("quit") and find("regenerate") is find("retry")
    assert find("nonsense") is None


def test_a_widget_session_answers_with_the_widget_help(loaded, tiny_run):
    model, tok, state = loaded
    s = ChatSession(model, tok, state, run_dir=tiny_run, surface="widget")
    assert s.send("/help").text == help_text("widget")
    r = s.send("/quit")
    assert r.kind == "error" and "works in the terminal only" in r.text


@pytest.mark.parametrize("cmd", SETTING_COMMANDS, ids=lambda c: c.name)
def test_one_range_per_setting(session, cmd):
    """The parser, the help line and the widget's slider read the same bounds; the slider's steps land on hi."""
    whole = str(next(f.type for f in dataclasses.fields(ChatSettings) if f.name == cmd.setting)).startswith("int")
    assert cmd.whole == whole and None not in (cmd.lo, cmd.hi, cmd.step) and cmd.lo < cmd.hi
    assert (cmd.hi - cmd.lo) / cmd.step == pytest.approx(round((cmd.hi - cmd.lo) / cmd.step))
    assert f"{cmd.lo}-{cmd.hi}" in help_text("terminal")
    assert parse_setting(cmd, str(cmd.lo)) == cmd.lo and parse_setting(cmd, cmd.hi) == cmd.hi
    for outside in (cmd.lo - cmd.step, cmd.hi + cmd.step):
        with pytest.raises(AtomError, match=f"/{cmd.name} must be from {cmd.lo} to {cmd.hi}"):
            parse_setting(cmd, outside)
        typed, control = session.send(f"/{cmd.name} {outside}"), session.set(cmd.setting, outside)
        assert typed.kind == control.kind == "error" and typed.text == control.text
    assert parse_setting(cmd, "auto") is None and parse_setting(cmd, None) is None
    assert cmd.example and parse_setting(cmd, cmd.example) is not None  # the hint's example is valid


# --- set() and effective() ------------------------------------------------------------------------


def test_set_validates_as_the_typed_command_does(session):
    r = session.set("temperature", 0.5)
    assert r.kind == "command" and r.text == "temperature set to 0.5." and session.settings.temperature == 0.5
    assert session.set("temperature", "abc").kind == "error" and session.settings.temperature == 0.5
    assert session.set("temperature", float("nan")).kind == "error"
    assert session.set("temperature", True).kind == "error"
    assert session.set("max_new_tokens", 160.0).kind == "command" and session.settings.max_new_tokens == 160
    assert isinstance(session.settings.max_new_tokens, int)
    assert "whole number" in session.set("max_new_tokens", 16.5).text
    assert session.set("temperature", None).text == "temperature: auto (each prompt kind uses its preset)."
    assert session.settings.temperature is None
    session.set("candidates", 3)
    assert session.settings.candidates == 3
    assert session.set("candidates", "auto").text == "completion candidates set to 8 (the default)."
    with pytest.raises(AtomError, match="not a chat setting"):
        session.set("top_k", 5)


def test_effective_is_the_preset_where_the_user_left_none(session):
    tok = session.tokenizer
    eff = session.effective()
    p = params_for("thematic", tokenizer=tok)
    assert eff["kind"] == "thematic"
    assert (eff["temperature"], eff["max_new_tokens"], eff["top_p"], eff["repetition_penalty"]) == \
        (p.temperature, p.max_new_tokens, p.top_p, p.repetition_penalty)
    session.send("/temp 1.1")
    session.set("max_new_tokens", 64)
    for kind in PRESETS:
        e = session.effective(kind)
        assert (e["temperature"], e["max_new_tokens"]) == (1.1, 64)
        assert e["top_p"] == params_for(kind, tokenizer=tok).top_p and e["top_k"] == PRESETS[kind].top_k
    session.send("/complete")
    c = session.effective()
    assert c["kind"] == "completion" and c["top_p"] == default_params(tok).top_p and c["temperature"] == 1.1
    assert c["candidates"] == session.settings.candidates
    r = session.send("/settings").text
    assert "fixed by you: temperature=1.1, max tokens=64" in r


def test_listeners_hear_every_change_whoever_makes_it(session):
    heard = []
    session.listeners.append(lambda: heard.append((session.mode, session.settings.temperature, session.enhance_on)))
    session.send("/help")
    session.send("/status")
    session.send("/temp abc")  # a bad argument changes nothing and tells nobody
    assert heard == []
    session.send("/temp 0.4")
    session.set("temperature", 0.6)
    session.send("/complete")
    session.mode = "chat"
    session.send("/enhance off")
    session.send("/lmstudio url http://127.0.0.1:9/v1")
    assert heard == [("chat", 0.4, False), ("chat", 0.6, False), ("completion", 0.6, False), ("chat", 0.6, False),
                     ("chat", 0.6, False), ("chat", 0.6, False)]
    with pytest.raises(AtomError, match="chat mode 'rap' is unknown"):
        session.mode = "rap"


# --- regenerate ---------------------------------------------------------------------------------


def test_regenerate_replaces_the_last_answer_with_a_new_sample(session):
    r = session.regenerate()
    assert r.kind == "error" and "no answer to regenerate" in r.text
    assert session.send("/retry").kind == "error" and session.history == []
    session.send("/tokens 24")
    first = session.send("steel and thunder")
    user = session.history[0]
    pieces = []
    again = session.regenerate(on_token=pieces.append)
    assert again.kind == "answer" and "".join(pieces) == again.raw
    assert again.meta["params"]["seed"] == first.meta["params"]["seed"] + 1  # the next seed: a new sample
    assert len(session.history) == 2 and session.history[0] is user
    assert session.history[1].text == again.text
    # /retry is the same call, streaming through send's callbacks, in the mode of the prompt it repeats
    session.send("/complete")
    streamed = []
    third = session.send("/retry", on_token=streamed.append)
    assert third.kind == "answer" and "".join(streamed) == third.raw and session.history[1].text == third.text
    assert session.send("/retry now").kind == "error"
