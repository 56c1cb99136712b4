"""The notebook chat's text box: Enter sends, Shift+Enter adds a line, leaving it sends nothing.

ipywidgets' Text and Textarea report only their value, so Python cannot tell Enter from
Shift+Enter, and a Text with continuous_update=False "sends" whenever it loses focus. This is a
small anywidget instead: a growing textarea whose few lines of JavaScript decide what a key does,
as in LM Studio's or a Gradio chat:

    Enter           send the text (the box empties; the text goes to `on_submit` callbacks)
    Shift+Enter     a new line in the box
    while busy      Enter sends nothing and the draft stays, to be sent when the answer ends

The draft is mirrored into `value` as it is typed, so a Send button can read it. Without a
browser (papermill, nbval, tests) `submit()` does what Enter does.
"""

from __future__ import annotations

import anywidget
import traitlets
from ipywidgets import CallbackDispatcher

ESM = r"""
function render({ model, el }) {
  const box = document.createElement("textarea");
  box.className = "atom-prompt";
  box.rows = 2;
  box.spellcheck = false;
  const fit = () => {  // grow with the text up to a few lines, then scroll inside
    box.style.height = "auto";
    box.style.height = Math.min(box.scrollHeight + 2, 180) + "px";
  };
  const show = () => {
    if (box.value !== model.get("value")) { box.value = model.get("value"); fit(); }
  };
  const sync = () => { model.set("value", box.value); model.save_changes(); };
  box.placeholder = model.get("placeholder");
  box.value = model.get("value");
  el.classList.toggle("atom-busy", model.get("busy"));
  box.addEventListener("input", () => { sync(); fit(); });
  box.addEventListener("keydown", (e) => {
    // the notebook must not see the keys typed here (Shift+Enter would run the cell)
    if (e.key === "Enter" || !(e.ctrlKey || e.metaKey)) e.stopPropagation();
    if (e.key !== "Enter" || e.shiftKey || e.isComposing || e.keyCode === 229) return;
    e.preventDefault();
    if (model.get("busy") || !box.value.trim()) return;  // kept until the answer ends
    const text = box.value;
    box.value = "";
    fit();
    sync();
    model.send({ event: "submit", text });
  });
  model.on("change:value", show);
  model.on("change:placeholder", () => { box.placeholder = model.get("placeholder"); });
  model.on("change:busy", () => el.classList.toggle("atom-busy", model.get("busy")));
  el.classList.add("atom-prompt-box");
  el.appendChild(box);
  fit();
}
export default { render };
"""

CSS = """
.atom-prompt-box {flex: 1 1 auto; min-width: 0; display: flex;}
.atom-prompt {flex: 1 1 auto; width: 100%; min-width: 0; box-sizing: border-box; resize: none;
  font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; line-height: 1.4;
  padding: 5px 8px; border: 1px solid var(--jp-border-color1, #999); border-radius: 4px;
  background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #000);}
.atom-prompt:focus {outline: none; border-color: var(--jp-brand-color1, #1976d2);}
.atom-busy .atom-prompt {border-style: dashed;}
"""


class PromptBox(anywidget.AnyWidget):
    """A multi-line prompt box. `on_submit(callback)` hears each text that Enter sends."""

    _esm = ESM
    _css = CSS
    value = traitlets.Unicode("").tag(sync=True)  # the draft, as typed
    placeholder = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)  # Enter sends nothing while an answer runs

    def __init__(self, **kw):
        super().__init__(**kw)
        self._submit = CallbackDispatcher()
        self.on_msg(self._on_msg)

    def on_submit(self, callback, remove: bool = False) -> None:
        """Call callback(text) for each text the box sends."""
        self._submit.register_callback(callback, remove=remove)

    def submit(self) -> None:
        """What Enter does: send the draft unless an answer runs or it is blank."""
        text = self.value
        if self.busy or not text.strip():
            return
        self.value = ""
        self._submit(text)

    def _on_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            self._submit(str(content.get("text", "")))

    def __repr__(self) -> str:
        return f"<PromptBox {len(self.value)} characters>"
