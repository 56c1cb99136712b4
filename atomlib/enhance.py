"""Optional rewrite of chat answers by a local LLM behind an OpenAI-compatible API.

LM Studio, llama.cpp's server, Ollama and vLLM all speak the same two endpoints:
`GET /v1/models` (health check, which model is loaded) and `POST /v1/chat/completions`
(the rewrite, optionally streamed as server-sent events). The small GPT writes the answer;
the local LLM is asked to make it clearer while keeping its dark/metal theme. A rewrite is
only used when it passes `validate_rewrite` (not empty, no refusal or meta-commentary,
length within bounds, theme kept); otherwise, and whenever the server is down, slow or
answers garbage, the model's own text stands and the result says why.

Where the server is (first that is set wins):
  1. an explicit URL (`atom chat --lmstudio-url`, the widget's URL field, `/lmstudio url`),
  2. the environment variable ATOM_LMSTUDIO_URL,
  3. `lmstudio_url` in the chat config file (ATOM_CHAT_CONFIG, else ~/.config/atom/chat.yaml),
  4. http://localhost:1234/v1 (LM Studio's default), then http://localhost:8080/v1
     (the port the original ATOM-GPT documented).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

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
META_PATTERNS = [
    r"^\s*(?:sure|certainly|of course|okay|ok)\b[,!.]", r"^\s*here(?:'s| is| are)\b",
    r"\b(?:re-?written|enhanced|improved|revised|edited) (?:version|text|lyrics)\b",
    r"^\s*(?:rewritten|enhanced|revised|improved|edited)\s*(?:text|version|lyrics)?\s*:",
    r"\bi (?:have |'ve )?(?:rewritten|enhanced|improved|revised|edited|changed)\b",
    r"\b(?:let me know|hope this helps|feel free)\b", r"\bnote:",
]
_REFUSAL = [re.compile(p, re.I) for p in REFUSAL_PATTERNS]
_META = [re.compile(p, re.I | re.M) for p in META_PATTERNS]
_WORD = re.compile(r"[a-z]+")
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)


def load_chat_config(path: str | Path | None = None) -> dict:
    """Settings from the chat config file (YAML or JSON mapping), {} when there is none.

    Keys used here: lmstudio_url, lmstudio_model, instruction, connect_timeout, read_timeout, stream."""
    path = Path(path or os.environ.get(ENV_CONFIG) or Path.home() / ".config" / "atom" / "chat.yaml")
    if not path.is_file():
        return {}
    import yaml

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


@dataclass
class Health:
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
class EnhanceResult:
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
    if not rewrite or not rewrite.strip():
        return "the rewrite was empty"
    low = rewrite.strip()
    for rx in _REFUSAL:
        if rx.search(low):
            return "the rewrite was a refusal"
    for rx in _META:
        if rx.search(low):
            return "the rewrite contained meta-commentary"
    n, m = len(original.strip()), len(low)
    if m > max_ratio * n + slack:
        return f"the rewrite was too long ({m} characters for {n})"
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
        self.session = requests.Session()
        self.session.trust_env = False  # local servers: never route them through an HTTP proxy

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
                r = self.session.get(f"{url}/models", timeout=(self.connect_timeout, self.connect_timeout + 1))
            except requests.Timeout:
                reasons.append(f"{url} timed out")
                continue
            except requests.RequestException as e:
                reasons.append(f"{url} unreachable ({_short(e)})")
                continue
            if r.status_code != 200:
                reasons.append(f"{url}/models answered HTTP {r.status_code}")
                continue
            try:
                entries = r.json().get("data")
                ids = [str(e["id"]) for e in entries if isinstance(e, dict) and e.get("id")]
            except (ValueError, AttributeError, TypeError, KeyError):
                reasons.append(f"{url}/models did not answer an OpenAI model list")
                continue
            loaded = [str(e["id"]) for e in entries if isinstance(e, dict) and e.get("state") == "loaded"]
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

        With streaming on, on_token(piece) sees the rewrite as it arrives (before it is validated);
        should_stop() is polled between pieces. Returns within about connect_timeout +
        read_timeout seconds whatever the server does."""
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
        url = f"{self.health.url}/chat/completions"
        try:
            # always read the body ourselves, so a server that trickles bytes still ends at the deadline
            r = self.session.post(url, json=body, timeout=(self.connect_timeout, self.read_timeout), stream=True)
        except requests.Timeout:
            return skip(f"the server did not answer within {self.read_timeout:g} s")
        except requests.RequestException as e:
            self.health = Health(False, reason=f"{self.health.url} unreachable ({_short(e)})")
            return skip(f"the server went away ({_short(e)})")
        try:
            if r.status_code != 200:
                return skip(f"the server answered HTTP {r.status_code}{_error_detail(r)}")
            if "text/event-stream" in r.headers.get("Content-Type", ""):
                rewrite, stopped = self._read_stream(r, t0, on_token if self.stream else None, should_stop)
                if stopped:
                    return skip("stopped")
            else:
                raw = self._read_body(r, t0)
                rewrite = _message_content(json.loads(raw))  # not streamed: nothing is shown before validation
        except _Deadline:
            return skip(f"the server did not finish within {self.read_timeout:g} s")
        except requests.Timeout:
            return skip(f"the server did not answer within {self.read_timeout:g} s")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return skip("the server answered malformed JSON")
        except requests.RequestException as e:
            return skip(f"the connection broke ({_short(e)})")
        finally:
            r.close()
        rewrite = clean_rewrite(rewrite)
        reason = validate_rewrite(text, rewrite)
        if reason:
            return skip(f"{reason}; kept the original", rewrite)
        return EnhanceResult(rewrite, text, True, None, rewrite, self.health.model, self.health.url,
                             time.monotonic() - t0)

    def _read_body(self, r, t0) -> bytes:
        chunks = []
        for chunk in r.iter_content(chunk_size=8192):
            chunks.append(chunk)
            if time.monotonic() - t0 > self.connect_timeout + self.read_timeout:
                raise _Deadline()
        return b"".join(chunks)

    def _read_stream(self, r, t0, on_token, should_stop) -> tuple[str, bool]:
        parts = []
        for raw in r.iter_lines(decode_unicode=False):
            if should_stop and should_stop():
                return "".join(parts), True
            if time.monotonic() - t0 > self.connect_timeout + self.read_timeout:
                raise _Deadline()
            line = raw.decode("utf-8", "replace").strip() if raw else ""
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choice = json.loads(data)["choices"][0]
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                parts.append(piece)
                if on_token:
                    on_token(piece)
        return "".join(parts), False

    def status(self) -> dict:
        return {"available": self.health.ok, "url": self.health.url, "model": self.health.model,
                "models": list(self.health.models), "reason": self.health.reason, "candidates": self.urls,
                "custom_instruction": self.custom_instruction, "instruction": self.instruction,
                "stream": self.stream, "timeouts": (self.connect_timeout, self.read_timeout)}


class _Deadline(Exception):
    pass


def _message_content(payload) -> str:
    content = payload["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError("content is not text")
    return content


def _error_detail(r) -> str:
    try:
        err = r.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return f" ({str(msg)[:80]})" if msg else ""
    except (ValueError, AttributeError):
        return ""


def _short(e: Exception) -> str:
    text = str(e)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return type(e).__name__
