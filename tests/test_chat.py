"""ChatSession: commands, modes, input safety, streaming, stopping, transcripts, enhancement."""

from __future__ import annotations

import json
import threading
import time

import pytest

from atomlib.apps.commands import help_text
from atomlib.apps.session import ChatSession
from lmstudio_stub import StubServer, free_port_url


@pytest.fixture
def session(loaded, tiny_run):
    model, tok, state = loaded
    return ChatSession(model, tok, state, run_dir=tiny_run, seed=7)


def rewrite_of(body) -> str:
    """The stub's rewrite: the answer it was sent, with a dark preface (so it passes validation)."""
    text = body["messages"][1]["content"].split("Rewrite this answer:\n", 1)[1]
    return "Dark night falls. " + text


# --- commands ---------------------------------------------------------------------------------


def test_help_lists_every_command(session):
    r = session.send("/help")
    assert r.kind == "command" and r.text == help_text("terminal")
    for cmd in ("/help", "/quit", "/clear", "/status", "/chat", "/complete", "/temp", "/tokens", "/topp", "/repeat",
                "/lmstudio", "/lmstudio connect", "/lmstudio instruction", "/enhance", "/settings", "/save"):
        assert cmd in r.text


@pytest.mark.parametrize("line, attr, value", [
    ("/temp 0.5", "temperature", 0.5), ("/tokens 42", "max_new_tokens", 42), ("/topp 0.9", "top_p", 0.9),
    ("/repeat 1.3", "repetition_penalty", 1.3), ("/TEMP   1.5", "temperature", 1.5),
])
def test_settings_commands(session, line, attr, value):
    r = session.send(line)
    assert r.kind == "command" and "set to" in r.text
    assert getattr(session.settings, attr) == value
    session.send(line.split()[0] + " auto")
    assert getattr(session.settings, attr) is None


@pytest.mark.parametrize("line, hint", [
    ("/temp abc", "/temp needs a number from 0.05 to 2.0"),
    ("/temp nan", "/temp needs a number"),
    ("/temp 9", "/temp must be from 0.05 to 2.0"),
    ("/tokens -5", "/tokens must be from 8 to 4096"),
    ("/tokens 1.5", "/tokens needs a whole number"),
    ("/topp 0", "/topp must be from 0.05 to 1.0"),
    ("/repeat 0.5", "/repeat must be from 1.0 to 2.0"),
    ("/frobnicate", "Unknown command /frobnicate; type /help"),
    ("/chat now", "/chat takes no argument"),
    ("/enhance maybe", "Use /enhance on, /enhance off"),
    ("/lmstudio dance", "Use /lmstudio, /lmstudio connect"),
    ("/save", "Usage: /save FILE.md"),
    ("/save notes.txt", "/save writes Markdown (.md) or JSON (.json)"),
])
def test_bad_arguments_hint_and_change_nothing(session, line, hint):
    session.send("/temp 0.7")
    before = (dict(vars(session.settings)), session.mode, session.enhance_on, len(session.history))
    r = session.send(line)
    assert r.kind == "error" and hint in r.text
    assert "\n" not in r.text  # a one-line hint
    assert (dict(vars(session.settings)), session.mode, session.enhance_on, len(session.history)) == before


def test_modes_status_settings_quit(session):
    assert session.send("/complete").kind == "command" and session.mode == "completion"
    assert session.send("/chat").kind == "command" and session.mode == "chat"
    st = session.send("/status").text
    for part in ("run: ", "model: ", "mode: chat", "temperature: auto (per prompt kind)", "enhancement: off"):
        assert part in st
    from atomlib.generation.presets import PRESETS

    session.send("/temp 1.1")
    settings = session.send("/settings").text
    assert all(kind in settings for kind in PRESETS) and "temperature=1.1" in settings
    assert session.send("/quit").kind == "quit" and session.send("/exit").kind == "quit"


# --- generation -------------------------------------------------------------------------------


def test_chat_answer_streams_and_is_recorded(session):
    pieces, events = [], []
    r = session.send("write a verse about fire and steel", on_token=pieces.append,
                     on_event=lambda name, data: events.append(name))
    assert r.kind == "answer" and r.prompt_kind in ("creative", "question", "command", "thematic")
    assert pieces and "".join(pieces) == r.raw  # the stream is the sample as generated
    assert r.text and r.text == r.model_text
    assert events == ["answer"]
    assert r.meta["tokens"] >= 1 and "params" in r.meta
    assert [t.role for t in session.history] == ["user", "atom"]
    assert session.history[1].text == r.text


def test_user_settings_override_the_presets(session):
    session.send("/tokens 8")
    session.send("/temp 0.3")
    r = session.send("what is the night")
    assert r.meta["params"]["max_new_tokens"] == 8 and r.meta["params"]["temperature"] == 0.3
    assert r.meta["tokens"] <= 8


def test_input_safety(session):
    for text in ("", "   ", "\n\t ", None):
        r = session.send(text)
        assert r.kind == "empty"
    assert session.history == []
    session.send("/tokens 8")
    long = "x" * 100_000
    r = session.send(long)
    assert r.kind == "answer"
    assert any("your message had 100,000 characters; only its last" in n for n in r.notes)
    assert session.history[0].text == long  # the transcript keeps what the user typed
    r = session.send("🔥🤘 \u2603 ∑ fire ünïcödé")
    assert r.kind == "answer"
    assert any("never saw" in n for n in r.notes)
    r = session.send("\x00\x1b[31m control \u202e bidi")
    assert r.kind == "answer"


def test_stop_from_the_token_callback(session):
    session.send("/tokens 4096")
    seen = []

    def on_token(piece):
        seen.append(piece)
        if len(seen) == 3:
            session.stop()

    r = session.send("the night is burning", on_token=on_token)
    assert r.stopped and "stopped" in r.notes
    assert r.meta["finish_reason"] == "aborted" and r.meta["tokens"] < 50
    # the next prompt is not affected by the old stop request
    session.send("/tokens 10")
    r2 = session.send("fire")
    assert not r2.stopped and r2.meta["finish_reason"] in ("length", "stop")


def test_stop_from_another_thread(session):
    session.send("/tokens 4096")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", session.send("write a song about the storm")))
    t.start()
    deadline = time.monotonic() + 30
    while not session.generating and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    session.stop()
    t.join(30)
    assert not t.is_alive() and out["r"].stopped


def test_completion_mode(session):
    session.send("/complete")
    pieces = []
    r = session.send("Deep into that darkness peering", on_token=pieces.append)
    assert r.kind == "completion"
    assert r.text.startswith("Deep into that darkness peering")
    assert r.text == "Deep into that darkness peering" + r.meta["ending"]
    assert len(r.meta["candidates"]) == session.settings.candidates
    # the stream showed the first of the N candidates (sampled as one batch) as it grew
    assert pieces and "".join(pieces) in [c["raw"] for c in r.meta["candidates"]]
    scores = [c["score"] for c in r.meta["candidates"]]
    assert scores == sorted(scores, reverse=True) and r.meta["score"] == scores[0]
    assert session.history[0].mode == "completion"


def test_clear_and_save(session, tmp_path):
    session.send("/tokens 8")
    session.send("fire")
    session.send("/complete")
    session.send("Upon the midnight")
    md, js = tmp_path / "out" / "chat.md", tmp_path / "chat.json"
    assert "Saved 2 exchange(s)" in session.send(f"/save {md}").text
    text = md.read_text()
    assert text.startswith("# ATOM-GPT chat: ") and "**You** (chat" in text and "**You** (completion)" in text
    assert "> fire" in text and "**ATOM-GPT:**" in text
    session.send(f"/save {js}")
    data = json.loads(js.read_text())
    assert [t["role"] for t in data["turns"]] == ["user", "atom", "user", "atom"]
    assert data["turns"][2]["text"] == "Upon the midnight" and data["settings"]["max_new_tokens"] == 8
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = session.send(f"/save {blocker}/x.md")
    assert r.kind == "error" and "Could not write" in r.text
    r = session.send("/clear")
    assert r.kind == "clear" and session.history == []


def test_save_writes_text_that_utf8_cannot_encode(session, tmp_path):
    """Undecodable terminal bytes reach Python as lone surrogates; /save still writes every file."""
    session.send("/tokens 8")
    session.send("fire \udc80\udcff and steel")
    md, js = tmp_path / "chat.md", tmp_path / "chat.json"
    for f in (md, js):
        assert "Saved 1 exchange(s)" in session.send(f"/save {f}").text
    assert "fire \\udc80\\udcff and steel" in md.read_text(encoding="utf-8")
    assert json.loads(js.read_text(encoding="utf-8"))["turns"][0]["text"] == "fire \udc80\udcff and steel"


# --- LM Studio through the session --------------------------------------------------------------


def test_enhancement_through_the_session(session):
    with StubServer(reply=rewrite_of) as srv:
        r = session.send(f"/lmstudio connect {srv.url}")
        assert "Connected to" in r.text and "dark-editor-7b" in r.text
        assert "connected at" in session.send("/lmstudio").text
        assert session.send("/enhance on").kind == "command" and session.enhance_on
        assert "enhancement: on" in session.send("/enhance").text
        instruction = "Rewrite as a funeral doom chorus; output only the lyrics."
        session.send(f"/lmstudio instruction {instruction}")
        session.send("/tokens 30")
        events = []
        r = session.send("fire and steel", on_event=lambda n, d: events.append(n))
    assert r.enhanced is not None and r.enhanced.applied, r.notes
    assert r.text == "Dark night falls. " + r.model_text
    assert "enhanced by dark-editor-7b" in r.notes
    assert events[0] == "answer" and events[1] == "enhance_start" and events[-1] == "enhance_done"
    assert srv.requests[-1]["messages"][0] == {"role": "system", "content": instruction}
    assert session.history[-1].text == r.text and session.history[-1].meta["model_text"] == r.model_text
    assert "reset" in session.send("/lmstudio instruction reset").text.lower()


def test_enhancement_skipped_when_server_down(session):
    session.send(f"/lmstudio url {free_port_url()}")
    r = session.send("/enhance on")
    assert "no server yet" in r.text
    session.send("/tokens 10")
    r = session.send("fire")
    assert not r.enhanced.applied and r.text == r.model_text
    assert any(n.startswith("enhancement skipped: no server") for n in r.notes)
    assert session.send("/enhance off").kind == "command" and not session.enhance_on


def test_stop_during_a_slow_rewrite(session):
    with StubServer(reply=rewrite_of) as srv:
        srv.behaviour.update(mode="sleep", sleep=30.0)
        session.send(f"/lmstudio connect {srv.url}")
        session.send("/enhance on")
        session.send("/tokens 10")
        timer = threading.Timer(0.5, session.stop)

        def on_event(name, data):
            if name == "enhance_start":
                timer.start()

        t0 = time.monotonic()
        r = session.send("fire", on_event=on_event)
        took = time.monotonic() - t0
        timer.cancel()
    assert not r.enhanced.applied and r.enhanced.reason == "stopped"
    assert r.text == r.model_text and took < 20  # the server would have taken 30 s
