"""The notebook chat: an ipywidgets front end over the same ChatSession as `atom chat`.

    app = build_chat_app(run, lmstudio_url)   # one call; the app is a widget, display it or leave it last

A transcript (HTML), a text box (Enter sends) with Send, chat/completion toggle, temperature
and max-token sliders (with "adaptive" = each prompt kind's preset), LM Studio on/off with a
URL field and a status light, Stop and Clear. Answers are generated in a background thread and
stream into the transcript; Stop sets the session's stop flag. Slash commands typed in the box
work as in the terminal (/temp 0.5, /save chat.md, ...).
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as W

from atomlib.apps.chat import ChatSession
from atomlib.paths import resolve_run

CSS = """
<style>
.atom-chat {background:#111; color:#ddd; font-family: ui-monospace, Menlo, Consolas, monospace; font-size:13px;
  border:1px solid #333; border-radius:6px; padding:8px; height:360px; overflow-y:auto; line-height:1.45;
  display:flex; flex-direction:column-reverse;}
.atom-chat .msg {margin:4px 0; white-space:pre-wrap; word-break:break-word;}
.atom-chat .you {color:#9cf;}
.atom-chat .atom {color:#eee;}
.atom-chat .raw {color:#888;}
.atom-chat .enh {color:#fc6;}
.atom-chat .cmd {color:#aaa; font-style:italic;}
.atom-chat .err {color:#f96;}
.atom-chat .note {color:#777; font-size:11px;}
.atom-chat .who {font-weight:bold; margin-right:6px;}
.atom-chat .hint {color:#666;}
</style>
"""


def _esc(text: str) -> str:
    return html.escape(text or "")


class ChatApp(W.VBox):
    """The widget app. Attributes are the controls, so tests (and users) can drive it."""

    def __init__(self, session: ChatSession, lmstudio_url: str | None = None, **kw):
        self.session = session
        if lmstudio_url:
            session.enhancer.set_url(lmstudio_url)
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._pending: dict | None = None  # the exchange being generated
        self._log: list[dict] = []  # command results shown between exchanges
        self._last_render = 0.0

        self.transcript = W.HTML(layout=W.Layout(width="100%"))
        self.input = W.Text(placeholder="Type a prompt or /help, then Enter", continuous_update=False,
                            layout=W.Layout(flex="1 1 auto", width="auto"))
        self.send_button = W.Button(description="Send", button_style="danger", icon="paper-plane",
                                    layout=W.Layout(width="90px"))
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True, layout=W.Layout(width="80px"))
        self.clear_button = W.Button(description="Clear", icon="trash", layout=W.Layout(width="80px"))
        self.mode = W.ToggleButtons(options=[("chat", "chat"), ("completion", "completion")], value=session.mode,
                                    tooltips=["adaptive answer, filtered", "best-of-N completion of a line"],
                                    style={"button_width": "100px"})
        self.adaptive = W.Checkbox(value=session.settings.temperature is None, description="adaptive presets",
                                   indent=False, layout=W.Layout(width="140px"))
        self.temperature = W.FloatSlider(value=session.settings.temperature or 0.8, min=0.05, max=2.0, step=0.05,
                                         description="temperature", continuous_update=False, readout_format=".2f",
                                         style={"description_width": "90px"})
        self.max_tokens = W.IntSlider(value=session.settings.max_new_tokens or 120, min=8, max=1000, step=8,
                                      description="max tokens", continuous_update=False,
                                      style={"description_width": "90px"})
        self.lmstudio = W.ToggleButton(value=session.enhance_on, description="LM Studio", icon="magic",
                                       tooltip="rewrite answers through a local OpenAI-compatible server")
        self.url = W.Text(value=lmstudio_url or session.enhancer.url_override or "",
                          placeholder=" or ".join(session.enhancer.urls), continuous_update=False,
                          layout=W.Layout(width="260px"))
        self.check_button = W.Button(description="Check", icon="refresh", layout=W.Layout(width="80px"))
        self.status = W.HTML()
        self.info = W.HTML()

        self.input.observe(self._on_enter, names="value")
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.mode.observe(self._on_mode, names="value")
        self.adaptive.observe(self._on_sampling, names="value")
        self.temperature.observe(self._on_slider, names="value")
        self.max_tokens.observe(self._on_slider, names="value")
        self.lmstudio.observe(self._on_lmstudio, names="value")
        self.url.observe(self._on_url, names="value")
        self.check_button.on_click(lambda _: self.check_lmstudio())

        header = W.HTML(f"<b>ATOM-GPT chat</b> &middot; run <code>{_esc(session.run_name)}</code> "
                        f"(step {session.state.get('step', '?')}, {session.model.get_num_params() / 1e6:.2f}M "
                        f"parameters, {_esc(session.device)})")
        row_in = W.HBox([self.input, self.send_button, self.stop_button, self.clear_button])
        row_mode = W.HBox([self.mode, self.adaptive, self.temperature, self.max_tokens], layout=W.Layout(flex_flow="row wrap"))
        row_lm = W.HBox([self.lmstudio, self.url, self.check_button, self.status])
        super().__init__([header, self.transcript, row_in, row_mode, row_lm, self.info], **kw)
        self._update_status()
        self.render(force=True)

    def __repr__(self) -> str:  # the text/plain form (papermill, nbval): short, not the widget tree
        return f"<ATOM-GPT chat app: run {self.session.run_name}, mode {self.session.mode}; open in JupyterLab to use it>"

    # --- actions ------------------------------------------------------------------------------

    def send(self, text: str | None = None) -> None:
        """Send the text box's content (or `text`): a prompt starts a background generation."""
        if text is None:
            text = self.input.value
            self._set_input("")
        text = text or ""
        if not text.strip():
            return
        if self.busy:
            self.info.value = "<span style='color:#c60'>still answering; press Stop first</span>"
            return
        if text.lstrip().startswith("/"):
            self._command(text.strip())
            return
        self._pending = {"user": text, "mode": self.session.mode, "raw": "", "answer": None, "enh": "",
                         "enh_on": False, "notes": []}
        self.stop_button.disabled = False
        self.send_button.disabled = True
        self.info.value = "<span style='color:#888'>generating...</span>"
        self.render(force=True)
        self._thread = threading.Thread(target=self._generate, args=(text,), name="atom-chat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.session.stop()

    def clear(self) -> None:
        if self.busy:
            self.session.stop()
            self.wait(10)
        self.session.send("/clear")
        with self._lock:
            self._log.clear()
            self._pending = None
        self.info.value = ""
        self.render(force=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running generation ends (for scripts and tests); True when idle."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.busy

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def check_lmstudio(self) -> None:
        self.status.value = "<span style='color:#888'>&#9679; checking...</span>"
        self.session.enhancer.check()
        self._update_status()

    # --- generation thread ------------------------------------------------------------------------

    def _generate(self, text: str) -> None:
        p = self._pending

        def on_token(piece):
            p["raw"] += piece
            self.render()

        def on_event(name, data):
            if name == "answer":
                p["answer"] = data
                self.render(force=True)
            elif name == "enhance_start":
                p["enh_on"] = True
                self.render(force=True)
            elif name == "enhance_token":
                p["enh"] += data
                self.render()

        try:
            reply = self.session.send(text, on_token=on_token, on_event=on_event)
            info = "; ".join(reply.notes)
            if reply.meta.get("seconds") is not None:
                info = (f"{reply.meta.get('kind') or reply.kind}, {reply.meta['seconds']:.1f} s"
                        + (f"; {info}" if info else ""))
            self.info.value = f"<span style='color:#888'>{_esc(info)}</span>"
        except Exception as e:  # show it in the app: a widget callback's traceback is easy to miss
            with self._lock:
                self._log.append({"kind": "error", "text": f"error: {type(e).__name__}: {e}",
                                  "at": len(self.session.history)})
            self.info.value = f"<span style='color:#f96'>{_esc(type(e).__name__)}: {_esc(str(e))}</span>"
        finally:
            with self._lock:
                self._pending = None
            self.stop_button.disabled = True
            self.send_button.disabled = False
            self._update_status()
            self.render(force=True)

    def _command(self, line: str) -> None:
        reply = self.session.send(line)
        if reply.kind == "clear":
            with self._lock:
                self._log.clear()
        elif reply.kind == "quit":
            reply.text = "(there is nothing to quit in a notebook: just stop using the app)"
        if reply.kind != "clear":
            with self._lock:
                self._log.append({"kind": reply.kind, "cmd": line, "text": reply.text, "at": len(self.session.history)})
        self._sync_controls()
        self._update_status()
        self.render(force=True)

    # --- control callbacks --------------------------------------------------------------------------

    def _set_input(self, value: str) -> None:
        self.input.unobserve(self._on_enter, names="value")
        try:
            self.input.value = value
        finally:
            self.input.observe(self._on_enter, names="value")

    def _on_enter(self, change) -> None:
        if change["new"].strip():
            self.send()

    def _on_mode(self, change) -> None:
        self.session.mode = change["new"]

    def _on_sampling(self, change=None) -> None:
        s = self.session.settings
        if self.adaptive.value:
            s.temperature = s.max_new_tokens = None
        else:
            s.temperature = float(self.temperature.value)
            s.max_new_tokens = int(self.max_tokens.value)

    def _on_slider(self, change) -> None:
        if getattr(self, "_syncing", False):
            return
        if self.adaptive.value:
            self.adaptive.value = False  # moving a slider means "use this value"
        else:
            self._on_sampling()

    def _on_lmstudio(self, change) -> None:
        self.session.enhance_on = bool(change["new"])
        if change["new"]:
            self.check_lmstudio()
        else:
            self._update_status()

    def _on_url(self, change) -> None:
        self.session.enhancer.set_url(change["new"].strip() or None)
        self.url.placeholder = " or ".join(self.session.enhancer.urls)
        if self.lmstudio.value:
            self.check_lmstudio()
        else:
            self._update_status()

    def _sync_controls(self) -> None:
        """Reflect settings changed by typed commands (/temp, /chat, /enhance ...) in the controls."""
        s = self.session
        self._syncing = True
        try:
            if self.mode.value != s.mode:
                self.mode.value = s.mode
            if s.settings.temperature is not None:
                self.temperature.value = s.settings.temperature
            if s.settings.max_new_tokens is not None:
                self.max_tokens.value = max(self.max_tokens.min, min(self.max_tokens.max, s.settings.max_new_tokens))
            self.adaptive.unobserve(self._on_sampling, names="value")
            self.adaptive.value = s.settings.temperature is None and s.settings.max_new_tokens is None
            self.adaptive.observe(self._on_sampling, names="value")
            if self.lmstudio.value != s.enhance_on:
                self.lmstudio.unobserve(self._on_lmstudio, names="value")
                self.lmstudio.value = s.enhance_on
                self.lmstudio.observe(self._on_lmstudio, names="value")
        finally:
            self._syncing = False

    def _update_status(self) -> None:
        enh = self.session.enhancer
        h = enh.health
        if h.ok:
            color, text = "#4c4", f"{h.model} at {h.url}"
        elif h.reason == "not checked yet":
            color, text = "#888", "not checked"
        else:
            color, text = "#d44", f"offline: {h.reason}"
        state = "on" if self.session.enhance_on else "off"
        self.status.value = (f"<span style='color:{color}' title='{_esc(text)}'>&#9679;</span> "
                             f"<span style='color:#888'>{state}; {_esc(text[:90])}</span>")

    # --- transcript -------------------------------------------------------------------------------------

    def transcript_text(self) -> str:
        """The transcript as plain text (what the HTML shows, without markup)."""
        import re

        body = re.sub(r"<style>.*?</style>", "", self.transcript.value, flags=re.S)
        return html.unescape(re.sub(r"<[^>]+>", "", body.replace("</div>", "</div>\n"))).strip()

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_render < 0.05:
            return
        with self._lock:
            self._last_render = now
            self.transcript.value = CSS + "<div class='atom-chat'><div>" + self._html() + "</div></div>"

    def _html(self) -> str:
        parts = []
        hist = self.session.history
        log = sorted(self._log, key=lambda e: e["at"])
        li = 0

        def flush_log(upto):
            nonlocal li
            while li < len(log) and log[li]["at"] <= upto:
                e = log[li]
                cls = "err" if e["kind"] == "error" else "cmd"
                if e.get("cmd"):
                    parts.append(f"<div class='msg you'><span class='who'>you&gt;</span>{_esc(e['cmd'])}</div>")
                parts.append(f"<div class='msg {cls}'>{_esc(e['text'])}</div>")
                li += 1

        for i, t in enumerate(hist):
            flush_log(i)
            if t.role == "user":
                kind = f" <span class='note'>[{_esc(t.mode)}{', ' + _esc(t.meta['kind']) if t.meta.get('kind') else ''}]</span>"
                parts.append(f"<div class='msg you'><span class='who'>you&gt;</span>{_esc(t.text)}{kind}</div>")
            else:
                enh = t.meta.get("enhance") or {}
                if enh.get("applied"):
                    parts.append(f"<div class='msg atom'><span class='who'>atom&gt;</span>{_esc(t.meta.get('model_text', ''))}</div>")
                    parts.append(f"<div class='msg enh'><span class='who'>atom+&gt;</span>{_esc(t.text)}</div>")
                else:
                    parts.append(f"<div class='msg atom'><span class='who'>atom&gt;</span>{_esc(t.text or '(no text)')}</div>")
                if t.meta.get("notes"):
                    parts.append(f"<div class='msg note'>({_esc('; '.join(t.meta['notes']))})</div>")
        flush_log(len(hist))
        p = self._pending
        if p is not None:
            parts.append(f"<div class='msg you'><span class='who'>you&gt;</span>{_esc(p['user'])}</div>")
            if p["answer"] is None:
                parts.append(f"<div class='msg raw'><span class='who'>atom&gt;</span>{_esc(p['raw'])}\u2588</div>")
            else:
                parts.append(f"<div class='msg atom'><span class='who'>atom&gt;</span>{_esc(p['answer'])}</div>")
                if p["enh_on"]:
                    parts.append(f"<div class='msg enh'><span class='who'>atom+&gt;</span>{_esc(p['enh'])}\u2588</div>")
        if not parts:
            parts.append("<div class='msg hint'>Type a prompt below and press Enter or Send. "
                         "/help lists the commands.</div>")
        return "".join(parts)


def build_chat_app(run=None, lmstudio_url: str | None = None, *, device: str = "auto", mode: str = "chat",
                   enhance: bool = False, seed: int | None = None, session: ChatSession | None = None) -> ChatApp:
    """The chat app on a run (default: the newest under outputs/runs/), ready to display."""
    if session is None:
        session = ChatSession.from_run(resolve_run(run), device=device, mode=mode, enhance=enhance,
                                       lmstudio_url=lmstudio_url, seed=seed)
    return ChatApp(session, lmstudio_url=lmstudio_url)
