"""Optional rewrite of chat answers by a local LLM behind an OpenAI-compatible API.

LM Studio, llama.cpp's server, Ollama and vLLM all speak the same two endpoints:
`GET /v1/models` (health check, which model is loaded) and `POST /v1/chat/completions`
(the rewrite, optionally streamed as server-sent events). The small GPT writes the answer;
the local LLM is asked to make it clearer while keeping its dark/metal theme. A rewrite is
only used when it passes `validate_rewrite` (not empty, no refusal or meta-commentary,
length within bounds, theme kept); otherwise, and whenever the server is down, slow or
answers garbage, the model's own text stands and the result says why.

The server is not trusted: the HTTP client (atomlib.apps.llm_client) bounds every request by
one deadline and 1 MiB, follows no redirect and refuses absurd JSON; here, control characters
are stripped from the rewrite and the reasons, and a streamed rewrite is collected whole and
validated before any of it reaches on_token. Whatever the server does, enhance() returns an
EnhanceResult and check() a Health: no exception, no hang.

Where the server is (first that is set wins):
  1. an explicit URL (`atom chat --lmstudio-url`, the widget's URL field, `/lmstudio url`),
  2. the environment variable ATOM_LMSTUDIO_URL,
  3. `lmstudio_url` in the chat config file (ATOM_CHAT_CONFIG, else ~/.config/atom/chat.yaml),
  4. http://localhost:1234/v1 (LM Studio's default), then http://localhost:8080/v1
     (the port the original ATOM-GPT documented).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from atomlib.apps.llm_client import ServerError, chat_completion, list_models
from atomlib.untrusted import one_line, strip_controls

DEFAULT_URLS = ("http://localhost:1234/v1", "http://localhost:8080/v1")
ENV_URL = "ATOM_LMSTUDIO_URL"
ENV_CONFIG = "ATOM_CHAT_CONFIG"

DEFAULT_INSTRUCTION = (
    "You are an editor of metal lyrics and dark poetry. Rewrite the text the user gives you so it "
    "reads clearly: fix grammar, finish broken phrases and smooth the flow, without changing its "
    "meaning. Keep its dark, metal and gothic imagery and its lyrical style, and keep roughly the "
    "same length. Answer with the rewritten text only: no title, no quotes, no explanation, no "
    "comments about the task."
)

# Words that mark the dark/metal theme; a rewrite of a text that has some must keep some.
THEME_WORDS = frozenset("""
abyss ash ashes blood bleed bleeding bone bones burn burning burns chaos cold cross crypt curse cursed
damned dark darkness dawn dead death decay demon demons despair doom dread dream dreams dust dying
end evil fall fallen fear fire flame flames frost funeral ghost ghosts god gods grave graves grief hate
hell hollow horror ice iron kill king kings lord lost mist moon mortal night nightmare pain plague rage
rain raven reaper rot ruin sacrifice scream shadow shadows silence sin sins skull sky sorrow soul souls
spirit steel stone storm storms sword tears thunder throne tomb tombs void war winter witch wolf wolves
wound wrath
""".split())

REFUSAL_PATTERNS = [
    r"\bas an ai\b", r"\bas a language model\b", r"\bi(?:'m| am) (?:sorry|unable|not able)\b",
    r"\bi (?:can(?:'|no)t|cannot|won't|will not) (?:help|assist|comply|do that|provide|rewrite|create)\b",
    r"\bi apologi[sz]e\b", r"\bcontent policy\b",
]
# [ \t]* rather than \s*, and never two runs of it side by side: either would let a rewrite of
# blank lines or spaces cost quadratic time.
META_PATTERNS = [
    r"^[ \t]*(?:sure|certainly|of course|okay|ok)\b[,!.]", r"^[ \t]*here(?:'s| is| are)\b",
    r"\b(?:re-?written|enhanced|improved|revised|edited) (?:version|text|lyrics)\b",
    r"^[ \t]*(?:rewritten|enhanced|revised|improved|edited)[ \t]*(?:(?:text|version|lyrics)[ \t]*)?:",
    r"\bi (?:have |'ve )?(?:rewritten|enhanced|improved|revised|edited|changed)\b",
    r"\b(?:let me know|hope this helps|feel free)\b", r"\bnote:",
]
_REFUSAL = [re.compile(p, re.I) for p in REFUSAL_PATTERNS]
_META = [re.compile(p, re.I | re.M) for p in META_PATTERNS]
_WORD = re.compile(r"[a-z]+")
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)


def load_chat_config(path: str | Path | None = None) -> dict:
    """Settings from the chat config file (YAML or JSON mapping), {} when there is none.

    Keys used here: lmstudio_url, lmstudio_model, instruction, connect_timeout, read_timeout (the
    whole rewrite request's limit, connect included), stream."""
    path = Path(path or os.environ.get(ENV_CONFIG) or Path.home() / ".config" / "atom" / "chat.yaml")
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def candidate_urls(url: str | None = None, config: dict | None = None) -> list[str]:
    """Base URLs to try, in order (see the module docstring for the precedence)."""
    config = load_chat_config() if config is None else config
    for chosen in (url, os.environ.get(ENV_URL), config.get("lmstudio_url")):
        if chosen and str(chosen).strip():
            return [normalize_url(str(chosen))]
    return list(DEFAULT_URLS)


def normalize_url(url: str) -> str:
    """'localhost:1234' -> 'http://localhost:1234/v1'; a trailing /v1 is added when no path is given."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url, re.I):
        url = "http://" + url
    path = url.partition("://")[2].partition("/")[2]
    if not path:
        url += "/v1"
    return url


class _OneLineReason:
    """A result whose `reason` may quote a server: kept as one line without control characters."""

    def __post_init__(self):
        self.reason = one_line(self.reason)


@dataclass
class Health(_OneLineReason):
    ok: bool
    url: str | None = None
    models: list[str] = field(default_factory=list)
    model: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"connected to {self.url} (model {self.model})"
        return f"not connected: {self.reason}"


@dataclass
class EnhanceResult(_OneLineReason):
    text: str  # what the chat shows: the rewrite when applied, else the original
    original: str
    applied: bool
    reason: str | None = None  # why it was skipped or rejected (None when applied)
    rewrite: str | None = None  # the server's raw answer, when there was one
    model: str | None = None
    url: str | None = None
    seconds: float = 0.0

    def note(self) -> str:
        if self.applied:
            return f"enhanced by {self.model}"
        return f"enhancement skipped: {self.reason}"


def theme_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w in THEME_WORDS}


def clean_rewrite(text: str) -> str:
    """Drop reasoning blocks (<think>...</think>), code fences and quotes wrapped around the whole answer."""
    text = _THINK.sub("", text or "").strip()
    fence = re.fullmatch(r"```[a-z]*\n(.*?)\n?```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    for open_, close in (('"', '"'), ("\u201c", "\u201d"), ("'", "'")):
        inner = text[1:-1]
        if len(text) > 2 and text[0] == open_ and text[-1] == close and open_ not in inner and close not in inner:
            text = inner.strip()
    return text


def validate_rewrite(original: str, rewrite: str, min_ratio: float = 0.3, max_ratio: float = 3.0,
                     slack: int = 40) -> str | None:
    """None when the rewrite may replace the original, else the reason it may not."""
    low = (rewrite or "").strip()
    if not low:
        return "the rewrite was empty"
    n, m = len(original.strip()), len(low)
    if m > max_ratio * n + slack:  # first: it costs nothing, the patterns below cost time on a long text
        return f"the rewrite was too long ({m} characters for {n})"
    for rx in _REFUSAL:
        if rx.search(low):
            return "the rewrite was a refusal"
    for rx in _META:
        if rx.search(low):
            return "the rewrite contained meta-commentary"
    if m < min_ratio * n - slack / 4:
        return f"the rewrite was too short ({m} characters for {n})"
    kept = theme_words(original)
    if kept and not theme_words(low):
        return "the rewrite lost the dark/metal theme words (" + ", ".join(sorted(kept)[:4]) + ")"
    return None


class Enhancer:
    """Client of one OpenAI-compatible server. Never raises on server trouble: `check()` returns
    a Health, `enhance()` an EnhanceResult that falls back to the original text."""

    def __init__(self, url: str | None = None, model: str | None = None, instruction: str | None = None,
                 connect_timeout: float | None = None, read_timeout: float | None = None,
                 stream: bool | None = None, config: dict | None = None, temperature: float = 0.7):
        cfg = load_chat_config() if config is None else config
        self.config = cfg
        self.url_override = url
        self.requested_model = model or cfg.get("lmstudio_model")
        self.instruction = instruction or cfg.get("instruction") or DEFAULT_INSTRUCTION
        self.connect_timeout = float(connect_timeout or cfg.get("connect_timeout") or 2.0)
        self.read_timeout = float(read_timeout or cfg.get("read_timeout") or 30.0)
        self.stream = bool(cfg.get("stream", False) if stream is None else stream)
        self.temperature = temperature
        self.health = Health(False, reason="not checked yet")

    # --- configuration ---------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return candidate_urls(self.url_override, self.config)

    def set_url(self, url: str | None) -> None:
        self.url_override = url or None
        self.health = Health(False, reason="not checked yet")

    def set_instruction(self, text: str | None) -> None:
        self.instruction = (text or "").strip() or DEFAULT_INSTRUCTION

    @property
    def custom_instruction(self) -> bool:
        return self.instruction != DEFAULT_INSTRUCTION

    @property
    def available(self) -> bool:
        return self.health.ok

    # --- health check ----------------------------------------------------------------------

    def check(self) -> Health:
        """Ask each candidate URL for /models; the first that answers with a model list wins."""
        reasons = []
        for url in self.urls:
            try:
                ids, loaded = list_models(url, self.connect_timeout)
            except ServerError as e:
                reasons.append(f"{url}/models {e}")
                continue
            if self.requested_model:
                model = self.requested_model
            elif loaded or ids:
                model = (loaded or ids)[0]
            else:
                reasons.append(f"{url} has no model loaded (load one in LM Studio)")
                continue
            self.health = Health(True, url=url, models=ids, model=model)
            return self.health
        self.health = Health(False, reason="; ".join(reasons) or "no URL to try")
        return self.health

    # --- rewrite -----------------------------------------------------------------------------

    def messages(self, prompt: str, text: str) -> list[dict]:
        user = f"The listener said: {prompt.strip()}\n\nRewrite this answer:\n{text.strip()}" if prompt.strip() \
            else f"Rewrite this text:\n{text.strip()}"
        return [{"role": "system", "content": self.instruction}, {"role": "user", "content": user}]

    def enhance(self, prompt: str, text: str, on_token: Callable[[str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> EnhanceResult:
        """The rewrite of `text` (an answer to `prompt`) when the server gives a valid one, else `text`.

        With streaming on, the rewrite is still read whole and validated first; then on_token(rewrite)
        gets it once, so nothing unvalidated is ever shown. should_stop() is polled between streamed
        pieces. Returns within read_timeout seconds whatever the server does (plus the health check,
        connect_timeout + 1 s per candidate URL, when no server was found yet)."""
        t0 = time.monotonic()

        def skip(reason, rewrite=None):
            return EnhanceResult(text, text, False, reason, rewrite, self.health.model, self.health.url,
                                 time.monotonic() - t0)

        if not text.strip():
            return skip("there was no text to rewrite")
        if not self.health.ok and not self.check().ok:
            return skip(f"no server ({self.health.reason})")
        body = {"model": self.health.model, "messages": self.messages(prompt, text), "temperature": self.temperature,
                "max_tokens": max(64, min(2048, len(text))), "stream": bool(self.stream)}
        try:
            rewrite = chat_completion(self.health.url, body, self.read_timeout, self.connect_timeout, should_stop)
        except ServerError as e:
            result = skip(f"the server {e}")
            if e.gone:  # look for a server again next time
                self.health = Health(False, reason=f"{self.health.url} {e}")
            return result
        if rewrite is None:
            return skip("stopped")
        rewrite = clean_rewrite(strip_controls(rewrite))
        reason = validate_rewrite(text, rewrite)
        if reason:
            return skip(f"{reason}; kept the original", rewrite)
        if on_token and self.stream:
            on_token(rewrite)
        return EnhanceResult(rewrite, text, True, None, rewrite, self.health.model, self.health.url,
                             time.monotonic() - t0)

    def status(self) -> dict:
        return {"available": self.health.ok, "url": self.health.url, "model": self.health.model,
                "models": list(self.health.models), "reason": self.health.reason, "candidates": self.urls,
                "custom_instruction": self.custom_instruction, "instruction": self.instruction,
                "stream": self.stream, "timeouts": (self.connect_timeout, self.read_timeout)}
