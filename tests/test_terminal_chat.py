"""`atom chat` end to end: in a pseudo-terminal (pexpect) and scripted through a pipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pexpect
import pytest

from conftest import atom_cmd

pytestmark = pytest.mark.slow
TIMEOUT = 60  # generous: the machine is shared; nothing here asserts on time


@pytest.fixture
def chat_env(tmp_path):
    """An environment whose HOME (readline history), project root and chat config are temp folders."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ATOM_LMSTUDIO_URL", "ATOM_HISTORY")}
    env.update(HOME=str(home), ATOM_HOME=str(tmp_path / "project"), ATOM_CHAT_CONFIG=str(tmp_path / "none.yaml"),
               TERM="xterm", NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def spawn(args, env):
    cmd = atom_cmd(*args)
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=TIMEOUT, dimensions=(40, 120))
    child.logfile_read = sys.stdout if os.environ.get("ATOM_TEST_VERBOSE") else None
    return child


def test_interactive_session(tiny_run, chat_env, tmp_path):
    child = spawn(["chat", "--run", tiny_run], chat_env)
    child.expect_exact("ATOM-GPT chat")
    child.expect_exact("[chat] > ")

    # an answer streams in and the prompt comes back
    child.sendline("fire and steel")
    child.expect_exact("atom> ")
    child.expect_exact("[chat] > ")

    child.sendline("/temp 0.5")
    child.expect_exact("temperature set to 0.5.")
    child.expect_exact("[chat] > ")
    child.sendline("/temp abc")
    child.expect_exact("/temp needs a number from 0.05 to 2.0")
    child.sendline("/tokens -5")
    child.expect_exact("/tokens must be from 8 to 4096")
    child.sendline("/frobnicate")
    child.expect_exact("Unknown command /frobnicate; type /help for the list.")
    child.expect_exact("[chat] > ")
    child.sendline("/status")
    child.expect_exact("temperature: 0.5")
    child.expect_exact("max tokens: auto (per prompt kind)")

    # Ctrl-C at the prompt: a fresh prompt line, still running
    child.sendintr()
    child.expect_exact("^C")
    child.expect_exact("[chat] > ")

    # Ctrl-C during a long generation stops it and returns to the prompt
    child.sendline("/tokens 4096")
    child.expect_exact("max tokens set to 4096.")
    child.expect_exact("[chat] > ")
    child.sendline("/complete")
    child.expect_exact("[completion] > ")
    child.sendline("/chat")
    child.expect_exact("[chat] > ")
    child.sendline("write a song about the burning night")
    child.expect_exact("atom> ")
    child.expect(r"\S{5}")  # tokens are streaming
    child.sendintr()
    child.expect_exact("(stopped)")
    child.expect_exact("[chat] > ")
    child.sendline("/status")  # the chat is still alive
    child.expect_exact("transcript: 2 exchange(s)")
    child.expect_exact("[chat] > ")

    # Ctrl-D leaves with status 0
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    history = (tmp_path / "home" / ".atom_history").read_text()
    assert "fire and steel" in history and "/temp 0.5" in history


def test_completion_mode_flag(tiny_run, chat_env):
    child = spawn(["chat", "--run", tiny_run, "--mode", "completion"], chat_env)
    child.expect_exact("[completion] > ")
    child.sendline("Deep into that darkness peering")
    child.expect_exact("atom> ")
    child.expect_exact("[completion] > ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_scripted_through_a_pipe(tiny_run, chat_env, tmp_path):
    out_md = tmp_path / "t.md"
    script = f"fire\n\n   \n/temp 0.7\n/tokens nope\n/complete\nUpon the midnight\n/save {out_md}\n/quit\nnever read\n"
    p = subprocess.run(atom_cmd("chat", "--run", tiny_run), input=script, capture_output=True, text=True,
                       env=chat_env, timeout=TIMEOUT * 2)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "\x1b[" not in out  # no terminal control codes when scripted
    assert out.startswith("[chat] > fire\natom> ")
    assert "[chat] > /temp 0.7\ntemperature set to 0.7." in out
    assert "/tokens needs a whole number" in out
    assert "[completion] > Upon the midnight\natom> Upon the midnight" in out
    assert f"Saved 2 exchange(s) to {out_md}" in out
    assert "never read" not in out
    assert "**You** (chat" in out_md.read_text()


def test_long_and_strange_input_through_a_pipe(tiny_run, chat_env):
    line = ("darkness " * 12_000)[:100_000] + " 🔥🤘 ∑ ünïcödé"
    p = subprocess.run(atom_cmd("chat", "--run", tiny_run), input=line + "\n", capture_output=True, text=True,
                       env=chat_env, timeout=TIMEOUT * 2)
    assert p.returncode == 0, p.stderr
    assert f"your message had {len(line):,} characters; only its last" in p.stdout
    assert "character(s) the model never saw" in p.stdout


def test_no_run_is_one_line_error(chat_env):
    p = subprocess.run(atom_cmd("chat"), input="", capture_output=True, text=True, env=chat_env, timeout=TIMEOUT)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("atom chat: error: no trained run under")


def test_newest_run_is_used(tiny_run, chat_env, tmp_path):
    runs = tmp_path / "project" / "outputs" / "runs"
    runs.mkdir(parents=True)
    shutil.copytree(tiny_run, runs / "tiny-copy")
    p = subprocess.run(atom_cmd("chat"), input="/status\n", capture_output=True, text=True, env=chat_env,
                       timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert f"run: {runs / 'tiny-copy'}" in p.stdout


def test_bad_run_exits_2_naming_the_file(tiny_run, chat_env, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    (bad / "state.json").write_text("{not json")
    shutil.rmtree(bad / ".prev", ignore_errors=True)
    p = subprocess.run(atom_cmd("chat", "--run", bad), input="", capture_output=True, text=True, env=chat_env,
                       timeout=TIMEOUT)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and str(bad / "state.json") in p.stderr
    missing = subprocess.run(atom_cmd("chat", "--run", tmp_path / "nope"), input="", capture_output=True, text=True,
                             env=chat_env, timeout=TIMEOUT)
    assert missing.returncode == 2 and str(tmp_path / "nope") in missing.stderr


def test_enhance_flag_with_server_down(tiny_run, chat_env):
    from lmstudio_stub import free_port_url

    p = subprocess.run(atom_cmd("chat", "--run", tiny_run, "--enhance", "--lmstudio-url", free_port_url()),
                       input="fire\n/lmstudio\n", capture_output=True, text=True, env=chat_env, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert "(enhancement skipped: no server" in p.stdout
    assert "LM Studio: not connected" in p.stdout


def test_enhance_flag_with_stub_server(tiny_run, chat_env):
    from lmstudio_stub import StubServer

    with StubServer(reply="In the dark of night, the fire burns on.") as srv:
        env = dict(chat_env, ATOM_LMSTUDIO_URL=srv.url)  # the env var alone points the chat at the server
        p = subprocess.run(atom_cmd("chat", "--run", tiny_run, "--enhance"),
                           input="/lmstudio instruction Make it grim. Output only lyrics.\n/tokens 40\nfire\n",
                           capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    # the model's answer is shown, then the rewrite
    assert "atom+ In the dark of night, the fire burns on." in p.stdout, p.stdout
    assert "(enhanced by dark-editor-7b)" in p.stdout
    assert srv.requests and srv.requests[-1]["messages"][0]["content"] == "Make it grim. Output only lyrics."
