"""Optional rewrite of chat answers by a local LLM behind an OpenAI-compatible API.

LM Studio, llama.cpp's server, Ollama and vLLM all speak the same two endpoints:
`GET /v1/models` (health check, which model is loaded) and `POST /v1/chat/completions`
(the rewrite, optionally streamed as server-sent events). The small GPT writes the answer;
the local LLM is asked to make it clearer while keeping its dark/metal theme. A rewrite is
only used when it passes `validate_rewrite` (not empty, no refusal or meta-commentary,
length within bounds, theme kept); otherwise, and whenever the server is down, slow or
answers garbage, the model's own text stands and the result says why.

The server is not trusted (a URL can point anywhere, and a broken server is not rare), so:
  - each request has one total deadline covering connect, send and every read: the health
    check gets connect_timeout + 1 s per URL, a rewrite read_timeout (connect included), so
    a server that drips one byte at a time costs no more than that;
  - at most MAX_RESPONSE_BYTES (1 MiB) of a body is read; more is refused, and a rewrite's
    length is checked before any pattern runs over it;
  - JSON nested deeper than MAX_JSON_DEPTH is refused before json.loads sees it;
  - redirects are never followed (the prompt must not be posted to another host): any 3xx is
    a failure with its reason;
  - terminal escapes and control characters (all but newline and tab) are stripped from
    everything shown: the rewrite, model names, server messages, reasons. Model ids that
    need stripping are ignored rather than altered;
  - a streamed rewrite is collected whole and validated before any of it reaches on_token.
Whatever the server does, enhance() returns an EnhanceResult and check() a Health: no
exception, no hang.

Where the server is (first that is set wins):
  1. an explicit URL (`atom chat --lmstudio-url`, the widget's URL field, `/lmstudio url`),
  2. the environment variable ATOM_LMSTUDIO_URL,
  3. `lmstudio_url` in the chat config file (ATOM_CHAT_CONFIG, else ~/.config/atom/chat.yaml),
  4. http://localhost:1234/v1 (LM Studio's default), then http://localhost:8080/v1
     (the port the original ATOM-GPT documented).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import socket
import ssl
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

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
# A rewrite of a chat answer is a few KB and a model list a few dozen; 1 MiB is far beyond any
# honest answer and small enough to hold and scan at once.
MAX_RESPONSE_BYTES = 1 << 20
# OpenAI answers nest 4-6 levels; deeper is garbage, and 100k levels would crash json.loads.
MAX_JSON_DEPTH = 32
MAX_MODEL_NAME = 200  # longer ids are not model names anyone loaded
MAX_SHOWN = 80  # characters of a server's own message (error text, redirect target) in a reason

_REFUSAL = [re.compile(p, re.I) for p in REFUSAL_PATTERNS]
_META = [re.compile(p, re.I | re.M) for p in META_PATTERNS]
_WORD = re.compile(r"[a-z]+")
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
# Terminal escapes: CSI (ESC [ ... final byte), OSC/DCS/SOS/PM/APC strings (up to BEL or ESC \\),
# any other ESC pair; then every other C0/C1 control character and DEL, except tab and newline.
_CONTROLS = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
                       r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]", re.S)
# A JSON string, or an unterminated one up to the end: every match attempt succeeds in one pass,
# so a body of many unclosed quotes costs linear time, not quadratic.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def load_chat_config(path: str | Path | None = None) -> dict:
    """Settings from the chat config file (YAML or JSON mapping), {} when there is none.

    Keys used here: lmstudio_url, lmstudio_model, instruction, connect_timeout, read_timeout (the
    whole rewrite request's limit, connect included), stream."""
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

    def __post_init__(self):
        self.reason = one_line(self.reason)

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

    def __post_init__(self):
        self.reason = one_line(self.reason)

    def note(self) -> str:
        if self.applied:
            return f"enhanced by {self.model}"
        return f"enhancement skipped: {self.reason}"


def strip_controls(text: str) -> str:
    """`text` without terminal escape sequences or control characters (newline and tab stay)."""
    return _CONTROLS.sub("", text)


def one_line(text: str | None) -> str | None:
    """A reason as the chat shows it: no control characters, all whitespace runs one space."""
    return None if text is None else " ".join(strip_controls(text).split())


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
                ids, loaded = self._list_models(url)
            except _Fail as e:
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

    def _list_models(self, url: str) -> tuple[list[str], list[str]]:
        """(ids, ids of loaded models) from url/models; entries that are not plain names are ignored."""
        with _open_url("GET", f"{url}/models", self.connect_timeout + 1, self.connect_timeout) as r:
            payload = _loads(_read_body(r))
        entries = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            raise _Fail("did not answer an OpenAI model list")
        entries = [e for e in entries if isinstance(e, dict) and _is_model_name(e.get("id"))]
        return [e["id"] for e in entries], [e["id"] for e in entries if e.get("state") == "loaded"]

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
            rewrite = self._ask(body, should_stop)
        except _Fail as e:
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

    def _ask(self, body: dict, should_stop) -> str | None:
        """The server's raw answer to a chat completion request; None when stopped while streaming."""
        with _open_url("POST", f"{self.health.url}/chat/completions", self.read_timeout, self.connect_timeout,
                       body) as r:
            if "text/event-stream" in (r.getheader("Content-Type") or ""):
                return _read_events(r, should_stop)
            return _choice_text(_loads(_read_body(r)), "message")

    def status(self) -> dict:
        return {"available": self.health.ok, "url": self.health.url, "model": self.health.model,
                "models": list(self.health.models), "reason": self.health.reason, "candidates": self.urls,
                "custom_instruction": self.custom_instruction, "instruction": self.instruction,
                "stream": self.stream, "timeouts": (self.connect_timeout, self.read_timeout)}


# --- HTTP with one deadline, a size cap and no redirects -----------------------------------------------


class _Fail(Exception):
    """A request that went wrong; str() is the reason, phrased to follow "the server" or a URL.
    gone: the server could not be reached at all (not merely slow or wrong)."""

    def __init__(self, reason: str, gone: bool = False):
        super().__init__(reason)
        self.gone = gone


class _Deadline(Exception):
    pass


class _DeadlineSocket(io.RawIOBase):
    """A connected socket as http.client sees it (sendall, makefile) where every send and read must
    end by one deadline: each gets only the time left, so a server that drips a byte at a time
    cannot stretch the request. http.client's close() is a no-op; _open_url closes the socket."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Deadline()
        self.sock.settimeout(left)

    def sendall(self, data) -> None:
        self._arm()
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise _Deadline() from None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self._arm()
        try:
            return self.sock.recv_into(buf)
        except TimeoutError:
            raise _Deadline() from None

    def makefile(self, mode="rb", *args, **kw):
        return io.BufferedReader(self)

    def close(self) -> None:
        pass


class _Connection(http.client.HTTPConnection):
    """http or https, never through a proxy (local servers), connect bounded by the same deadline."""

    def __init__(self, url: str, deadline: float, connect_timeout: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Fail(f"is not an http(s) URL ({url})")
        super().__init__(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self.https, self.deadline, self.connect_timeout = parts.scheme == "https", deadline, connect_timeout
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.raw = None

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Deadline()
        self.raw = socket.create_connection((self.host, self.port), min(self.connect_timeout, left))
        if self.https:
            self.raw.settimeout(max(self.deadline - time.monotonic(), 0.001))  # the handshake too
            self.raw = ssl.create_default_context().wrap_socket(self.raw, server_hostname=self.host)
        self.sock = _DeadlineSocket(self.raw, self.deadline)


@contextmanager
def _open_url(method: str, url: str, seconds: float, connect_timeout: float, payload: dict | None = None):
    """The 200 response to `method url`, with connect, send and every read done inside the `with`
    finished within `seconds`. Anything else (slow, unreachable, a redirect, another status, a
    broken connection, a bad body) raises _Fail with the reason."""
    deadline = time.monotonic() + seconds
    conn = r = None
    try:
        conn = _Connection(url, deadline, connect_timeout)
        body = None if payload is None else json.dumps(payload).encode()
        conn.request(method, conn.path, body, {"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        if 300 <= r.status < 400:  # never followed: the prompt must not be posted to another host
            target = one_line(r.getheader("Location") or "nowhere")[:MAX_SHOWN]
            raise _Fail(f"answered HTTP {r.status}, a redirect to {target}; redirects are not followed")
        if r.status != 200:
            raise _Fail(f"answered HTTP {r.status}{_error_detail(r)}")
        yield r
    except _Deadline:
        raise _Fail(f"did not {'answer' if r is None else 'finish'} within {seconds:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a bad port, a bad chunk size
        if r is None:
            raise _Fail(f"is unreachable ({_short(e)})", gone=True) from None
        raise _Fail(f"broke the connection ({_short(e)})") from None
    finally:
        if conn is not None and conn.raw is not None:
            conn.raw.close()


def _too_big() -> _Fail:
    return _Fail(f"sent more than {MAX_RESPONSE_BYTES / 2**20:g} MiB")


def _read_body(r, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (or says it will)."""
    if r.length is not None and r.length > limit:
        raise _too_big()
    chunks, size = [], 0
    while chunk := r.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _too_big()
        chunks.append(chunk)
    return b"".join(chunks)


def _read_events(r, should_stop) -> str | None:
    """The text of a streamed completion (server-sent events), None when should_stop() says so."""
    parts, size = [], 0
    while not (should_stop and should_stop()):
        line = r.readline(MAX_RESPONSE_BYTES + 1 - size)
        if not line:
            return "".join(parts)
        size += len(line)
        if size > MAX_RESPONSE_BYTES:
            raise _too_big()
        line = line.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return "".join(parts)
        parts.append(_choice_text(_loads(data), "delta"))
    return None


def _loads(raw: bytes | str):
    """json.loads for a server's answer, with nesting capped at MAX_JSON_DEPTH: json.loads itself
    would raise RecursionError (or, with a raised recursion limit, overflow the C stack)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    # the brackets outside strings; peel off innermost pairs, one level a pass
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    for _ in range(MAX_JSON_DEPTH):
        skeleton, n = _EMPTY_PAIR.subn("", skeleton)
        if not n:
            break
    if skeleton:  # deeper than the cap, or unbalanced (which json.loads would refuse anyway)
        raise _Fail(f"answered malformed JSON (unbalanced or nested deeper than {MAX_JSON_DEPTH})")
    try:
        return json.loads(text)
    except ValueError:
        raise _Fail("answered malformed JSON") from None


def _choice_text(payload, key: str) -> str:
    """choices[0][key]["content"] of a completion (key "message") or of a streamed chunk ("delta")."""
    try:
        part = payload["choices"][0][key]
    except (KeyError, IndexError, TypeError):
        raise _Fail("answered JSON that is not a chat completion") from None
    content = part.get("content") if isinstance(part, dict) else None
    if key == "delta" and content is None:  # role-only and final chunks carry no text
        return ""
    if not isinstance(content, str):
        raise _Fail("answered JSON that is not a chat completion")
    return content


def _is_model_name(name) -> bool:
    """A model id the chat may show and send back as is (one that needs stripping is ignored)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_MODEL_NAME and name == one_line(name)


def _error_detail(r) -> str:
    """' (message)' from an error body like OpenAI's, shortened; '' when there is none."""
    try:
        payload = _loads(r.read(4096))
    except (_Fail, _Deadline, OSError, http.client.HTTPException, ValueError):
        return ""
    err = payload.get("error") if isinstance(payload, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err
    msg = one_line(msg)[:MAX_SHOWN] if isinstance(msg, str) else ""
    return f" ({msg})" if msg else ""


def _short(e: Exception) -> str:
    text = str(e)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    if isinstance(e, TimeoutError):
        return "timed out"
    return type(e).__name__
