"""The chat session: one UI-free `ChatSession` that the terminal and the notebook widget drive.

    session = ChatSession.from_run()                 # the newest run under outputs/runs/
    reply = session.send("fire and steel", on_token=print)   # a prompt, or a /command
    session.set("temperature", 0.6)                  # what /temp 0.6 and the widget's slider do
    session.effective()                              # the values in use (the preset fills the gaps)

Two modes, as in the original ATOM-GPT's interactive chat: in chat mode the prompt is classified
and answered with its kind's preset (any setting the user fixed wins) and the filtered answer may
span lines; in completion mode an unfinished line is completed best of N. Both go through the one
answer pipeline, `atomlib.generation.answer.answer`. The session holds the state: the user's
settings (the only copy; views draw from it), the mode, the transcript and the optional rewrite
by a local LLM (atomlib.apps.enhance), which falls back to the model's own text and says why.

Tokens stream to `on_token(piece)`; `stop()` (from a SIGINT handler, a Stop button, another
thread) ends a generation at its next token. Any text is safe: empty input does nothing, very long
input keeps its tail (with a note), characters the model never saw are replaced (with a note).
Views register `listeners` and redraw when settings, mode, enhancement or the transcript change,
whoever changed them (a typed command, a control, a script run on the session).
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from atomlib.apps.commands import COMMANDS, SURFACES, for_setting, hint, parse_setting, run_command
from atomlib.apps.enhance import EnhanceResult, Enhancer
from atomlib.apps.transcript import Reply, Transcript, answer_turn
from atomlib.errors import AtomError
from atomlib.generation.answer import MODES, Answer, Settings, answer, chat_params, completion_params
from atomlib.generation.presets import PRESETS
from atomlib.model.checkpoint import load_run
from atomlib.paths import resolve_run


@dataclass
class ChatSettings:
    """The user's choices; None means "the prompt kind's preset decides"."""

    temperature: float | None = None
    max_new_tokens: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    candidates: int = 8  # completion mode: best of N

    def overrides(self) -> dict:
        """The sampling settings the user fixed."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "candidates" and v is not None}


class ChatSession:
    """Everything the chat knows and does, without any UI."""

    def __init__(self, model, tokenizer, state: dict | None = None, *, mode: str = "chat",
                 enhance: bool = False, lmstudio_url: str | None = None, enhancer=None,
                 seed: int | None = None, run_dir: str | Path | None = None, device: str | None = None,
                 surface: str = "terminal"):
        if mode not in MODES:
            raise AtomError(f"chat mode '{mode}' is unknown; use one of {', '.join(MODES)}.")
        if surface not in SURFACES:
            raise AtomError(f"chat surface '{surface}' is unknown; use one of {', '.join(SURFACES)}.")
        self.model, self.tokenizer, self.state = model, tokenizer, state or {}
        self.listeners: list[Callable[[], None]] = []  # called after settings, mode, enhancement or transcript change
        self._mode = mode
        self._enhance_on = bool(enhance)
        self.surface = surface  # where commands are typed: /help and the commands offered follow it
        self.settings = ChatSettings()
        self.history = Transcript()
        self.enhancer = enhancer if enhancer is not None else Enhancer(url=lmstudio_url)
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = device or str(next(model.parameters()).device)
        self.stop_event = threading.Event()
        self.busy = threading.Lock()
        self.streams: tuple = (None, None)  # (on_token, on_event) of the command being run, for /retry
        self._turns = 0

    @classmethod
    def from_run(cls, run: str | Path | None = None, device: str = "auto", **kw) -> "ChatSession":
        """A session on a trained run folder (default: the newest under outputs/runs/)."""
        run_dir = resolve_run(run)
        model, tok, state = load_run(run_dir, device=device)
        return cls(model, tok, state, run_dir=run_dir, **kw)

    # --- what views show and change -----------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise AtomError(f"chat mode '{value}' is unknown; use one of {', '.join(MODES)}.")
        self._mode = value
        self.changed()

    @property
    def enhance_on(self) -> bool:
        return self._enhance_on

    @enhance_on.setter
    def enhance_on(self, value: bool) -> None:
        self._enhance_on = bool(value)
        self.changed()

    def changed(self) -> None:
        """Tell the views that settings, mode, enhancement or the transcript changed, so they redraw
        from the session."""
        for listener in list(self.listeners):
            listener()

    def set(self, name: str, value) -> Reply:
        """Set a ChatSettings field through its command's validation. value: a number, the text
        typed after the command, or None ("auto": the preset decides, or the field's default)."""
        cmd = for_setting(name)
        if cmd is None:
            names = ", ".join(c.setting for c in COMMANDS if c.setting)
            raise AtomError(f"'{name}' is not a chat setting; use one of {names}.")
        try:
            value = parse_setting(cmd, value)
        except AtomError as e:
            return Reply("error", str(e))
        default = getattr(ChatSettings(), name)
        setattr(self.settings, name, default if value is None else value)
        self.changed()
        if value is not None:
            return Reply("command", f"{cmd.label} set to {value}.")
        if default is None:
            return Reply("command", f"{cmd.label}: auto (each prompt kind uses its preset).")
        return Reply("command", f"{cmd.label} set to {default} (the default).")

    def effective(self, kind: str | None = None) -> dict:
        """The values in use for a prompt of this kind: the user's settings, the preset for the rest.
        kind: a prompt kind or "completion"; None: completion in completion mode, else "thematic"."""
        kind = kind or ("completion" if self.mode == "completion" else "thematic")
        fixed = Settings(**self.settings.overrides())
        p = completion_params(self.tokenizer, fixed) if kind == "completion" else chat_params(self.tokenizer, kind, fixed)
        return {"kind": kind, "temperature": p.temperature, "max_new_tokens": p.max_new_tokens, "top_p": p.top_p,
                "top_k": p.top_k, "repetition_penalty": p.repetition_penalty, "stop": p.stop,
                "candidates": self.settings.candidates}

    # --- input ----------------------------------------------------------------------------------

    def send(self, text: str, on_token: Callable[[str], None] | None = None,
             on_event: Callable[[str, object], None] | None = None) -> Reply:
        """Handle one input: a /command or a prompt for the current mode.

        on_token(piece): the sampled text as it arrives. on_event(name, data) for the rest:
        "answer" (the filtered model answer, str), "enhance_start" (server description),
        "enhance_token" (piece of the rewrite), "enhance_done" (EnhanceResult)."""
        text = "" if text is None else str(text)
        if not text.strip():
            return Reply("empty")
        if text.lstrip().startswith("/"):
            self.streams = (on_token, on_event)
            try:
                return run_command(self, text.strip())
            finally:
                self.streams = (None, None)
        mode = self.mode
        with self._generation():
            reply = self._answer(text, mode, on_token, on_event)
            self.history.record(text, mode, reply)
        self.changed()
        return reply

    def regenerate(self, on_token: Callable[[str], None] | None = None,
                   on_event: Callable[[str, object], None] | None = None) -> Reply:
        """Answer the last prompt again (in its mode, with the next seed and today's settings);
        the new answer replaces the last one in the transcript."""
        with self._generation():
            last = self.history.last_prompt()
            if last is None:
                return hint("there is no answer to regenerate yet; type a prompt first.")
            reply = self._answer(last.text, last.mode, on_token, on_event)
            self.history[-1] = answer_turn(last.mode, reply)
        self.changed()
        return reply

    def stop(self) -> None:
        """Ask a running generation (or rewrite) to end at its next token."""
        self.stop_event.set()

    @property
    def generating(self) -> bool:
        return self.busy.locked()

    # --- generation -------------------------------------------------------------------------------

    @contextmanager
    def _generation(self):
        self.stop_event.clear()
        with self.busy:
            yield

    def _next_seed(self) -> int | None:
        self._turns += 1
        return None if self.seed is None else self.seed + self._turns

    def _answer(self, text: str, mode: str, on_token, on_event) -> Reply:
        settings = Settings(mode=mode, n=self.settings.candidates if mode == "completion" else 1,
                            seed=self._next_seed(), **self.settings.overrides())
        # completion samples its N candidates as one batch; the stream shows the first as it grows
        stream = (lambda i, piece: on_token(piece) if i == 0 else None) if on_token else None
        ans = answer(self.model, self.tokenizer, text, settings, on_token=stream, should_stop=self.stop_event.is_set)
        reply = completion_reply(ans) if mode == "completion" else chat_reply(ans)
        if on_event:
            on_event("answer", reply.text)
        if self.enhance_on:
            enhance_reply(self.enhancer, ans.prompt, reply, self.stop_event, on_event)
        return reply

    # --- views ------------------------------------------------------------------------------------

    @property
    def run_name(self) -> str:
        return self.run_dir.name if self.run_dir else "(in memory)"

    def header(self) -> dict:
        """What a saved transcript says about the session."""
        return {"run": str(self.run_dir) if self.run_dir else None, "step": self.state.get("step"), "mode": self.mode,
                "settings": dataclasses.asdict(self.settings), "enhance": self.enhance_on}

    def status_text(self) -> str:
        cfg, st = self.model.config, self.state
        best = f", best val loss {st['best_val_loss']:.3f}" if isinstance(st.get("best_val_loss"), (int, float)) else ""
        lines = [f"run: {self.run_dir or '(in memory)'}",
                 f"model: {self.model.get_num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers, context "
                 f"{cfg.block_size}, {self.tokenizer.kind} tokenizer ({self.tokenizer.vocab_size} tokens), "
                 f"step {st.get('step', '?')}{best}",
                 f"device: {self.device}", f"mode: {self.mode}"]
        for c in COMMANDS:
            if c.setting:
                v = getattr(self.settings, c.setting)
                lines.append(f"{c.label}: {'auto (per prompt kind)' if v is None else v}")
        lines += [f"transcript: {self.history.exchanges} exchange(s)", self.enhance_status()]
        return "\n".join(lines)

    def settings_text(self) -> str:
        rows = [f"{'kind':<10} {'temp':>5} {'top_p':>5} {'top_k':>5} {'repeat':>6} {'tokens':>6}  stop"]
        for kind in (*PRESETS, "completion"):
            p = self.effective(kind)
            rows.append(f"{kind:<10} {_fmt(p['temperature']):>5} {_fmt(p['top_p']):>5} {_fmt(p['top_k']):>5} "
                        f"{_fmt(p['repetition_penalty']):>6} {p['max_new_tokens']:>6}  "
                        f"{' '.join(map(repr, p['stop'])) or '-'}")
        fixed = ", ".join(f"{for_setting(k).label}={v}" for k, v in self.settings.overrides().items())
        rows.append(f"fixed by you: {fixed or 'none (presets decide)'}")
        rows.append(f"completion: best of {self.settings.candidates}; mode now: {self.mode}")
        return "\n".join(rows)

    def enhance_status(self) -> str:
        h = self.enhancer.health
        state = "on" if self.enhance_on else "off"
        if h.ok:
            return f"enhancement: {state}; LM Studio {h.describe()}"
        return f"enhancement: {state}; LM Studio {h.describe()} (tries {', '.join(self.enhancer.urls)})"


# --- an answer as a Reply ---------------------------------------------------------------------------


def chat_reply(ans: Answer) -> Reply:
    """A chat-mode answer as the session reports it (raw: what streamed, the framing's lead included)."""
    c = ans.choices[0]
    meta = {"kind": ans.kind, "prompt": ans.framed, "params": _params_dict(ans.params),
            "finish_reason": c.finish_reason, "tokens": c.tokens, "seconds": round(ans.seconds, 3),
            "filters": [s.name for s in c.filter.stages if s.changed], "filter_passed": c.filter.passed,
            "filter_reason": c.filter.reason}
    return Reply("answer", c.text, list(ans.notes), raw=ans.lead + c.raw, model_text=c.text, prompt_kind=ans.kind,
                 stopped=ans.stopped, meta=meta)


def completion_reply(ans: Answer) -> Reply:
    """A completion-mode answer: the line and its best ending, every candidate with its score."""
    best = ans.completion.best
    ending = best.text if best is not None else ""
    alts = [{"text": c.text, "score": round(float(c.score), 4), "raw": c.raw,
             "parts": {k: round(float(v), 3) for k, v in c.parts.items()}} for c in ans.completion.candidates]
    meta = {"line": ans.prompt, "ending": ending, "score": round(float(best.score), 4) if best else None,
            "candidates": alts, "seconds": round(ans.seconds, 3), "at_boundary": bool(best and best.at_boundary)}
    full = ans.prompt + ending
    return Reply("completion", full, list(ans.notes), raw=ending, model_text=full, stopped=ans.stopped, meta=meta)


def enhance_reply(enhancer: Enhancer, prompt: str, reply: Reply, stop_event: threading.Event, on_event) -> None:
    """Rewrite the reply's text through the local LLM, in place, unless there is nothing to rewrite.
    The rewrite runs in a worker thread so a stop request is seen at once, whatever the server does."""
    if reply.stopped or not reply.text.strip():
        why = "the generation was stopped" if reply.stopped else "there was no text to rewrite"
        reply.notes.append(f"enhancement skipped: {why}")
        return
    if on_event:
        on_event("enhance_start", f"{enhancer.health.model} at {enhancer.health.url}" if enhancer.health.ok
                 else "the first server that answers at " + " or ".join(enhancer.urls))
    box = []
    worker = threading.Thread(target=lambda: box.append(enhancer.enhance(
        prompt, reply.text, on_token=(lambda p: on_event("enhance_token", p)) if on_event else None,
        should_stop=stop_event.is_set)), name="atom-enhance", daemon=True)
    worker.start()
    while worker.is_alive():  # wait in small steps so a stop request is seen at once
        worker.join(0.05)
        if stop_event.is_set() and worker.is_alive():
            box.append(EnhanceResult(reply.text, reply.text, False, "stopped", model=enhancer.health.model,
                                     url=enhancer.health.url))
            break
    res = box[0]
    reply.enhanced = res
    reply.meta["enhance"] = {"applied": res.applied, "reason": res.reason, "model": res.model, "url": res.url,
                             "seconds": round(res.seconds, 3)}
    if res.applied:
        reply.text = res.text
    reply.notes.append(res.note())
    if on_event:
        on_event("enhance_done", res)


def _params_dict(params) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)
