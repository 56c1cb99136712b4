"""atomlib.apps.enhance (over llm_client) against hostile servers on 127.0.0.1: dripping, huge,
deeply nested, redirecting, escape-laden and malformed answers. Whatever the server does, the
caller gets the model's own text and a one-line reason, within the documented time limit, and
never a traceback."""

from __future__ import annotations

import json
import time

import pytest

from atomlib.apps.enhance import Enhancer, validate_rewrite
from atomlib.apps.llm_client import MAX_JSON_DEPTH, MAX_RESPONSE_BYTES
from atomlib.untrusted import strip_controls
from lmstudio_stub import StubServer, drip, send_raw

ORIGINAL = "the night is burning under, shadows of the fallen kings"
GOOD = "Beneath the burning night, the shadows of fallen kings march to the sea."
SLACK = 0.6  # seconds allowed over a limit on a busy 2-core machine


@pytest.fixture
def stub():
    with StubServer() as srv:
        yield srv


def completion(content) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}).encode()


def http_200(body: bytes, ctype="application/json") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def one_line_reason(res):
    assert not res.applied and res.text == ORIGINAL
    assert res.reason and "\n" not in res.reason and "\x1b" not in res.reason, res.reason
    return res.reason


def timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# --- 1. one total deadline per request --------------------------------------------------------------


@pytest.mark.parametrize("where", ["body", "headers"])
def test_dripping_server_ends_at_the_deadline(stub, where):
    answer = http_200(completion(GOOD))
    if where == "body":  # headers at once, then the body a byte every half second
        head, body = answer.split(b"\r\n\r\n", 1)
        stub.behaviour["hook"] = lambda h, m: m == "POST" and (h.wfile.write(head + b"\r\n\r\n"), drip(h, body))
    else:  # even the status line drips
        stub.behaviour["hook"] = lambda h, m: m == "POST" and drip(h, answer)
    enh = Enhancer(url=stub.url, connect_timeout=1, read_timeout=1.5)
    assert enh.check().ok
    res, took = timed(lambda: enh.enhance("fire", ORIGINAL))
    assert "within 1.5 s" in one_line_reason(res)
    assert took < 1.5 + SLACK, took


def test_dripping_model_list_ends_at_the_deadline(stub):
    body = json.dumps({"data": [{"id": "dark-editor-7b", "state": "loaded"}]}).encode()
    stub.behaviour["hook"] = lambda h, m: m == "GET" and drip(h, http_200(body), every=0.3)
    enh = Enhancer(url=stub.url, connect_timeout=0.5)
    health, took = timed(enh.check)
    assert not health.ok and "within 1.5 s" in health.reason  # connect_timeout + 1 for the model list
    assert took < 1.5 + SLACK, took
    res, took = timed(lambda: enh.enhance("fire", ORIGINAL))
    assert "no server" in one_line_reason(res) and took < 1.5 + SLACK


def test_chunked_event_stream_like_lm_studio(stub):
    events = [b'data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n']
    events += [b"data: %s\n\n" % json.dumps({"choices": [{"delta": {"content": w + " "}}]}).encode()
               for w in GOOD.split()]
    events += [b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n']
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
    stub.behaviour["hook"] = lambda h, m: m == "POST" and send_raw(
        h, "HTTP/1.1 200 OK\nContent-Type: text/event-stream\nTransfer-Encoding: chunked", chunks, pause=0.01)
    seen = []
    res = Enhancer(url=stub.url, stream=True).enhance("fire", ORIGINAL, on_token=seen.append)
    assert res.applied and res.text == GOOD and seen == [GOOD], res.reason


# --- 2. a size cap, and lengths checked before patterns -------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "until-close", "chunked", "event-stream"])
def test_huge_answer_is_refused_quickly(stub, framing):
    size = MAX_RESPONSE_BYTES + 3 * 2**20  # a few MB over the cap, streamed in 64 KiB pieces
    piece = 64 * 1024
    blocks = [b"x" * piece] * (size // piece)
    if framing == "content-length":
        head = f"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: {size}"
    elif framing == "until-close":
        head = "HTTP/1.1 200 OK\nContent-Type: application/json\nConnection: close"
    elif framing == "chunked":
        head = "HTTP/1.1 200 OK\nContent-Type: application/json\nTransfer-Encoding: chunked"
        blocks = [b"%x\r\n%s\r\n" % (piece, b) for b in blocks] + [b"0\r\n\r\n"]
    else:  # one endless server-sent event line
        head = "HTTP/1.1 200 OK\nContent-Type: text/event-stream\nConnection: close"
        blocks = [b'data: {"choices": [{"delta": {"content": "'] + blocks
    stub.behaviour["hook"] = lambda h, m: m == "POST" and send_raw(h, head, blocks)
    res, took = timed(lambda: Enhancer(url=stub.url, stream=framing == "event-stream").enhance("fire", ORIGINAL))
    assert "more than 1 MiB" in one_line_reason(res)
    assert took < 2, took


def test_long_rewrite_under_the_cap_is_rejected_by_length_first(stub):
    long = "I'm sorry, " + "the night burns " * 60000  # ~960 KB: under the cap, far too long
    stub.behaviour["reply"] = long
    res, took = timed(lambda: Enhancer(url=stub.url).enhance("fire", ORIGINAL))
    assert "too long" in one_line_reason(res) and took < 2, took
    huge = long * 20  # ~19 MB: too long, so no pattern looks at it (they took 0.7 s here before)
    _, took = timed(lambda: validate_rewrite(ORIGINAL, huge))
    assert took < 0.1, took


def test_blank_lines_and_spaces_do_not_slow_the_patterns():
    original = "the night burns " * 600  # 9.6 KB, so a 9 KB rewrite passes the length check
    for rewrite in ("night" + "\n" * 9000 + "night", "night\n" + " \n" * 4500 + "night",
                    "night\nrewritten" + " " * 9000 + "night"):
        reason, took = timed(lambda r=rewrite: validate_rewrite(original, r))
        assert reason is None and took < 0.3, took  # ^\s* patterns took 5.8 s on the first


# --- 3. deeply nested JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"[" * 100000,
    b"[" * 100000 + b"]" * 100000,  # valid JSON, 100000 deep
    b'{"choices": [{"message": {"content": "x"}}], "x": ' + b"[" * 50000 + b"]" * 50000 + b"}",
    b'{"choices": "' + b"[" * 50000 + b'"}',  # brackets inside a string do not count: shape error
])
def test_deeply_nested_json_is_malformed_not_a_crash(stub, body):
    stub.behaviour["hook"] = lambda h, m: m == "POST" and h.wfile.write(http_200(body))
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert "JSON" in one_line_reason(res)


def test_unclosed_quotes_cost_linear_time(stub):
    body = b'"' + b'\\"' * 400000  # 800 KB of escaped quotes, never closed
    stub.behaviour["hook"] = lambda h, m: m == "POST" and h.wfile.write(http_200(body))
    res, took = timed(lambda: Enhancer(url=stub.url).enhance("fire", ORIGINAL))
    assert "malformed JSON" in one_line_reason(res) and took < 1, took


def test_nesting_up_to_the_depth_cap_is_fine(stub):
    nested = "[" * (MAX_JSON_DEPTH - 4) + "]" * (MAX_JSON_DEPTH - 4)  # 4 levels are the completion's own
    payload = json.loads(completion(GOOD))
    payload["choices"][0]["extra"] = json.loads(nested)
    stub.behaviour["hook"] = lambda h, m: m == "POST" and h.wfile.write(http_200(json.dumps(payload).encode()))
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert res.applied and res.text == GOOD, res.reason


# --- 4. no redirects --------------------------------------------------------------------------------------


def test_redirect_is_refused_and_never_followed(stub):
    with StubServer() as elsewhere:
        target = f"{elsewhere.url}/chat/completions"
        stub.behaviour["hook"] = lambda h, m: m == "POST" and send_raw(
            h, f"HTTP/1.1 307 Temporary Redirect\nLocation: {target}\nContent-Length: 0")
        res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
        reason = one_line_reason(res)
        assert "redirect" in reason and "307" in reason and target in reason
        stub.behaviour["hook"] = lambda h, m: m == "GET" and send_raw(
            h, f"HTTP/1.1 302 Found\nLocation: {elsewhere.url}/models\nContent-Length: 0")
        health = Enhancer(url=stub.url).check()
        assert not health.ok and "redirect" in health.reason
    assert elsewhere.requests == [] and elsewhere.model_queries == 0  # the prompt never left for elsewhere


# --- 5. terminal escapes, and nothing unvalidated on screen ---------------------------------------------------


EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[31mBeneath the burning night\x1b[0m,\r the shadows\x9b of fallen\x00 kings march."


def test_strip_controls():
    assert strip_controls(EVIL) == "Beneath the burning night, the shadows of fallen kings march."
    assert strip_controls("line one\n\tline two\x1bP1;2|data\x1b\\ end\x7f") == "line one\n\tline two end"
    assert strip_controls("cut short \x1b[3") == "cut short "


def test_escapes_never_reach_the_caller(stub):
    stub.behaviour["reply"] = EVIL
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert res.applied, res.reason
    assert res.text == res.rewrite == "Beneath the burning night, the shadows of fallen kings march."
    error = json.dumps({"error": {"message": "\x1b]0;x\x07boom\x1b[2J\nnext"}}).encode()
    stub.behaviour["hook"] = lambda h, m: m == "POST" and send_raw(
        h, f"HTTP/1.1 500 Oops\nContent-Type: application/json\nContent-Length: {len(error)}", [error])
    reason = one_line_reason(Enhancer(url=stub.url).enhance("fire", ORIGINAL))
    assert "HTTP 500" in reason and "boom next" in reason


def test_escapes_in_model_names_are_not_used(stub):
    stub.behaviour["models"] = ["evil\x1b]0;x\x07model", "good-model"]
    health = Enhancer(url=stub.url).check()
    assert health.ok and health.models == ["good-model"] and health.model == "good-model"
    stub.behaviour["models"] = ["\x1b[2J"]
    health = Enhancer(url=stub.url).check()
    assert not health.ok and "\x1b" not in health.describe()


def test_streamed_rewrite_is_shown_only_after_validation(stub):
    stub.behaviour["reply"] = "I'm sorry, but as an AI I cannot help with the fallen kings tonight, sorry."
    seen = []
    res = Enhancer(url=stub.url, stream=True).enhance("fire", ORIGINAL, on_token=seen.append)
    assert "refusal" in one_line_reason(res) and seen == []  # not a word of the refusal was shown
    stub.behaviour["reply"] = EVIL
    res = Enhancer(url=stub.url, stream=True).enhance("fire", ORIGINAL, on_token=seen.append)
    assert res.applied and seen == [res.text] and "\x1b" not in res.text


def test_https_to_a_plain_http_server_is_a_reason(stub):
    health = Enhancer(url=stub.url.replace("http://", "https://"), connect_timeout=1).check()
    assert not health.ok and "unreachable" in health.reason and "\n" not in health.reason


# --- 6. malformed model lists ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"not json at all",
    b"",
    b"[]",
    b'"a string"',
    b"null",
    b'{"data": null}',
    b'{"data": "dark-editor-7b"}',
    b'{"data": {"id": "dark-editor-7b"}}',
    b'{"data": [1, 2, "three", null, []]}',
    b'{"data": [{"name": "no id"}, {"id": null}, {"id": 7}, {"id": ["x"]}, {"id": {"a": 1}}]}',
    b'{"data": [{"id": "' + b"a" * 5000 + b'"}]}',  # not a model name anyone loaded
    b'{"data": [{"id": "x", "state": ' + b"[" * 100000 + b"}]}",
    b'{"data": [' + b'{"id": "m"},' * 150000 + b'{"id": "m"}]}',  # ~1.8 MB
])
def test_malformed_model_list_is_not_available(stub, body):
    stub.behaviour["hook"] = lambda h, m: m == "GET" and h.wfile.write(http_200(body))
    enh = Enhancer(url=stub.url)
    health, took = timed(enh.check)
    assert not health.ok and health.describe().startswith("not connected: "), health
    assert "\n" not in health.reason and took < 2
    assert "no server" in one_line_reason(enh.enhance("fire", ORIGINAL))


def test_model_list_that_is_not_json_or_not_http(stub):
    stub.behaviour["hook"] = lambda h, m: m == "GET" and send_raw(h, "HTTP/1.1 200 OK\nContent-Length: 5", [b"hello"])
    assert "malformed JSON" in Enhancer(url=stub.url).check().reason
    stub.behaviour["hook"] = lambda h, m: m == "GET" and send_raw(h, "NOT-HTTP garbage")
    health = Enhancer(url=stub.url).check()
    assert not health.ok and "\n" not in health.reason
    stub.behaviour["hook"] = lambda h, m: m == "GET" and send_raw(h, "HTTP/1.1 200 OK\n" + "X: y\n" * 200)
    assert not Enhancer(url=stub.url).check().ok  # too many headers
