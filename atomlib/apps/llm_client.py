"""A hardened client of an OpenAI-compatible server (LM Studio, llama.cpp, Ollama, vLLM): the two
calls the chat needs, `list_models` (GET /models) and `chat_completion` (POST /chat/completions,
optionally streamed as server-sent events).

The server is not trusted (a URL can point anywhere, and a broken server is not rare), so:
  - each request has one total deadline covering connect, send and every read (atomlib.untrusted),
    so a server that drips one byte at a time costs no more than that;
  - at most MAX_RESPONSE_BYTES (1 MiB) of a body is read; more is refused;
  - JSON nested deeper than MAX_JSON_DEPTH is refused before json.loads sees it;
  - redirects are never followed (the prompt must not be posted to another host): any 3xx is
    a failure with its reason;
  - what a server says is shown only without control characters, and model ids that need
    stripping are ignored rather than altered.
Whatever the server does, a call returns its answer or raises ServerError with a one-line
reason phrased to follow "the server" or a URL: no other exception, no hang.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
import ssl
from contextlib import contextmanager
from typing import Callable
from urllib.parse import urlsplit

from atomlib.untrusted import Deadline, DeadlinePassed, TooLarge, one_line, read_capped

# A rewrite of a chat answer is a few KB and a model list a few dozen; 1 MiB is far beyond any
# honest answer and small enough to hold and scan at once.
MAX_RESPONSE_BYTES = 1 << 20
# OpenAI answers nest 4-6 levels; deeper is garbage, and 100k levels would crash json.loads.
MAX_JSON_DEPTH = 32
MAX_MODEL_NAME = 200  # longer ids are not model names anyone loaded
MAX_SHOWN = 80  # characters of a server's own message (error text, redirect target) in a reason

# A JSON string, or an unterminated one up to the end: every match attempt succeeds in one pass,
# so a body of many unclosed quotes costs linear time, not quadratic.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.?[^"\\]*)*(?:"|\Z)', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


class ServerError(Exception):
    """A request that went wrong; str() is the reason, phrased to follow "the server" or a URL.
    gone: the server could not be reached at all (not merely slow or wrong)."""

    def __init__(self, reason: str, gone: bool = False):
        super().__init__(reason)
        self.gone = gone


def list_models(url: str, connect_timeout: float) -> tuple[list[str], list[str]]:
    """(ids, ids of loaded models) from url/models, within connect_timeout + 1 s; entries that are
    not plain names are ignored."""
    with _open_url("GET", f"{url}/models", connect_timeout + 1, connect_timeout) as r:
        payload = _loads(_read_body(r))
    entries = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise ServerError("did not answer an OpenAI model list")
    entries = [e for e in entries if isinstance(e, dict) and _is_model_name(e.get("id"))]
    return [e["id"] for e in entries], [e["id"] for e in entries if e.get("state") == "loaded"]


def chat_completion(url: str, body: dict, seconds: float, connect_timeout: float,
                    should_stop: Callable[[], bool] | None = None) -> str | None:
    """The server's raw answer to a chat completion request `body`, all within `seconds` (connect
    included); None when should_stop() said so while the answer streamed."""
    with _open_url("POST", f"{url}/chat/completions", seconds, connect_timeout, body) as r:
        if "text/event-stream" in (r.getheader("Content-Type") or ""):
            return _read_events(r, should_stop)
        return _choice_text(_loads(_read_body(r)), "message")


# --- HTTP with one deadline, a size cap and no redirects ------------------------------------------


class _DeadlineSocket(io.RawIOBase):
    """A connected socket as http.client sees it (sendall, makefile) where every send and read must
    end by one deadline: each gets only the time left, so a server that drips a byte at a time
    cannot stretch the request. http.client's close() is a no-op; _open_url closes the socket."""

    def __init__(self, sock: socket.socket, deadline: Deadline):
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def _arm(self) -> None:
        self.sock.settimeout(self.deadline.left())

    def sendall(self, data) -> None:
        self._arm()
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise DeadlinePassed() from None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        self._arm()
        try:
            return self.sock.recv_into(buf)
        except TimeoutError:
            raise DeadlinePassed() from None

    def makefile(self, mode="rb", *args, **kw):
        return io.BufferedReader(self)

    def close(self) -> None:
        pass


class _Connection(http.client.HTTPConnection):
    """http or https, never through a proxy (local servers), connect bounded by the same deadline."""

    def __init__(self, url: str, deadline: Deadline, connect_timeout: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"is not an http(s) URL ({url})")
        super().__init__(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self.https, self.deadline, self.connect_timeout = parts.scheme == "https", deadline, connect_timeout
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.raw = None

    def connect(self) -> None:
        self.raw = socket.create_connection((self.host, self.port), min(self.connect_timeout, self.deadline.left()))
        if self.https:
            self.raw.settimeout(self.deadline.left())  # the handshake too
            self.raw = ssl.create_default_context().wrap_socket(self.raw, server_hostname=self.host)
        self.sock = _DeadlineSocket(self.raw, self.deadline)


@contextmanager
def _open_url(method: str, url: str, seconds: float, connect_timeout: float, payload: dict | None = None):
    """The 200 response to `method url`, with connect, send and every read done inside the `with`
    finished within `seconds`. Anything else (slow, unreachable, a redirect, another status, a
    broken connection, a bad body) raises ServerError with the reason."""
    deadline = Deadline.after(seconds)
    conn = r = None
    try:
        conn = _Connection(url, deadline, connect_timeout)
        body = None if payload is None else json.dumps(payload).encode()
        conn.request(method, conn.path, body, {"Content-Type": "application/json"} if body else {})
        r = conn.getresponse()
        if 300 <= r.status < 400:  # never followed: the prompt must not be posted to another host
            target = one_line(r.getheader("Location") or "nowhere")[:MAX_SHOWN]
            raise ServerError(f"answered HTTP {r.status}, a redirect to {target}; redirects are not followed")
        if r.status != 200:
            raise ServerError(f"answered HTTP {r.status}{_error_detail(r)}")
        yield r
    except DeadlinePassed:
        raise ServerError(f"did not {'answer' if r is None else 'finish'} within {seconds:g} s") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a bad port, a bad chunk size
        if r is None:
            raise ServerError(f"is unreachable ({_short(e)})", gone=True) from None
        raise ServerError(f"broke the connection ({_short(e)})") from None
    finally:
        if conn is not None and conn.raw is not None:
            conn.raw.close()


def _too_big() -> ServerError:
    return ServerError(f"sent more than {MAX_RESPONSE_BYTES / 2**20:g} MiB")


def _read_body(r) -> bytes:
    """The whole body, refused as soon as it passes MAX_RESPONSE_BYTES (or says it will)."""
    try:
        return read_capped(r.read, MAX_RESPONSE_BYTES, r.length)
    except TooLarge:
        raise _too_big() from None


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
        raise ServerError(f"answered malformed JSON (unbalanced or nested deeper than {MAX_JSON_DEPTH})")
    try:
        return json.loads(text)
    except ValueError:
        raise ServerError("answered malformed JSON") from None


def _choice_text(payload, key: str) -> str:
    """choices[0][key]["content"] of a completion (key "message") or of a streamed chunk ("delta")."""
    try:
        part = payload["choices"][0][key]
    except (KeyError, IndexError, TypeError):
        raise ServerError("answered JSON that is not a chat completion") from None
    content = part.get("content") if isinstance(part, dict) else None
    if key == "delta" and content is None:  # role-only and final chunks carry no text
        return ""
    if not isinstance(content, str):
        raise ServerError("answered JSON that is not a chat completion")
    return content


def _is_model_name(name) -> bool:
    """A model id the chat may show and send back as is (one that needs stripping is ignored)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_MODEL_NAME and name == one_line(name)


def _error_detail(r) -> str:
    """' (message)' from an error body like OpenAI's, shortened; '' when there is none."""
    try:
        payload = _loads(r.read(4096))
    except (ServerError, DeadlinePassed, OSError, http.client.HTTPException, ValueError):
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
