"""The chat engine: one UI-free `ChatSession` that the terminal and the notebook widget drive.

Two modes, as in the original ATOM-GPT's interactive chat:

* chat: the prompt is classified (creative, question, command, thematic), sampled with that
  kind's preset (any setting the user fixed with /temp, /tokens, /topp, /repeat wins), and the
  answer goes through the filter pipeline; the result may span several lines.
* completion: an unfinished line is completed best-of-N and the best-ranked ending is shown.

`ChatSession.send(text, on_token, on_event)` takes whatever the user typed: a /command or a
prompt. Tokens stream to `on_token(piece)` as they are sampled; `session.stop()` (from a
SIGINT handler, a Stop button, another thread) ends a generation at the next token. Any text
is safe: empty input does nothing, very long input is cut to the model's context (with a note),
characters the model never saw are replaced (with a note). Optionally each answer is rewritten
by a local LLM (atomlib.apps.enhance); it falls back to the model's own text and says why.

`chat_command(args)` is `atom chat`: the interactive terminal loop (readline history, streaming,
Ctrl-C stops a generation, Ctrl-D leaves) or, when stdin is not a terminal, one line per prompt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from atomlib.apps.enhance import one_line
from atomlib.errors import AtomError
from atomlib.paths import resolve_run, write_atomic

MODES = ("chat", "completion")

# name -> (attribute, type, low, high, example) for /temp, /tokens, /topp, /repeat
SETTINGS = {
    "/temp": ("temperature", float, 0.05, 2.0, "0.8"),
    "/tokens": ("max_new_tokens", int, 1, 20000, "120"),
    "/topp": ("top_p", float, 0.05, 1.0, "0.9"),
    "/repeat": ("repetition_penalty", float, 1.0, 2.0, "1.2"),
}
LABELS = {"temperature": "temperature", "max_new_tokens": "max tokens", "top_p": "top-p",
          "repetition_penalty": "repetition penalty"}

HELP = """\
Type a prompt and press Enter; the answer streams in (Ctrl-C / Stop ends it early).
  /chat                 chat mode: adaptive sampling per prompt kind, filtered answer
  /complete             completion mode: finish an unfinished line (best of N)
  /temp X               temperature, 0.05-2.0 (/temp auto: per prompt kind)
  /tokens N             max new tokens, 1-20000 (/tokens auto)
  /topp P               nucleus top-p, 0.05-1.0 (/topp auto)
  /repeat R             repetition penalty, 1.0-2.0 (/repeat auto)
  /settings             sampling settings in effect for each prompt kind
  /status               run, mode, settings and LM Studio state
  /enhance [on|off]     rewrite answers through LM Studio (no argument: status)
  /lmstudio             LM Studio status;  /lmstudio connect [URL]  checks the server
  /lmstudio instruction <text>   system instruction for the rewrite (reset: default)
  /lmstudio url URL  |  /lmstudio model NAME  |  /lmstudio stream on|off
  /save FILE            save the transcript (.md Markdown or .json)
  /clear                forget the transcript
  /help                 this help;  /quit  leave (Ctrl-D too)"""


@dataclass
class ChatSettings:
    """User overrides; None means "the prompt kind's preset decides"."""

    temperature: float | None = None
    max_new_tokens: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    candidates: int = 8  # completion mode: best of N

    def overrides(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "candidates" and v is not None}


@dataclass
class Turn:
    role: str  # "user" | "atom"
    text: str
    mode: str
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    meta: dict = field(default_factory=dict)


@dataclass
class Reply:
    """What one input produced. kind: answer | completion | command | error | empty | clear | quit."""

    kind: str
    text: str = ""
    notes: list[str] = field(default_factory=list)
    raw: str = ""  # the text as sampled (and streamed), before filters and enhancement
    model_text: str = ""  # the model's answer after filters, before enhancement
    prompt_kind: str | None = None
    stopped: bool = False
    enhanced: object | None = None  # atomlib.apps.enhance.EnhanceResult when enhancement ran
    meta: dict = field(default_factory=dict)

    @property
    def is_generation(self) -> bool:
        return self.kind in ("answer", "completion")


class ChatSession:
    """Everything the chat knows and does, without any UI."""

    def __init__(self, model, tokenizer, state: dict | None = None, *, mode: str = "chat",
                 enhance: bool = False, lmstudio_url: str | None = None, enhancer=None,
                 seed: int | None = None, run_dir: str | Path | None = None, device: str | None = None):
        if mode not in MODES:
            raise AtomError(f"chat mode '{mode}' is unknown; use one of {', '.join(MODES)}.")
        from atomlib.apps.enhance import Enhancer

        self.model, self.tokenizer, self.state = model, tokenizer, state or {}
        self.mode = mode
        self.settings = ChatSettings()
        self.history: list[Turn] = []
        self.enhance_on = bool(enhance)
        self.enhancer = enhancer if enhancer is not None else Enhancer(url=lmstudio_url)
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = device or str(next(model.parameters()).device)
        self.stop_event = threading.Event()
        self.busy = threading.Lock()
        self._turns = 0

    @classmethod
    def from_run(cls, run: str | Path | None = None, device: str = "auto", **kw) -> "ChatSession":
        """A session on a trained run folder (default: the newest under outputs/runs/)."""
        from atomlib.model.checkpoint import load_run

        run_dir = resolve_run(run)
        model, tok, state = load_run(run_dir, device=device)
        return cls(model, tok, state, run_dir=run_dir, **kw)

    # --- the one entry point ----------------------------------------------------------------

    def send(self, text: str, on_token: Callable[[str], None] | None = None,
             on_event: Callable[[str, object], None] | None = None) -> Reply:
        """Handle one line of user input: a /command or a prompt for the current mode.

        on_token(piece): the sampled text as it arrives. on_event(name, data) for the rest:
        "answer" (the filtered model answer, str), "enhance_start" (server description),
        "enhance_token" (piece of the rewrite), "enhance_done" (EnhanceResult)."""
        text = "" if text is None else str(text)
        if not text.strip():
            return Reply("empty")
        if text.lstrip().startswith("/"):
            return self.command(text.strip())
        self.stop_event.clear()
        with self.busy:
            if self.mode == "completion":
                return self._complete(text, on_token, on_event)
            return self._chat(text, on_token, on_event)

    def stop(self) -> None:
        """Ask a running generation (or rewrite) to end at its next token."""
        self.stop_event.set()

    @property
    def generating(self) -> bool:
        return self.busy.locked()

    # --- generation -------------------------------------------------------------------------

    def _next_seed(self):
        self._turns += 1
        return None if self.seed is None else self.seed + self._turns

    def _chat(self, text, on_token, on_event) -> Reply:
        from atomlib.generation.adaptive import classify_prompt, frame_prompt, params_for
        from atomlib.generation.filters import apply_filters
        from atomlib.generation.sampling import generate

        kind = classify_prompt(text)
        params = params_for(kind, tokenizer=self.tokenizer, **self.settings.overrides())
        params.seed = self._next_seed()
        params.num_samples = 1
        try:  # tokens the framing adds around the text, so the framed prompt still fits
            framing = max(0, len(self.tokenizer.encode(frame_prompt("x", kind))) - 1)
        except Exception:
            framing = 0
        reserve = min(params.max_new_tokens, self.block_size // 2)
        kept, notes = self.fit(text, self.block_size - reserve - framing)
        prompt = frame_prompt(kept, kind)
        # a prompt the model continues mid-line (theme words opening a verse) is part of the answer
        lead = prompt if prompt and not prompt.endswith("\n") else ""
        if lead and on_token:
            on_token(lead)
        t0 = time.monotonic()
        gens = generate(self.model, self.tokenizer, prompt, params,
                        on_token=(lambda i, piece: on_token(piece) if i == 0 else None) if on_token else None,
                        should_stop=self.stop_event.is_set)
        gen = gens[0]
        seconds = time.monotonic() - t0
        stopped = self.stop_event.is_set()
        clean_end = gen.finish_reason in ("stop", "eot")  # the last word and line are whole
        filt = apply_filters(gen.text, prompt=prompt or None, complete=clean_end)
        body = filt.text.strip()
        if not body and gen.text.strip():
            body = gen.text.strip()
            notes.append(f"the filters removed everything ({filt.reason or 'low quality'}); showing the raw sample")
        if lead and body:
            sep = gen.text[:1] if gen.text[:1].isspace() else ""  # keep the space or line break that joined them
            answer = lead + sep + body
        else:
            answer = body or lead
        if stopped:
            notes.append("stopped")
        if not body:
            notes.append("the model produced no text" + (" before it was stopped" if stopped else ""))
        reply = Reply("answer", answer, notes, raw=lead + gen.text, model_text=answer, prompt_kind=kind,
                      stopped=stopped,
                      meta={"kind": kind, "prompt": prompt, "params": _params_dict(params),
                            "finish_reason": gen.finish_reason, "tokens": len(gen.tokens),
                            "seconds": round(seconds, 3), "filters": [s.name for s in filt.stages if s.changed],
                            "filter_passed": filt.passed, "filter_reason": filt.reason})
        if on_event:
            on_event("answer", answer)
        self._maybe_enhance(kept, reply, on_event)
        self._record(text, reply)
        return reply

    def _complete(self, text, on_token, on_event) -> Reply:
        from atomlib.generation.completion import complete_line

        line = text.rstrip("\r\n")
        budget = self.block_size - min(self._completion_params().max_new_tokens, self.block_size // 2)
        kept, notes = self.fit(line, budget)
        params = self._completion_params()
        # all N candidates are sampled as one batch; the stream shows the first of them as it grows
        stream = (lambda i, piece: on_token(piece) if i == 0 else None) if on_token else None
        t0 = time.monotonic()
        result = complete_line(self.model, self.tokenizer, kept, n=self.settings.candidates, params=params,
                               seed=self._next_seed(), on_token=stream, should_stop=self.stop_event.is_set)
        seconds = time.monotonic() - t0
        stopped = self.stop_event.is_set()
        best = result.best
        ending = best.text if best is not None else ""
        if stopped:
            notes.append("stopped")
        if not ending.strip():
            notes.append("no candidate produced text")
        full = kept + ending
        alts = [{"text": c.text, "score": round(float(c.score), 4), "raw": getattr(c, "raw", c.text),
                 "parts": {k: round(float(v), 3) for k, v in c.parts.items()}} for c in result.candidates]
        reply = Reply("completion", full, notes, raw=ending, model_text=full, stopped=stopped,
                      meta={"line": kept, "ending": ending, "score": round(float(best.score), 4) if best else None,
                            "candidates": alts, "seconds": round(seconds, 3),
                            "at_boundary": bool(getattr(best, "at_boundary", False))})
        if on_event:
            on_event("answer", full)
        self._maybe_enhance(kept, reply, on_event)
        self._record(text, reply)
        return reply

    def _completion_params(self):
        """Completion's own defaults, with the settings the user fixed (/temp, /tokens, ...)."""
        from atomlib.generation.completion import default_params

        return dataclasses.replace(default_params(self.tokenizer), **self.settings.overrides())

    def _maybe_enhance(self, prompt, reply: Reply, on_event) -> None:
        if not self.enhance_on:
            return
        if reply.stopped:
            reply.notes.append("enhancement skipped: the generation was stopped")
            return
        if not reply.text.strip():
            reply.notes.append("enhancement skipped: there was no text to rewrite")
            return
        enh = self.enhancer
        if on_event:
            on_event("enhance_start", f"{enh.health.model} at {enh.health.url}" if enh.health.ok
                     else "the first server that answers at " + " or ".join(enh.urls))
        result_box = []

        def work():
            result_box.append(enh.enhance(prompt, reply.text,
                                          on_token=(lambda p: on_event("enhance_token", p)) if on_event else None,
                                          should_stop=self.stop_event.is_set))

        worker = threading.Thread(target=work, name="atom-enhance", daemon=True)
        worker.start()
        while worker.is_alive():  # wait in small steps so a stop request is seen at once
            worker.join(0.05)
            if self.stop_event.is_set() and worker.is_alive():
                from atomlib.apps.enhance import EnhanceResult

                result_box.append(EnhanceResult(reply.text, reply.text, False, "stopped", model=enh.health.model,
                                                url=enh.health.url))
                break
        res = result_box[0]
        reply.enhanced = res
        reply.meta["enhance"] = {"applied": res.applied, "reason": res.reason, "model": res.model, "url": res.url,
                                 "seconds": round(res.seconds, 3)}
        if res.applied:
            reply.text = res.text
            reply.notes.append(res.note())
        else:
            reply.notes.append(res.note())
        if on_event:
            on_event("enhance_done", res)

    def _record(self, text, reply: Reply) -> None:
        self.history.append(Turn("user", text, self.mode, meta={"kind": reply.prompt_kind} if reply.prompt_kind else {}))
        meta = dict(reply.meta)
        if reply.notes:
            meta["notes"] = list(reply.notes)
        if reply.enhanced is not None and reply.enhanced.applied:
            meta["model_text"] = reply.model_text
        self.history.append(Turn("atom", reply.text, self.mode, meta=meta))

    # --- input safety -----------------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return int(self.model.config.block_size)

    def fit(self, text: str, budget: int) -> tuple[str, list[str]]:
        """The tail of `text` that fits in `budget` tokens, and notes about what was changed."""
        notes = []
        budget = max(8, int(budget))
        unknown = self.unknown_chars(text)
        if unknown:
            shown = "".join(sorted(set(unknown))[:5])
            notes.append(f"{len(unknown)} character(s) the model never saw ({shown!r}) were replaced")
        head = text[-budget * 64:] if len(text) > budget * 64 else text
        ids = self.tokenizer.encode(head)
        if len(ids) > budget or len(head) < len(text):
            kept = self.tokenizer.decode(ids[-budget:])
            if self.tokenizer.kind == "char":  # decode() maps unknown characters to '?': keep the user's own text
                kept = text[-len(kept):] if len(kept) <= len(text) else kept
            notes.append(f"your message had {len(text):,} characters; only its last {len(kept):,} were used "
                         f"(the model sees {self.block_size} tokens at a time, the answer included)")
            return kept, notes
        return text, notes

    def unknown_chars(self, text: str) -> list[str]:
        stoi = getattr(self.tokenizer, "stoi", None)
        if stoi is None:
            return []
        out = []
        for c in text[:200_000]:
            if c in stoi:
                continue
            parts = [d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d)]
            if not parts or any(d not in stoi for d in parts):
                out.append(c)
        return out

    # --- commands -----------------------------------------------------------------------------

    def command(self, line: str) -> Reply:
        parts = line.split(None, 1)
        name, arg = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
        if name in ("/quit", "/exit", "/q"):
            return Reply("quit", "Stay metal. Bye.")
        if name in ("/help", "/?", "/h"):
            return Reply("command", HELP)
        if name == "/clear":
            n = len(self.history)
            self.history.clear()
            return Reply("clear", f"Transcript cleared ({n // 2} exchange(s) forgotten).")
        if name == "/status":
            return Reply("command", self.status_text())
        if name == "/settings":
            return Reply("command", self.settings_text())
        if name in ("/chat", "/complete", "/completion"):
            if arg:
                return _hint(f"{name} takes no argument; type {name} alone.")
            self.mode = "chat" if name == "/chat" else "completion"
            if self.mode == "chat":
                return Reply("command", "Chat mode: ask, command or give a theme; answers are filtered and may span lines.")
            return Reply("command", f"Completion mode: type an unfinished line; the best of {self.settings.candidates} "
                                    "endings is shown.")
        if name in SETTINGS:
            return self._set(name, arg)
        if name == "/enhance":
            return self._enhance_cmd(arg)
        if name == "/lmstudio":
            return self._lmstudio_cmd(arg)
        if name == "/save":
            return self._save_cmd(arg)
        return _hint(f"unknown command {_shown(name)}; type /help for the list.")

    def _set(self, name, arg) -> Reply:
        attr, typ, lo, hi, example = SETTINGS[name]
        label = LABELS[attr]
        if not arg:
            cur = getattr(self.settings, attr)
            return Reply("command", f"{label}: {'auto (per prompt kind)' if cur is None else cur}. "
                                    f"Usage: {name} {example} (range {lo}-{hi}) or {name} auto.")
        if arg.lower() in ("auto", "default", "reset"):
            setattr(self.settings, attr, None)
            return Reply("command", f"{label}: auto (each prompt kind uses its preset).")
        try:
            value = typ(arg)
            if typ is float and value != value:  # NaN
                raise ValueError
        except ValueError:
            return _hint(f"{name} needs a {'whole ' if typ is int else ''}number from {lo} to {hi}, e.g. {name} {example}; "
                         f"'{_shown(arg)}' is not one.")
        if not lo <= value <= hi:
            return _hint(f"{name} must be from {lo} to {hi}, e.g. {name} {example}; {_shown(arg)} is out of range.")
        setattr(self.settings, attr, value)
        return Reply("command", f"{label} set to {value}.")

    def _enhance_cmd(self, arg) -> Reply:
        a = arg.lower()
        if a in ("", "status"):
            return Reply("command", self.enhance_status())
        if a in ("on", "true", "1", "yes"):
            self.enhance_on = True
            health = self.enhancer.check()
            if health.ok:
                return Reply("command", f"Enhancement on: answers are rewritten by {health.model} at {health.url}.")
            return Reply("command", f"Enhancement on, but no server yet ({health.reason}); answers stay the "
                                    "model's own until one answers (/lmstudio connect).")
        if a in ("off", "false", "0", "no"):
            self.enhance_on = False
            return Reply("command", "Enhancement off: answers are the model's own text.")
        return _hint("use /enhance on, /enhance off or /enhance alone for the status.")

    def _lmstudio_cmd(self, arg) -> Reply:
        sub, _, rest = arg.partition(" ")
        sub, rest = sub.lower(), rest.strip()
        enh = self.enhancer
        if sub in ("", "status"):
            return Reply("command", self.lmstudio_status())
        if sub == "connect":
            if rest:
                enh.set_url(rest)
            h = enh.check()
            if h.ok:
                return Reply("command", f"Connected to {h.url}: model {h.model}"
                                        + (f" ({len(h.models)} listed)" if len(h.models) > 1 else "")
                                        + ("" if self.enhance_on else "; /enhance on to use it") + ".")
            return Reply("command", f"Could not connect: {h.reason}. Start LM Studio's server (Developer tab, "
                                    "port 1234) or give its address: /lmstudio connect http://HOST:PORT/v1")
        if sub == "url":
            if not rest:
                return _hint("usage: /lmstudio url http://localhost:1234/v1 (or /lmstudio url default)")
            enh.set_url(None if rest.lower() == "default" else rest)
            return Reply("command", f"LM Studio URL: {', '.join(enh.urls)} (use /lmstudio connect to check it).")
        if sub == "model":
            if not rest:
                return _hint("usage: /lmstudio model NAME (or /lmstudio model auto for the loaded one)")
            enh.requested_model = None if rest.lower() == "auto" else rest
            if enh.health.ok:
                enh.check()
            return Reply("command", f"LM Studio model: {enh.requested_model or 'the one the server has loaded'}.")
        if sub == "instruction":
            if not rest:
                return Reply("command", ("custom" if enh.custom_instruction else "default")
                             + f" instruction:\n{enh.instruction}")
            if rest.lower() in ("reset", "default"):
                enh.set_instruction(None)
                return Reply("command", "Instruction reset to the default.")
            enh.set_instruction(rest)
            return Reply("command", f"Custom instruction set ({len(rest)} characters); it is sent as the system message.")
        if sub == "stream":
            if rest.lower() not in ("on", "off"):
                return _hint("usage: /lmstudio stream on|off")
            enh.stream = rest.lower() == "on"
            return Reply("command", f"Streaming rewrites {'on' if enh.stream else 'off'}.")
        return _hint("use /lmstudio, /lmstudio connect [URL], /lmstudio instruction <text>, /lmstudio url URL, "
                     "/lmstudio model NAME or /lmstudio stream on|off.")

    def _save_cmd(self, arg) -> Reply:
        if not arg:
            return _hint("usage: /save FILE.md or /save FILE.json")
        path = Path(arg.strip().strip("'\"")).expanduser()
        if path.suffix.lower() not in (".md", ".markdown", ".json"):
            return _hint(f"/save writes Markdown (.md) or JSON (.json); '{_shown(path.name, 60)}' has neither extension.")
        try:
            out = self.save(path)
        except OSError as e:
            return _hint(f"could not write {_shown(str(path), 120)} ({e.strerror or type(e).__name__}); pick another file.")
        return Reply("command", f"Saved {len(self.history) // 2} exchange(s) to {out}.")

    # --- views ----------------------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        return self.run_dir.name if self.run_dir else "(in memory)"

    def status_text(self) -> str:
        cfg = self.model.config
        s = self.settings
        st = self.state
        lines = [
            f"run: {self.run_dir or '(in memory)'}",
            f"model: {self.model.get_num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers, context {cfg.block_size}, "
            f"{self.tokenizer.kind} tokenizer ({self.tokenizer.vocab_size} tokens), step {st.get('step', '?')}"
            + (f", best val loss {st['best_val_loss']:.3f}" if isinstance(st.get("best_val_loss"), (int, float)) else ""),
            f"device: {self.device}",
            f"mode: {self.mode}",
        ]
        for attr in ("temperature", "max_new_tokens", "top_p", "repetition_penalty"):
            v = getattr(s, attr)
            lines.append(f"{LABELS[attr]}: {'auto (per prompt kind)' if v is None else v}")
        lines.append(f"completion candidates: {s.candidates}")
        lines.append(f"transcript: {len(self.history) // 2} exchange(s)")
        lines.append(self.enhance_status())
        return "\n".join(lines)

    def settings_text(self) -> str:
        from atomlib.generation.adaptive import PRESETS, params_for

        over = self.settings.overrides()
        rows = [f"{'kind':<10} {'temp':>5} {'top_p':>5} {'top_k':>5} {'repeat':>6} {'tokens':>6}  stop"]
        for kind in PRESETS:
            p = params_for(kind, tokenizer=self.tokenizer, **over)
            rows.append(f"{kind:<10} {_fmt(p.temperature):>5} {_fmt(p.top_p):>5} {_fmt(p.top_k):>5} "
                        f"{_fmt(p.repetition_penalty):>6} {p.max_new_tokens:>6}  {' '.join(map(repr, p.stop)) or '-'}")
        c = self._completion_params()
        rows.append(f"{'completion':<10} {_fmt(c.temperature):>5} {_fmt(c.top_p):>5} {_fmt(c.top_k):>5} "
                    f"{_fmt(c.repetition_penalty):>6} {c.max_new_tokens:>6}  {' '.join(map(repr, c.stop)) or '-'}")
        fixed = ", ".join(f"{LABELS[k]}={v}" for k, v in over.items()) or "none (presets decide)"
        rows.append(f"fixed by you: {fixed}")
        rows.append(f"completion: best of {self.settings.candidates}; mode now: {self.mode}")
        return "\n".join(rows)

    def enhance_status(self) -> str:
        h = self.enhancer.health
        state = "on" if self.enhance_on else "off"
        if h.ok:
            return f"enhancement: {state}; LM Studio {h.describe()}"
        return f"enhancement: {state}; LM Studio {h.describe()} (tries {', '.join(self.enhancer.urls)})"

    def lmstudio_status(self) -> str:
        st = self.enhancer.status()
        lines = [f"LM Studio: {'connected' if st['available'] else 'not connected'}"
                 + (f" at {st['url']}" if st["url"] else f" ({st['reason']})"),
                 f"  model: {st['model'] or self.enhancer.requested_model or 'the one the server has loaded'}",
                 f"  URLs tried: {', '.join(st['candidates'])}",
                 f"  instruction: {'custom' if st['custom_instruction'] else 'default'} ({len(st['instruction'])} characters)",
                 f"  streaming: {'on' if st['stream'] else 'off'}; timeouts: connect {st['timeouts'][0]:g} s, "
                 f"read {st['timeouts'][1]:g} s",
                 f"  enhancement: {'on' if self.enhance_on else 'off'}"]
        return "\n".join(lines)

    # --- transcript -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"run": str(self.run_dir) if self.run_dir else None, "step": self.state.get("step"),
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": self.mode,
                "settings": dataclasses.asdict(self.settings), "enhance": self.enhance_on,
                "turns": [dataclasses.asdict(t) for t in self.history]}

    def to_markdown(self) -> str:
        out = [f"# ATOM-GPT chat: {self.run_name}", "",
               f"Saved {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; run `{self.run_dir or '(in memory)'}`, "
               f"step {self.state.get('step', '?')}.", ""]
        for t in self.history:
            if t.role == "user":
                kind = f", {t.meta['kind']}" if t.meta.get("kind") else ""
                out += [f"**You** ({t.mode}{kind}):", "", _quote(t.text), ""]
            else:
                out += ["**ATOM-GPT:**", "", _quote(t.text or "(no text)"), ""]
                notes = t.meta.get("notes")
                if notes:
                    out += [f"_{'; '.join(notes)}_", ""]
        return "\n".join(out)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False) if path.suffix.lower() == ".json" \
            else self.to_markdown()
        # Encoded first and written atomically, so nothing half-written is left behind. Text can hold
        # lone surrogates (undecodable terminal bytes): they are written as \udXXX escapes, which
        # JSON reads back as the same characters.
        write_atomic(path, text.encode("utf-8", errors="backslashreplace"))
        return path.resolve()


# --- helpers ------------------------------------------------------------------------------------


def _shown(text: str, limit: int = 20) -> str:
    """What the user typed, safe to echo in a one-line hint: no line breaks or control characters, short."""
    return one_line(text)[:limit]


def _hint(text: str) -> Reply:
    return Reply("error", text[0].upper() + text[1:] if text else text)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def _params_dict(p) -> dict:
    try:
        d = dataclasses.asdict(p)
    except TypeError:
        return {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# --- terminal front end ---------------------------------------------------------------------------


class Terminal:
    """The interactive loop of `atom chat` (and its scripted, non-terminal variant)."""

    def __init__(self, session: ChatSession, stdin=None, stdout=None, interactive: bool | None = None):
        self.s = session
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.color = self.interactive and self.out.isatty() and not os.environ.get("NO_COLOR")
        self._streamed = ""

    # output helpers
    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def prompt(self) -> str:
        return f"[{self.s.mode}] > "

    def banner(self) -> None:
        s = self.s
        cfg = s.model.config
        self.write(self.style("ATOM-GPT chat", "1;31") + f"  run {s.run_name} (step {s.state.get('step', '?')}, "
                   f"{s.model.get_num_params() / 1e6:.2f}M parameters, context {cfg.block_size}, {s.device})\n")
        self.write(f"mode: {s.mode}; {s.enhance_status()}\n")
        self.write("Type a prompt, /help for commands, Ctrl-C stops an answer, Ctrl-D leaves.\n\n")

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
        stream = self.interactive
        self._streamed = ""
        started = [False]

        def on_token(piece):
            if not started[0]:  # the raw sample streams dimmed; the filtered answer replaces it
                self.write(self.style("atom> ", "1;31" if self.s.mode == "chat" else "1;35")
                           + ("\x1b[2m" if self.color else ""))
                started[0] = True
            self._streamed += piece
            self.write(piece)

        def on_event(name, data):
            if name == "answer":
                self._show_answer(data, started[0])
            elif name == "enhance_start" and stream:
                self.write(self.style(f"  enhancing with {data} ...", "2") + "\n")
            elif name == "enhance_token" and stream:  # the validated rewrite (enhance.py shows nothing before)
                if not self._enh_started:
                    self.write(self.style("atom+ ", "1;33"))
                    self._enh_started = True
                self.write(_indent(data))

        self._enh_started = False
        old = None
        if stream and not line.lstrip().startswith("/") and line.strip():
            old = self._install_sigint()
        try:
            reply = self.s.send(line, on_token=on_token if stream else None, on_event=on_event)
        except AtomError as e:
            self.write(f"error: {e}\n")
            return None
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        if reply.kind == "empty":
            return None
        if reply.kind == "quit":
            self.write(reply.text + "\n")
            return "quit"
        if reply.kind == "clear":
            if self.interactive and self.out.isatty():
                self.write("\x1b[2J\x1b[H")
            self.write(reply.text + "\n")
            return None
        if reply.kind == "error":
            self.write(self.style(reply.text, "33") + "\n")
            return None
        if reply.kind == "command":
            self.write(reply.text + "\n")
            return None
        # generation: the answer itself was shown by on_event("answer"); now the rewrite and notes
        if reply.enhanced is not None:
            if reply.enhanced.applied:
                if self._enh_started:
                    self.write("\n")
                else:
                    self.write(self.style("atom+ ", "1;33") + _indent(reply.text) + "\n")
            elif self._enh_started:
                self.write("\n")
        for note in reply.notes:
            self.write(self.style(f"  ({note})", "2") + "\n")
        if self.interactive:
            self.write("\n")
        return None

    def _show_answer(self, answer: str, streamed: bool) -> None:
        """Replace the raw streamed sample with the filtered answer (when they differ)."""
        label = self.style("atom> ", "1;31" if self.s.mode == "chat" else "1;35")
        if streamed and self.color:
            self.write("\x1b[0m")
        if not streamed:
            self.write(label + _indent(answer or "(no text)") + "\n")
            return
        if answer == self._streamed.strip() and not self.color:
            self.write("\n")
            return
        if self.out.isatty():
            rows = _rows("atom> " + self._streamed, shutil.get_terminal_size((80, 24)).columns)
            if rows < shutil.get_terminal_size((80, 24)).lines - 1:
                self.write("\r" + (f"\x1b[{rows - 1}A" if rows > 1 else "") + "\x1b[J")
                self.write(label + _indent(answer or "(no text)") + "\n")
                return
        self.write("\n" + label + _indent(answer or "(no text)") + "\n")

    def _install_sigint(self):
        session = self.s

        def handler(signum, frame):
            session.stop()

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            return None

    # readline history
    def _history_path(self) -> Path:
        return Path(os.environ.get("ATOM_HISTORY") or Path.home() / ".atom_history").expanduser()

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:
            self._readline = None
            return
        self._readline = readline
        try:
            readline.read_history_file(str(self._history_path()))
        except (OSError, FileNotFoundError):
            pass
        readline.set_history_length(1000)
        words = ["/help", "/quit", "/clear", "/status", "/settings", "/chat", "/complete", "/temp", "/tokens",
                 "/topp", "/repeat", "/enhance", "/lmstudio", "/save"]

        def complete(text, state):
            hits = [w for w in words if w.startswith(text)] if text.startswith("/") else []
            return hits[state] if state < len(hits) else None

        readline.set_completer(complete)
        readline.parse_and_bind("tab: complete")

    def _save_history(self) -> None:
        rl = getattr(self, "_readline", None)
        if rl is None:
            return
        try:
            path = self._history_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            rl.write_history_file(str(path))
        except OSError:
            pass


def _indent(text: str) -> str:
    return text.replace("\n", "\n      ")


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
    import io

    text = "\n".join(lines) + "\n"
    Terminal(session, stdin=io.StringIO(text), stdout=out or sys.stdout, interactive=False).run()


def chat_command(args) -> None:
    """`atom chat`: load the run, then the terminal loop (or one line per prompt from a pipe)."""
    session = ChatSession.from_run(args.run, device=getattr(args, "device", "auto"), mode=args.mode,
                                   enhance=args.enhance, lmstudio_url=args.lmstudio_url)
    if args.enhance:
        session.enhancer.check()
    code = Terminal(session).run()
    if code:
        raise SystemExit(code)
