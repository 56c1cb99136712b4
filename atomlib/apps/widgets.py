"""The notebook chat: an ipywidgets view over the same ChatSession as `atom chat`.

    app = build_chat_app(run, lmstudio_url)   # one call; the app is a widget, display it or leave it last

It behaves like LM Studio's or a Gradio chat. The text box (atomlib.apps.promptbox) sends on
Enter, adds a line on Shift+Enter and never sends when it loses focus; text typed while an
answer runs stays in the box. Answers are generated in a background thread and stream into the
transcript (atomlib.apps.transcript_html), where long prompts are folded; Stop ends one,
Regenerate asks again for the last prompt, Clear forgets the transcript.

The controls are drawn from the session, never kept beside it: one slider for each command of
the table that sets a value (bounds from the same table as the typed /command), and after any
change, clicked or typed (`/tokens 160`), a session listener redraws every control from
`session.settings` and `session.effective()`, so they always show the values in use. The same
listener redraws the transcript when it changes elsewhere (a script run on `app.session`).
"""

from __future__ import annotations

import threading
import time

import ipywidgets as W

from atomlib.apps.commands import COMMANDS, find
from atomlib.apps.promptbox import PromptBox
from atomlib.apps.session import ChatSession, ChatSettings
from atomlib.apps.transcript_html import CSS, Live, LogEntry, esc, live_html, past_html, plain_text
from atomlib.paths import resolve_run

# Rows wrap instead of scrolling sideways, and a long status is cut with an ellipsis, not the buttons.
APP_CSS = """
<style>
.atom-app {width:100%; max-width:100%; box-sizing:border-box; overflow-x:hidden;}
.atom-app .atom-row {display:flex; flex-flow:row wrap; align-items:center; gap:4px 8px; width:100%;
  max-width:100%; min-width:0; box-sizing:border-box;}
.atom-app .atom-row > * {min-width:0;}
.atom-app .atom-row > .widget-button, .atom-app .atom-row > .widget-toggle-button {flex:0 0 auto;
  width:auto; min-width:max-content; margin:0;}
.atom-app .atom-status {flex:1 1 160px; min-width:0; overflow:hidden;}
.atom-app .atom-status .widget-html-content {white-space:nowrap; overflow:hidden; text-overflow:ellipsis;}
.atom-app .atom-auto .widget-readout {color:#888; font-style:italic;}
.atom-app .atom-note .widget-html-content {color:#888; white-space:normal; line-height:1.3;}
</style>
"""
MODE_COMMANDS = {"chat": "/chat", "completion": "/complete"}  # what each mode button types


def grey(text: str, color: str = "#888") -> str:
    return f"<span style='color:{color}'>{esc(text)}</span>"


def setting_sliders(commands=COMMANDS) -> dict[str, W.ValueWidget]:
    """One slider per widget command that sets a value, keyed by the ChatSettings field it sets;
    bounds and step are the command's own, so a slider accepts exactly what the typed command does."""
    out = {}
    for cmd in commands:
        if cmd.setting is None or "widget" not in cmd.surfaces:
            continue
        kind = W.IntSlider if cmd.whole else W.FloatSlider
        slider = kind(min=cmd.lo, max=cmd.hi, step=cmd.step, value=cmd.lo, continuous_update=False,
                      description=cmd.label, tooltip=f"{cmd.usage}: {cmd.help}",
                      style={"description_width": "150px"}, layout=W.Layout(flex="0 1 360px", width="auto"))
        if not cmd.whole:
            slider.readout_format = ".2f"
        out[cmd.setting] = slider
    return out


def _row(children) -> W.Box:
    box = W.Box(list(children))
    box.add_class("atom-row")
    return box


class ChatApp(W.VBox):
    """The widget app. Attributes are the controls, so tests (and users) can drive it."""

    def __init__(self, session: ChatSession, lmstudio_url: str | None = None, **kw):
        self.session = session
        session.surface = "widget"  # what is typed here is typed in a notebook: /help and /quit follow
        if lmstudio_url:
            session.enhancer.set_url(lmstudio_url)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None  # the exchange being generated
        self._log: list[LogEntry] = []  # command results shown between exchanges
        self._cut: int | None = None  # while regenerating: the turns shown (the replaced exchange is not)
        self._last_render = 0.0
        self._syncing = False  # the controls are being set from the session: do not echo back
        self._holding = False  # several settings change at once: redraw the controls once, after
        self._shown: tuple | None = None  # the transcript's state() as last drawn
        self._controls()
        self._wire()
        super().__init__(self._layout(), **kw)
        self.add_class("atom-app")
        session.listeners.append(self._session_changed)
        self.refresh_controls()
        self.render()

    def _controls(self) -> None:
        """The widgets; their values are drawn from the session by refresh_controls."""
        self.past, self.live = W.HTML(), W.HTML()  # the finished turns; the answer being written
        self.past.add_class("atom-past")
        self.live.add_class("atom-live")
        self.transcript = W.Box([self.past, self.live])  # drawn bottom-up, so it stays scrolled to the end
        self.transcript.add_class("atom-chat")
        self.input = PromptBox(placeholder="Type a prompt or /help. Enter sends, Shift+Enter adds a line.",
                               layout=W.Layout(flex="1 1 320px"))
        self.send_button = W.Button(description="Send", button_style="danger", icon="paper-plane")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.regen_button = W.Button(description="Regenerate", icon="redo", disabled=True,
                                     tooltip="a new answer to the last prompt")
        self.clear_button = W.Button(description="Clear", icon="trash")
        self.mode = W.ToggleButtons(options=list(MODE_COMMANDS), style={"button_width": "100px"},
                                    tooltips=["adaptive answer, filtered", "best-of-N completion of a line"])
        self.adaptive = W.Checkbox(description="adaptive presets", indent=False, layout=W.Layout(width="auto"))
        self.in_use = W.HTML(layout=W.Layout(flex="1 1 200px"))
        self.in_use.add_class("atom-note")
        self.sliders = setting_sliders()
        self._auto = [n for n in self.sliders if getattr(ChatSettings(), n) is None]  # the presets decide these
        self.lmstudio = W.ToggleButton(description="LM Studio", icon="magic",
                                       tooltip="rewrite answers through a local OpenAI-compatible server")
        self.url = W.Text(continuous_update=False, layout=W.Layout(flex="0 1 260px", width="auto"))
        self.check_button = W.Button(description="Check", icon="refresh")
        self.status = W.HTML()
        self.status.add_class("atom-status")
        self.info = W.HTML()

    def _wire(self) -> None:
        self.input.on_submit(self.send)
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self.regen_button.on_click(lambda _: self.regenerate())
        self.clear_button.on_click(lambda _: self.clear())
        self.mode.observe(self._on_mode, names="value")
        self.adaptive.observe(self._on_adaptive, names="value")
        for name, slider in self.sliders.items():
            slider.observe(lambda change, name=name: self._on_slider(name, change["new"]), names="value")
        self.lmstudio.observe(self._on_lmstudio, names="value")
        self.url.observe(self._on_url, names="value")
        self.check_button.on_click(lambda _: self.check_lmstudio())

    def _layout(self) -> list:
        s = self.session
        header = W.HTML(f"<b>ATOM-GPT chat</b> &middot; run <code>{esc(s.run_name)}</code> "
                        f"(step {s.state.get('step', '?')}, {s.model.get_num_params() / 1e6:.2f}M "
                        f"parameters, {esc(s.device)})")
        return [W.HTML(CSS + APP_CSS), header, self.transcript,
                _row([self.input, self.send_button, self.stop_button, self.regen_button, self.clear_button]),
                _row([self.mode, self.adaptive, self.in_use]),
                _row(self.sliders.values()),
                _row([self.lmstudio, self.url, self.check_button, self.status]),
                self.info]

    def __repr__(self) -> str:  # the text/plain form (papermill, nbval): short, not the widget tree
        s = self.session
        return f"<ATOM-GPT chat app: run {s.run_name}, mode {s.mode}; open in JupyterLab to use it>"

    # --- actions ------------------------------------------------------------------------------

    def send(self, text: str | None = None) -> None:
        """Send `text`, or the box's draft (what Send does): a /command runs at once, a prompt starts
        a background generation. While an answer runs nothing is sent and the text stays in the box."""
        from_box = text is None
        text = (self.input.value if from_box else text) or ""
        if not text.strip():
            return
        if self.busy:
            if not self.input.value:  # Enter emptied the box: put the text back
                self.input.value = text
            self.info.value = grey("still answering: your text is kept; send it when the answer ends, "
                                   "or press Stop", "#c60")
            return
        if from_box:
            self.input.value = ""
        if text.lstrip().startswith("/"):
            self._command(text.strip())
            return
        self._start(text, lambda on_token, on_event: self.session.send(text, on_token=on_token, on_event=on_event))

    def regenerate(self) -> None:
        """A new answer to the last prompt, in place of the last one (what Regenerate does)."""
        last = self.session.history.last_prompt()
        if self.busy or last is None:
            return
        self._cut = len(self.session.history) - 2
        self._start(last.text, lambda on_token, on_event: self.session.regenerate(on_token=on_token, on_event=on_event),
                    mode=last.mode)

    def stop(self) -> None:
        self.session.stop()

    def clear(self) -> None:
        if self.busy:
            self.session.stop()
            self.wait(10)
        self.session.send("/clear")
        with self._lock:
            self._log.clear()
        self.info.value = ""
        self._set_busy(False)
        self.render()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running generation ends (for scripts and tests); True when idle."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not (t is not None and t.is_alive())

    @property
    def busy(self) -> bool:
        return self._live is not None

    def check_lmstudio(self) -> None:
        self.status.value = grey("\u25cf checking...")
        self.session.enhancer.check()
        self._update_status()

    # --- generation thread ------------------------------------------------------------------------

    def _start(self, user: str, call, mode: str | None = None) -> None:
        self._live = Live(user, mode or self.session.mode)
        self._set_busy(True)
        self.info.value = grey("generating...")
        self.render()
        self._thread = threading.Thread(target=self._generate, args=(self._live, call), name="atom-chat",
                                        daemon=True)
        self._thread.start()

    def _generate(self, live: Live, call) -> None:
        def on_token(piece):
            live.raw += piece
            self.render_live()

        def on_event(name, data):
            if name == "answer":
                live.answer = data
            elif name == "enhance_start":
                live.enh_on = True
            elif name == "enhance_token":
                live.enh += data
            self.render_live(force=name != "enhance_token")

        try:
            reply = call(on_token, on_event)
            took = ([f"{reply.meta.get('kind') or reply.kind}, {reply.meta['seconds']:.1f} s"]
                    if reply.meta.get("seconds") is not None else [])
            self.info.value = grey("; ".join(took + reply.notes))
        except Exception as e:  # show it in the app: a widget callback's traceback is easy to miss
            with self._lock:
                self._log.append(LogEntry("error", f"error: {type(e).__name__}: {e}", len(self.session.history)))
            self.info.value = grey(f"{type(e).__name__}: {e}", "#f96")
        finally:
            with self._lock:
                self._live, self._cut = None, None
            self._set_busy(False)
            self._update_status()
            self.render()

    def _command(self, line: str) -> None:
        parts = line.split(None, 1)
        if find(parts[0]) is find("retry") and len(parts) == 1 and self.session.history.last_prompt():
            self.regenerate()  # streams in the background, as the button does
            return
        reply = self.session.send(line)
        with self._lock:
            if reply.kind == "clear":
                self._log.clear()
            else:
                self._log.append(LogEntry(reply.kind, reply.text, len(self.session.history), cmd=line))
        self._set_busy(False)
        self._update_status()
        self.render()

    def _set_busy(self, busy: bool) -> None:
        self.input.busy = busy
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy
        self.regen_button.disabled = busy or self.session.history.last_prompt() is None

    # --- the controls follow the session --------------------------------------------------------------

    def _session_changed(self) -> None:
        """A session listener: the controls follow every change; the transcript follows the turns
        added, replaced or cleared elsewhere (the app's own answers redraw it as they stream, and a
        slider moved redraws no transcript)."""
        self.refresh_controls()
        if not self.busy and self._shown != self.session.history.state():
            self.render()

    def refresh_controls(self) -> None:
        """Show the settings in use in every control (a session listener: runs after each change)."""
        if self._holding:
            return
        s = self.session
        used = s.effective()
        self._syncing = True
        try:
            if self.mode.value != s.mode:
                self.mode.value = s.mode
            for name, slider in self.sliders.items():
                if used.get(name) is not None:
                    slider.value = used[name]
                (slider.add_class if getattr(s.settings, name) is None else slider.remove_class)("atom-auto")
            self.adaptive.value = all(getattr(s.settings, n) is None for n in self._auto)
            self.lmstudio.value = s.enhance_on
            self.url.value = s.enhancer.url_override or ""
            self.url.placeholder = " or ".join(s.enhancer.urls)
        finally:
            self._syncing = False
        auto = any(getattr(s.settings, n) is None for n in self._auto)
        self.in_use.value = grey(f"grey values: the {used['kind']} preset (each prompt kind uses its own)" if auto
                                 else "every value fixed by you")
        self._update_status()

    def _on_mode(self, change) -> None:
        if not self._syncing:
            self._report(self.session.send(MODE_COMMANDS[change["new"]]))

    def _on_slider(self, name: str, value) -> None:
        if not self._syncing:
            self._report(self.session.set(name, value))

    def _on_adaptive(self, change) -> None:
        if self._syncing:
            return
        self._holding = True  # fix or free the preset-decided values together, then redraw once
        try:
            for name in self._auto:
                self.session.set(name, None if change["new"] else self.sliders[name].value)
        finally:
            self._holding = False
        self.refresh_controls()

    def _on_lmstudio(self, change) -> None:
        if not self._syncing:
            self._report(self.session.send("/enhance " + ("on" if change["new"] else "off")))

    def _on_url(self, change) -> None:
        if self._syncing:
            return
        self.session.enhancer.set_url(change["new"].strip() or None)
        self.url.placeholder = " or ".join(self.session.enhancer.urls)
        if self.lmstudio.value:
            self.check_lmstudio()
        else:
            self._update_status()

    def _report(self, reply) -> None:
        """A control's change went through the session like a typed command: show its answer below."""
        self.info.value = grey(reply.text, "#f96" if reply.kind == "error" else "#888")

    def _update_status(self) -> None:
        h = self.session.enhancer.health
        if h.ok:
            color, text = "#4c4", f"{h.model} at {h.url}"
        elif h.reason == "not checked yet":
            color, text = "#888", "not checked"
        else:
            color, text = "#d44", f"offline: {h.reason}"
        state = "on" if self.session.enhance_on else "off"
        self.status.value = (f"<span style='color:{color}' title='{esc(text)}'>&#9679;</span> "
                             f"<span style='color:#888' title='{esc(text)}'>{state}; {esc(text)}</span>")

    # --- transcript -------------------------------------------------------------------------------------

    def transcript_text(self) -> str:
        """The transcript as plain text (what the HTML shows, without markup)."""
        return plain_text(self.past.value, self.live.value)

    def render(self) -> None:
        """Redraw the whole transcript: the finished turns and the exchange being generated."""
        with self._lock:
            hist = self.session.history
            self.past.value = past_html(hist if self._cut is None else hist[:self._cut], self._log)
            self._shown = hist.state()
            self.render_live(force=True)

    def render_live(self, force: bool = False) -> None:
        """Redraw only the exchange being generated (at most every 50 ms unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_render < 0.05:
            return
        with self._lock:
            self._last_render = now
            self.live.value = live_html(self._live)


def build_chat_app(run=None, lmstudio_url: str | None = None, *, device: str = "auto", mode: str = "chat",
                   enhance: bool = False, seed: int | None = None, session: ChatSession | None = None) -> ChatApp:
    """The chat app on a run (default: the newest under outputs/runs/), ready to display."""
    if session is None:
        session = ChatSession.from_run(resolve_run(run), device=device, mode=mode, enhance=enhance,
                                       lmstudio_url=lmstudio_url, seed=seed, surface="widget")
    return ChatApp(session, lmstudio_url=lmstudio_url)
