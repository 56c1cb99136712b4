"""`atom serve` through the official openai client, against uvicorn on 127.0.0.1 with the tiny run:
the answers are the answer pipeline's, streamed or not; every error is OpenAI's JSON with its
status; a client that leaves frees its rows; 32 concurrent streams are all answered in full."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from atomlib.apps.serve import Background, Served, check_exposure, open_run
from atomlib.apps.serve_api import Limits
from atomlib.errors import AtomError
from atomlib.generation.answer import Settings, answer

KEY = "s3cret-key"


class _Server(Background):
    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def served(tiny_run):
    s = open_run(tiny_run, device="cpu", limits=Limits(max_tokens=3000, max_body=16_384, max_rows=8, max_waiting=32))
    yield s
    s.batcher.close()


@pytest.fixture(scope="module")
def server(served):
    srv = _Server(served, own=False)  # (the served fixture closes the shared batcher)
    yield srv
    srv.stop()


def _alone(served, prompt, **kw) -> object:
    """What the answer pipeline gives for this prompt on its own (engine.generate, no server)."""
    return answer(served.model, served.tokenizer, prompt, Settings(**kw))


def test_models_and_health(server):
    client = server.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["max_rows"] == 8


def test_completion_is_the_answer_pipelines_answer_with_usage(server, served):
    r = server.client().completions.create(model="tiny", prompt="The raven", max_tokens=30, seed=7)
    want = _alone(served, "The raven", max_new_tokens=30, seed=7)
    assert r.object == "text_completion" and r.choices[0].text == want.text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens == want.choices[0].tokens > 0
    assert r.usage.prompt_tokens == len(served.tokenizer.encode(want.framed))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_answers_the_last_user_message_and_maps_the_extras(server, served):
    messages = [{"role": "system", "content": "You are a bard."}, {"role": "user", "content": "old question"},
                {"role": "assistant", "content": "old answer"}, {"role": "user", "content": "Why do ravens cry?"}]
    extra = {"top_k": 12, "kind": "question", "filters": False, "repetition_penalty": 1.2}
    r = server.client().chat.completions.create(model="tiny", messages=messages, max_tokens=25, seed=3, temperature=0.7,
                                                top_p=0.9, presence_penalty=0.5, frequency_penalty=0.3, extra_body=extra)
    want = _alone(served, "Why do ravens cry?", max_new_tokens=25, seed=3, temperature=0.7, top_p=0.9, top_k=12,
                  presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.2, kind="question", filters=False)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text


def test_seeds_reproduce_n_choices_and_completion_mode(server):
    client = server.client()
    ask = dict(model="tiny", prompt="Night falls over", max_tokens=20, seed=11, n=3)
    a, b = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and len(a.choices) == 3
    assert [c.index for c in a.choices] == [0, 1, 2]
    ranked = client.completions.create(**ask, extra_body={"mode": "completion"})
    assert len(ranked.choices) == 3 and all(c.text.startswith("Night falls over") for c in ranked.choices)


def test_min_tokens_holds_off_stops_and_is_capped_by_max_tokens(server, served):
    client = server.client()
    r = client.completions.create(model="tiny", prompt="x", max_tokens=40, seed=5, stop=["e", "a"],
                                  extra_body={"kind": "question", "filters": False, "min_tokens": 25})
    want = _alone(served, "x", max_new_tokens=40, seed=5, stop=("e", "a"), kind="question", filters=False,
                  min_new_tokens=25)
    assert r.choices[0].text == want.text and r.usage.completion_tokens == want.choices[0].tokens >= 25
    r = client.completions.create(model="tiny", prompt="x", max_tokens=10, seed=5,
                                  extra_body={"filters": False, "min_tokens": 500})  # lowered to 10
    assert r.usage.completion_tokens == 10


def test_stop_ends_the_text_before_the_stop_string(server):
    r = server.client().completions.create(model="tiny", prompt="x", max_tokens=300, seed=5, stop=["e", "a"],
                                           extra_body={"kind": "question", "filters": False})
    text = r.choices[0].text
    assert r.choices[0].finish_reason == "stop" and "e" not in text and "a" not in text


def test_streamed_chat_is_the_sample_as_drawn_and_ends_with_done(server, served):
    ask = dict(model="tiny", messages=[{"role": "user", "content": "ravens and graves"}], max_tokens=40, seed=9)
    chunks = list(server.client().chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    want = _alone(served, "ravens and graves", max_new_tokens=40, seed=9)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == want.lead + want.choices[0].raw
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == want.choices[0].tokens
    with httpx.stream("POST", server.url + "/v1/completions", json={**ask, "prompt": "x", "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream") and lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def _status(url: str, body=None, headers=None, content=None) -> tuple[int, dict]:
    r = httpx.post(url, json=body, headers=headers, content=content) if body is not None or content else httpx.get(url)
    return r.status_code, r.json()


def test_each_error_is_openai_json_with_its_status(server, served):
    client = server.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="x")
    assert e.value.body["code"] == "model_not_found"
    for bad in ({"n": 100}, {"temperature": -1}, {"top_p": 3}, {"stop": ["a", "b", "c", "d", "e"]},
                {"prompt": ["a", "b"]}, {"extra_body": {"kind": "limerick"}}):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(**{"model": "tiny", "prompt": "x", **bad})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "no user"}])
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(model="tiny", prompt="x" * 20_000)
    assert e.value.status_code == 413
    url = server.url + "/v1/completions"
    for body, content, status in (({"model": "tiny", "prompt": "x", "temperature": "hot"}, None, 422),
                                  ({"model": "tiny"}, None, 422), (None, b"{not json", 400), (None, b"[1]", 400)):
        code, err = _status(url, body, {"content-type": "application/json"}, content)
        assert code == status and set(err["error"]) == {"message", "type", "param", "code"}
    code, err = _status(server.url + "/v1/nothing-here")
    assert code == 404 and err["error"]["code"] == "not_found"
    # the key: another server over the same batcher
    keyed = _Server(Served(served.model, served.tokenizer, "tiny", served.batcher, served.limits, api_key=KEY), own=False)
    try:
        with pytest.raises(openai.AuthenticationError):
            keyed.client("wrong").models.list()
        code, err = _status(keyed.url + "/v1/completions", {"model": "tiny", "prompt": "x"})  # no key at all
        assert code == 401 and err["error"]["type"] == "authentication_error"
        assert httpx.get(keyed.url + "/health").status_code == 200  # (health needs no key)
        assert keyed.client(KEY).completions.create(model="tiny", prompt="x", max_tokens=3).choices
    finally:
        keyed.stop()


def test_a_full_server_answers_429(served):
    tight = Served(served.model, served.tokenizer, "tiny", served.batcher, Limits(max_rows=1, max_waiting=0))
    srv = _Server(tight, own=False)
    try:
        client = srv.client()
        hold = client.completions.create(model="tiny", prompt="x", max_tokens=1000, stream=True,
                                         extra_body={"stop": [], "filters": False})
        next(iter(hold))  # streaming: its slot is taken
        with pytest.raises(openai.RateLimitError) as e:
            client.completions.create(model="tiny", prompt="x", max_tokens=3)
        assert e.value.body["type"] == "rate_limit_error"
        hold.close()
    finally:
        srv.stop()


def _assert_freed(server, aborted_before: int) -> None:
    """Within 10 s the server has no request running, no row in use, and one more aborted."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        load = httpx.get(server.url + "/health").json()
        if load["running"] == 0 and load["finished"].get("aborted", 0) > aborted_before:
            break
        time.sleep(0.05)
    assert load["running"] == 0 and load["rows"] == 0 and load["finished"]["aborted"] == aborted_before + 1


def test_a_client_that_disconnects_mid_stream_frees_its_rows(server, served):
    before = served.batcher.load()["finished"].get("aborted", 0)
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3000, "stream": True, "stop": [], "filters": False}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as r:
        got = 0
        for line in r.iter_lines():
            got += line.startswith("data: ")
            if got >= 5:
                break  # leave mid-stream: the connection closes
    _assert_freed(server, before)


def test_a_client_that_leaves_before_a_whole_answer_frees_its_rows(server, served):
    """Not streaming: the server notices the closed connection while it decodes, and stops."""
    before = served.batcher.load()["finished"].get("aborted", 0)
    body = {"model": "tiny", "prompt": "x", "max_tokens": 3000, "min_tokens": 3000, "filters": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
    _assert_freed(server, before)


def test_a_stream_sends_what_was_drawn_between_events_in_one(served):
    """With a stream interval, the pieces drawn between two events arrive as one: fewer events
    than tokens, the same text, and the first piece still at once."""
    slow = Served(served.model, served.tokenizer, "tiny", served.batcher,
                  Limits(max_tokens=3000, max_rows=8, stream_interval=0.1))
    srv = _Server(slow, own=False)
    ask = dict(model="tiny", prompt="x", max_tokens=200, seed=4, stream=True,
               extra_body={"filters": False, "min_tokens": 200})
    try:
        chunks = [c for c in srv.client().completions.create(**ask) if c.choices]
    finally:
        srv.stop()
    want = _alone(served, "x", max_new_tokens=200, seed=4, filters=False, min_new_tokens=200)
    assert "".join(c.choices[0].text for c in chunks) == want.lead + want.choices[0].raw
    assert len(chunks) < 100 < want.choices[0].tokens


def test_32_concurrent_streams_are_each_answered_in_full(server, served):
    def one(i):
        stream = server.client().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"verse {i}"}], max_tokens=30 + i, seed=i,
            stream=True, extra_body={"filters": False})
        chunks = [c for c in stream if c.choices]
        return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    for i, (text, reason) in enumerate(results):
        want = _alone(served, f"verse {i}", max_new_tokens=30 + i, seed=i, filters=False)
        assert text == want.lead + want.choices[0].raw and reason in ("stop", "length")
    assert served.batcher.load()["rows"] == 0


def test_a_non_loopback_host_needs_a_key_or_insecure():
    check_exposure("127.0.0.1", None, False)
    check_exposure("::1", None, False)
    check_exposure("0.0.0.0", KEY, False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(AtomError, match="--api-key"):
        check_exposure("0.0.0.0", None, False)
    with pytest.raises(AtomError, match="--insecure"):
        check_exposure("192.168.1.5", "", False)


def test_the_serve_bench_times_streams_alone_and_together(tiny_run):
    from atomlib.evaluation.bench_serve import format_serve, serve_bench

    r = serve_bench(tiny_run, streams=3, max_tokens=12, rounds=1, device="cpu")  # (atom serve in a child process)
    assert r["tokens_per_s_alone"] > 0 and r["tokens_per_s_load"] > 0 and r["ratio"] > 0 and len(r["ratios"]) == 1
    assert 0 < r["ttft_alone_p50"] <= r["ttft_alone_p95"] and 0 < r["ttft_load_p50"] <= r["ttft_load_p95"]
    assert "3 concurrent streams" in format_serve(r) and "aggregate ratio" in format_serve(r)


@pytest.mark.parametrize("stream", [False, True])
def test_the_chats_llm_toggle_can_point_at_another_atom_serve(server, stream):
    """The chat's LM Studio client (apps.enhance) finds the model and gets a rewrite back; whether
    the tiny model's verse passes the rewrite checks is its business, not the connection's."""
    from atomlib.apps.enhance import Enhancer

    enhancer = Enhancer(url=server.url + "/v1", config={}, stream=stream)
    health = enhancer.check()
    assert health.ok and health.model == "tiny"
    result = enhancer.enhance("ravens at dusk", "The ravens gather where the dark rivers run.")
    assert result.rewrite is not None and result.url == server.url + "/v1"


def test_without_the_serve_extra_atom_serve_says_how_to_get_it():
    code = ("import sys; sys.modules['fastapi'] = None\n"  # as if the serve extra were not installed
            "from atomlib.cli import main; sys.exit(main(['serve']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "needs the serve extra" in out.stderr and "pip install -e '.[serve]'" in out.stderr
