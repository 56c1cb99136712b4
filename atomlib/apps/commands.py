"""The chat's commands, in one table: name, usage, help, validation and what each does.

    /temp 0.5      ->  find("temp").run(session, "0.5")  ->  session.set("temperature", "0.5")

Everything that lists or checks commands reads COMMANDS: the terminal's parser (`run_command`),
`/help` for each surface (`help_text`), tab completion, and the notebook's controls, whose
sliders take their bounds from the same rows `parse_setting` validates against. A command lives
on the surfaces where it makes sense ("terminal", "widget"); /quit, for one, has no meaning in a
notebook. Handlers take the session and the text after the name and return a Reply; they never
raise for a bad argument but answer with a one-line hint and change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from atomlib.apps.transcript import SAVE_SUFFIXES, Reply
from atomlib.errors import AtomError
from atomlib.untrusted import one_line

SURFACES = ("terminal", "widget")
AUTO_WORDS = ("auto", "default", "reset")
HELP_WIDTH = 100
INTRO = {
    "terminal": "Type a prompt and press Enter; the answer streams in (Ctrl-C ends it early, Ctrl-D leaves).",
    "widget": "Type a prompt and press Enter (Shift+Enter adds a line); the answer streams in (Stop ends it early).",
}


@dataclass(frozen=True)
class Command:
    name: str  # "temp" (typed as /temp)
    usage: str  # "/temp T"
    help: str  # one line
    run: Callable  # run(session, arg: str) -> Reply
    setting: str | None = None  # the ChatSettings field it sets, if any ("temperature")
    lo: float | None = None  # numeric bounds, shared by the parser and the widget's slider
    hi: float | None = None
    step: float | None = None
    surfaces: tuple[str, ...] = SURFACES  # where it makes sense
    aliases: tuple[str, ...] = ()  # other names it answers to ("exit" for "quit")
    label: str = ""  # a setting's name for people ("max tokens")
    example: str = ""  # a setting's example value, shown in hints

    @property
    def whole(self) -> bool:
        """A setting counted in whole numbers (its bounds are ints)."""
        return isinstance(self.lo, int) and isinstance(self.hi, int)


def find(name: str) -> Command | None:
    """The command typed as /name (or one of its aliases); None when there is no such command."""
    name = name.lstrip("/").lower()
    return next((c for c in COMMANDS if name == c.name or name in c.aliases), None)


def for_setting(setting: str) -> Command | None:
    """The command that sets this ChatSettings field ("temperature" -> /temp)."""
    return next((c for c in COMMANDS if c.setting == setting), None)


def help_text(surface: str = "terminal") -> str:
    """`/help` as the given surface shows it: only the commands that work there."""
    lines = [INTRO[surface]]
    for c in COMMANDS:
        if surface in c.surfaces:
            # a help too long for one line breaks at its "; " (each sub-command keeps a line)
            parts = c.help.split("; ") if 24 + len(c.help) > HELP_WIDTH else [c.help]
            lines.append(f"  {c.usage:<21} " + (";\n" + " " * 24).join(parts))
    return "\n".join(lines)


def run_command(session, line: str) -> Reply:
    """Run one typed /command line against a session (whose `surface` says where it is typed)."""
    name, arg = (line.split(None, 1) + [""])[:2]
    cmd = find(name)
    if cmd is None:
        return hint(f"unknown command {shown(name.lower())}; type /help for the list.")
    if session.surface not in cmd.surfaces:
        return hint(f"/{cmd.name} works in the {' and '.join(cmd.surfaces)} only.")
    return cmd.run(session, arg.strip())


def parse_setting(cmd: Command, text):
    """`text` (what was typed, or a number from a control) as a valid value of cmd's setting:
    an int or float in [lo, hi], or None for "auto" (the preset decides). Raises AtomError with a
    one-line message otherwise."""
    if text is None or (isinstance(text, str) and text.strip().lower() in AUTO_WORDS):
        return None
    eg = f"e.g. /{cmd.name} {cmd.example}"
    try:
        value = _number(text, cmd.whole)
    except (TypeError, ValueError):
        raise AtomError(f"/{cmd.name} needs a {'whole ' if cmd.whole else ''}number from {cmd.lo} to {cmd.hi}, "
                        f"{eg}; '{shown(str(text))}' is not one.") from None
    if not cmd.lo <= value <= cmd.hi:
        raise AtomError(f"/{cmd.name} must be from {cmd.lo} to {cmd.hi}, {eg}; {shown(str(text))} is out of range.")
    return value


def _number(text, whole: bool):
    if isinstance(text, bool):
        raise TypeError(text)
    if isinstance(text, str):
        value = int(text.strip()) if whole else float(text.strip())
    else:
        value = float(text)
        if whole:
            if not value.is_integer():
                raise ValueError(text)
            value = int(value)
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(text)
    return value


def shown(text: str, limit: int = 20) -> str:
    """What the user typed, safe to echo in a one-line hint: no line breaks or control characters, short."""
    return one_line(text)[:limit]


def hint(text: str) -> Reply:
    """A one-line answer to a command that could not be done (nothing was changed)."""
    return Reply("error", text[0].upper() + text[1:] if text else text)


# --- the handlers -----------------------------------------------------------------------------


def _setting(name: str) -> Callable:
    def run(session, arg: str) -> Reply:
        cmd = find(name)
        if arg:
            return session.set(cmd.setting, arg)
        cur = getattr(session.settings, cmd.setting)
        return Reply("command", f"{cmd.label}: {'auto (per prompt kind)' if cur is None else cur}. "
                                f"Usage: /{name} {cmd.example} (range {cmd.lo}-{cmd.hi}) or /{name} auto.")
    return run


def _mode(mode: str) -> Callable:
    def run(session, arg: str) -> Reply:
        if arg:
            return hint(f"/{find(mode).name} takes no argument; type /{find(mode).name} alone.")
        session.mode = "chat" if mode == "chat" else "completion"
        if session.mode == "chat":
            return Reply("command", "Chat mode: ask, command or give a theme; answers are filtered and may span lines.")
        return Reply("command", f"Completion mode: type an unfinished line; the best of {session.settings.candidates} "
                                "endings is shown.")
    return run


def _retry(session, arg: str) -> Reply:
    if arg:
        return hint("/retry takes no argument; type /retry alone.")
    return session.regenerate(*session.streams)


def _clear(session, arg: str) -> Reply:
    n = session.history.exchanges
    session.history.clear()
    session.changed()
    return Reply("clear", f"Transcript cleared ({n} exchange(s) forgotten).")


def _enhance(session, arg: str) -> Reply:
    a = arg.lower()
    if a in ("", "status"):
        return Reply("command", session.enhance_status())
    if a in ("on", "true", "1", "yes"):
        health = session.enhancer.check()
        session.enhance_on = True
        if health.ok:
            return Reply("command", f"Enhancement on: answers are rewritten by {health.model} at {health.url}.")
        return Reply("command", f"Enhancement on, but no server yet ({health.reason}); answers stay the "
                                "model's own until one answers (/lmstudio connect).")
    if a in ("off", "false", "0", "no"):
        session.enhance_on = False
        return Reply("command", "Enhancement off: answers are the model's own text.")
    return hint("use /enhance on, /enhance off or /enhance alone for the status.")


def _lmstudio(session, arg: str) -> Reply:
    sub, _, rest = arg.partition(" ")
    handler = LMSTUDIO.get(sub.lower())
    if handler is None:
        return hint("use /lmstudio, /lmstudio connect [URL], /lmstudio instruction <text>, /lmstudio url URL, "
                    "/lmstudio model NAME or /lmstudio stream on|off.")
    reply = handler(session, session.enhancer, rest.strip())
    if sub.lower() not in ("", "status") and reply.kind != "error":
        session.changed()  # the server, model or instruction in use changed: views redraw their status
    return reply


def _lm_status(session, enh, rest: str) -> Reply:
    st = enh.status()
    lines = [f"LM Studio: {'connected' if st['available'] else 'not connected'}"
             + (f" at {st['url']}" if st["url"] else f" ({st['reason']})"),
             f"  model: {st['model'] or enh.requested_model or 'the one the server has loaded'}",
             f"  URLs tried: {', '.join(st['candidates'])}",
             f"  instruction: {'custom' if st['custom_instruction'] else 'default'} ({len(st['instruction'])} characters)",
             f"  streaming: {'on' if st['stream'] else 'off'}; timeouts: connect {st['timeouts'][0]:g} s, "
             f"read {st['timeouts'][1]:g} s",
             f"  enhancement: {'on' if session.enhance_on else 'off'}"]
    return Reply("command", "\n".join(lines))


def _lm_connect(session, enh, rest: str) -> Reply:
    if rest:
        enh.set_url(rest)
    h = enh.check()
    if h.ok:
        return Reply("command", f"Connected to {h.url}: model {h.model}"
                                + (f" ({len(h.models)} listed)" if len(h.models) > 1 else "")
                                + ("" if session.enhance_on else "; /enhance on to use it") + ".")
    return Reply("command", f"Could not connect: {h.reason}. Start LM Studio's server (Developer tab, "
                            "port 1234) or give its address: /lmstudio connect http://HOST:PORT/v1")


def _lm_url(session, enh, rest: str) -> Reply:
    if not rest:
        return hint("usage: /lmstudio url http://localhost:1234/v1 (or /lmstudio url default)")
    enh.set_url(None if rest.lower() == "default" else rest)
    return Reply("command", f"LM Studio URL: {', '.join(enh.urls)} (use /lmstudio connect to check it).")


def _lm_model(session, enh, rest: str) -> Reply:
    if not rest:
        return hint("usage: /lmstudio model NAME (or /lmstudio model auto for the loaded one)")
    enh.requested_model = None if rest.lower() == "auto" else rest
    if enh.health.ok:
        enh.check()
    return Reply("command", f"LM Studio model: {enh.requested_model or 'the one the server has loaded'}.")


def _lm_instruction(session, enh, rest: str) -> Reply:
    if not rest:
        return Reply("command", ("custom" if enh.custom_instruction else "default") + f" instruction:\n{enh.instruction}")
    if rest.lower() in ("reset", "default"):
        enh.set_instruction(None)
        return Reply("command", "Instruction reset to the default.")
    enh.set_instruction(rest)
    return Reply("command", f"Custom instruction set ({len(rest)} characters); it is sent as the system message.")


def _lm_stream(session, enh, rest: str) -> Reply:
    if rest.lower() not in ("on", "off"):
        return hint("usage: /lmstudio stream on|off")
    enh.stream = rest.lower() == "on"
    return Reply("command", f"Streaming rewrites {'on' if enh.stream else 'off'}.")


LMSTUDIO = {"": _lm_status, "status": _lm_status, "connect": _lm_connect, "url": _lm_url, "model": _lm_model,
            "instruction": _lm_instruction, "stream": _lm_stream}


def _save(session, arg: str) -> Reply:
    if not arg:
        return hint("usage: /save FILE.md or /save FILE.json")
    path = Path(arg.strip("'\"")).expanduser()
    if path.suffix.lower() not in SAVE_SUFFIXES:
        return hint(f"/save writes Markdown (.md) or JSON (.json); '{shown(path.name, 60)}' has neither extension.")
    try:
        out = session.history.save(path, session.header())
    except OSError as e:
        return hint(f"could not write {shown(str(path), 120)} ({e.strerror or type(e).__name__}); pick another file.")
    return Reply("command", f"Saved {session.history.exchanges} exchange(s) to {out}.")


def _number_setting(name, usage, setting, label, lo, hi, step, example, auto="the prompt kind's preset") -> Command:
    """A row that sets a number: its help line is written from its own range, so they never disagree."""
    return Command(name, usage, f"{label}, {lo}-{hi} (/{name} auto: {auto})", _setting(name),
                   setting=setting, lo=lo, hi=hi, step=step, label=label, example=example)


COMMANDS: tuple[Command, ...] = (
    Command("chat", "/chat", "chat mode: adaptive sampling per prompt kind, filtered answer", _mode("chat")),
    Command("complete", "/complete", "completion mode: finish an unfinished line (best of N)", _mode("complete"),
            aliases=("completion",)),
    _number_setting("temp", "/temp T", "temperature", "temperature", 0.05, 2.0, 0.05, "0.8"),
    _number_setting("tokens", "/tokens N", "max_new_tokens", "max tokens", 8, 4096, 8, "120"),
    _number_setting("topp", "/topp P", "top_p", "top-p", 0.05, 1.0, 0.05, "0.9"),
    _number_setting("repeat", "/repeat R", "repetition_penalty", "repetition penalty", 1.0, 2.0, 0.05, "1.2"),
    _number_setting("candidates", "/candidates N", "candidates", "completion candidates", 1, 32, 1, "8",
                    auto="the default"),
    Command("retry", "/retry", "answer the last prompt again (a new sample replaces the last answer)", _retry,
            aliases=("regenerate",)),
    Command("settings", "/settings", "sampling settings in effect for each prompt kind",
            lambda s, a: Reply("command", s.settings_text())),
    Command("status", "/status", "run, mode, settings and LM Studio state",
            lambda s, a: Reply("command", s.status_text())),
    Command("enhance", "/enhance [on|off]", "rewrite answers through LM Studio (no argument: status)", _enhance),
    Command("lmstudio", "/lmstudio [SUB]", "LM Studio status; /lmstudio connect [URL]  checks the server; "
            "/lmstudio instruction <text>  system instruction for the rewrite (reset: default); "
            "/lmstudio url URL  |  /lmstudio model NAME  |  /lmstudio stream on|off", _lmstudio),
    Command("save", "/save FILE", "save the transcript (.md Markdown or .json)", _save),
    Command("clear", "/clear", "forget the transcript", _clear),
    Command("help", "/help", "this help", lambda s, a: Reply("command", help_text(s.surface)), aliases=("?", "h")),
    Command("quit", "/quit", "leave (Ctrl-D too)", lambda s, a: Reply("quit", "Stay metal. Bye."),
            surfaces=("terminal",), aliases=("exit", "q")),
)
