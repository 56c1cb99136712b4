"""`atom chat`: the terminal view over a ChatSession.

    atom chat --run outputs/runs/<run>        # interactive: readline history, streaming, Ctrl-C stops
    printf 'fire\\n/quit\\n' | atom chat       # scripted: one line per prompt, each echoed

Interactively, the raw sample streams in dimmed as it is drawn and is then replaced by the
filtered answer; Ctrl-C during an answer stops it (the chat goes on), Ctrl-C at the prompt gives
a fresh line, Ctrl-D leaves. History is kept in ~/.atom_history ($ATOM_HISTORY moves it). When
stdin is not a terminal, each input is echoed after the prompt and answers are printed whole, with
no terminal control codes. `run_script` feeds lines the same way, for notebooks and demos.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
import unicodedata
from pathlib import Path

from atomlib.apps.commands import COMMANDS
from atomlib.apps.session import ChatSession
from atomlib.apps.transcript import Reply
from atomlib.errors import AtomError

INDENT = " " * len("atom> ")


class Terminal:
    """The interactive loop of `atom chat` (and its scripted, non-terminal variant)."""

    def __init__(self, session: ChatSession, stdin=None, stdout=None, interactive: bool | None = None):
        self.s = session
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.color = self.interactive and self.out.isatty() and not os.environ.get("NO_COLOR")
        self._readline = None
        self._streamed = ""  # the raw sample shown so far, replaced by the answer when it comes
        self._started = False  # the answer's label is printed
        self._enh_started = False  # the rewrite's label is printed

    # --- output ----------------------------------------------------------------------------------

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def prompt(self) -> str:
        return f"[{self.s.mode}] > "

    def label(self) -> str:
        return self.style("atom> ", "1;31" if self.s.mode == "chat" else "1;35")

    def banner(self) -> None:
        s = self.s
        self.write(self.style("ATOM-GPT chat", "1;31") + f"  run {s.run_name} (step {s.state.get('step', '?')}, "
                   f"{s.model.get_num_params() / 1e6:.2f}M parameters, context {s.model.config.block_size}, "
                   f"{s.device})\n")
        self.write(f"mode: {s.mode}; {s.enhance_status()}\n")
        self.write("Type a prompt, /help for commands, Ctrl-C stops an answer, Ctrl-D leaves.\n\n")

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> int:
        if self.interactive:
            self._setup_readline()
            self.banner()
        try:
            while True:
                line = self._read()
                if line is None:
                    if self.interactive:
                        self.write("\n")
                    return 0
                if not self.interactive and line.strip():
                    shown = line if len(line) <= 300 else f"{line[:200]}... ({len(line):,} characters)"
                    self.write(f"{self.prompt()}{shown}\n")
                if self.handle(line) == "quit":
                    return 0
        finally:
            self._save_history()

    def _read(self) -> str | None:
        if not self.interactive:
            line = self.stdin.readline()
            return None if line == "" else line.rstrip("\r\n")
        while True:
            try:
                return input(self.prompt())
            except KeyboardInterrupt:  # at the prompt Ctrl-C just gives a fresh line
                self.write("^C\n")
            except EOFError:
                return None

    def handle(self, line: str) -> str | None:
        """Run one input line and print its result; returns "quit" when the chat should end."""
        self._streamed, self._started, self._enh_started = "", False, False
        # any line may generate (a prompt, /retry): Ctrl-C then stops the answer, not the chat
        old = self._install_sigint() if self.interactive and line.strip() else None
        try:
            reply = self.s.send(line, on_token=self._on_token if self.interactive else None, on_event=self._on_event)
        except AtomError as e:
            self.write(f"error: {e}\n")
            return None
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        return self.show(reply)

    def show(self, reply: Reply) -> str | None:
        """Print what a reply adds to the screen (a generation's answer was printed as it came)."""
        if reply.kind == "empty":
            return None
        if reply.kind == "quit":
            self.write(reply.text + "\n")
            return "quit"
        if reply.kind == "clear" and self.interactive and self.out.isatty():
            self.write("\x1b[2J\x1b[H")
        if not reply.is_generation:
            self.write((self.style(reply.text, "33") if reply.kind == "error" else reply.text) + "\n")
            return None
        if reply.enhanced is not None and reply.enhanced.applied and not self._enh_started:
            self.write(self.style("atom+ ", "1;33") + _indent(reply.text) + "\n")
        elif self._enh_started:  # the streamed rewrite (applied or not) ends its line
            self.write("\n")
        for note in reply.notes:
            self.write(self.style(f"  ({note})", "2") + "\n")
        if self.interactive:
            self.write("\n")
        return None

    # --- streaming -------------------------------------------------------------------------------

    def _on_token(self, piece: str) -> None:
        if not self._started:  # the raw sample streams dimmed; the filtered answer replaces it
            self.write(self.label() + ("\x1b[2m" if self.color else ""))
            self._started = True
        self._streamed += piece
        self.write(piece)

    def _on_event(self, name: str, data) -> None:
        if name == "answer":
            self._show_answer(data)
        elif name == "enhance_start" and self.interactive:
            self.write(self.style(f"  enhancing with {data} ...", "2") + "\n")
        elif name == "enhance_token" and self.interactive:  # the validated rewrite (enhance.py shows nothing before)
            if not self._enh_started:
                self.write(self.style("atom+ ", "1;33"))
                self._enh_started = True
            self.write(_indent(data))

    def _show_answer(self, answer: str) -> None:
        """Replace the raw streamed sample with the filtered answer (when they differ)."""
        shown = self.label() + _indent(answer or "(no text)") + "\n"
        if self._started and self.color:
            self.write("\x1b[0m")
        if not self._started:
            self.write(shown)
            return
        if answer == self._streamed.strip() and not self.color:
            self.write("\n")
            return
        if self.out.isatty():
            size = shutil.get_terminal_size((80, 24))
            rows = _rows("atom> " + self._streamed, size.columns)
            if rows < size.lines - 1:  # the whole sample is on screen: erase it and print the answer there
                self.write("\r" + (f"\x1b[{rows - 1}A" if rows > 1 else "") + "\x1b[J" + shown)
                return
        self.write("\n" + shown)

    def _install_sigint(self):
        session = self.s

        def handler(signum, frame):
            session.stop()

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            return None

    # --- readline history ---------------------------------------------------------------------------

    def _history_path(self) -> Path:
        return Path(os.environ.get("ATOM_HISTORY") or Path.home() / ".atom_history").expanduser()

    def _setup_readline(self) -> None:
        try:
            import readline  # lazy: optional (absent on Windows) and only an interactive terminal needs it
        except ImportError:
            return
        self._readline = readline
        try:
            readline.read_history_file(str(self._history_path()))
        except OSError:
            pass
        readline.set_history_length(1000)
        words = [f"/{c.name}" for c in COMMANDS if "terminal" in c.surfaces]

        def complete(text, state):
            hits = [w for w in words if w.startswith(text)] if text.startswith("/") else []
            return hits[state] if state < len(hits) else None

        readline.set_completer(complete)
        readline.parse_and_bind("tab: complete")

    def _save_history(self) -> None:
        if self._readline is None:
            return
        try:
            path = self._history_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(str(path))
        except OSError:
            pass


def _indent(text: str) -> str:
    return text.replace("\n", "\n" + INDENT)


def _rows(text: str, width: int) -> int:
    """Terminal rows `text` occupies when printed from column 0 (wide characters count twice)."""
    width = max(width, 1)
    rows = 0
    for line in text.split("\n"):
        cols = sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in line)
        rows += max(1, -(-cols // width))
    return rows


def run_script(session: ChatSession, lines, out=None) -> None:
    """Feed prompts and commands to a session as `atom chat` reads them from a pipe, printing
    each input and its answer (a scripted exchange for notebooks, demos and tests)."""
    text = "\n".join(lines) + "\n"
    Terminal(session, stdin=io.StringIO(text), stdout=out or sys.stdout, interactive=False).run()
