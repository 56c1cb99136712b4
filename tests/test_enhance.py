"""atomlib.apps.enhance against a real HTTP server: a small OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from atomlib.apps.enhance import (DEFAULT_INSTRUCTION, DEFAULT_URLS, Enhancer, candidate_urls, clean_rewrite,
                             load_chat_config, normalize_url, validate_rewrite)
from atomlib.apps.llm_client import ServerError, chat_completion, list_models
from lmstudio_stub import StubServer, free_port_url

ORIGINAL = "the night is burning under, shadows of the fallen kings"


@pytest.fixture
def stub():
    with StubServer() as srv:
        yield srv


def test_url_precedence(monkeypatch, tmp_path):
    assert DEFAULT_URLS == ("http://localhost:1234/v1", "http://localhost:8080/v1")
    assert candidate_urls() == list(DEFAULT_URLS)  # LM Studio's default first, the original's 8080 second
    cfg = tmp_path / "chat.yaml"
    cfg.write_text("lmstudio_url: http://localhost:5555/v1\n")
    monkeypatch.setenv("ATOM_CHAT_CONFIG", str(cfg))
    assert load_chat_config()["lmstudio_url"] == "http://localhost:5555/v1"
    assert candidate_urls() == ["http://localhost:5555/v1"]
    monkeypatch.setenv("ATOM_LMSTUDIO_URL", "localhost:6666")
    assert candidate_urls() == ["http://localhost:6666/v1"]  # env beats the config file
    assert candidate_urls("http://localhost:7777/v1/") == ["http://localhost:7777/v1"]  # explicit beats env
    assert normalize_url("http://localhost:11434") == "http://localhost:11434/v1"


def test_enhancement_applied_and_instruction_sent(stub):
    enh = Enhancer(url=stub.url, read_timeout=5)
    health = enh.check()
    assert health.ok and health.url == stub.url
    assert health.model == "dark-editor-7b"  # the one the server reports as loaded
    res = enh.enhance("fire and steel", ORIGINAL)
    assert res.applied, res.reason
    assert res.text == "In the dark of night, the fire burns on."
    assert res.original == ORIGINAL and res.model == "dark-editor-7b"
    body = stub.requests[-1]
    assert body["model"] == "dark-editor-7b" and body["stream"] is False
    assert body["messages"][0] == {"role": "system", "content": DEFAULT_INSTRUCTION}
    assert "dark" in DEFAULT_INSTRUCTION and "metal" in DEFAULT_INSTRUCTION
    assert ORIGINAL in body["messages"][1]["content"] and "fire and steel" in body["messages"][1]["content"]

    enh.set_instruction("Rewrite as a doom metal chorus. Output only the lyrics.")
    assert enh.enhance("fire", ORIGINAL).applied
    assert stub.requests[-1]["messages"][0]["content"] == "Rewrite as a doom metal chorus. Output only the lyrics."


def test_named_model_is_used(stub):
    enh = Enhancer(url=stub.url, model="other-model")
    assert enh.check().model == "other-model"
    enh.enhance("x", ORIGINAL)
    assert stub.requests[-1]["model"] == "other-model"


def test_client_lists_models_and_completes(stub):
    ids, loaded = list_models(stub.url, connect_timeout=1)
    assert ids == ["other-model", "dark-editor-7b"] and loaded == ["dark-editor-7b"]  # in the order served
    body = {"model": "dark-editor-7b", "messages": [{"role": "user", "content": "x"}], "stream": False}
    assert chat_completion(stub.url, body, seconds=5, connect_timeout=1) == "In the dark of night, the fire burns on."
    assert stub.requests[-1] == body
    with pytest.raises(ServerError) as e:
        list_models(free_port_url(), connect_timeout=1)
    assert e.value.gone and "refused" in str(e.value)  # unreachable: the Enhancer looks for a server again


def test_server_down_falls_back_quickly():
    enh = Enhancer(url=free_port_url(), connect_timeout=1, read_timeout=1)
    t0 = time.monotonic()
    res = enh.enhance("fire", ORIGINAL)
    assert not res.applied and res.text == ORIGINAL
    assert "no server" in res.reason and "refused" in res.reason
    assert time.monotonic() - t0 < 10
    assert not enh.available


def test_timeout_keeps_original(stub):
    stub.behaviour.update(mode="sleep", sleep=30.0)
    enh = Enhancer(url=stub.url, connect_timeout=1, read_timeout=0.5)
    t0 = time.monotonic()
    res = enh.enhance("fire", ORIGINAL)
    assert not res.applied and res.text == ORIGINAL
    assert "did not answer within 0.5 s" in res.reason
    assert time.monotonic() - t0 < 20  # gave up long before the server's 30 s


def test_malformed_json(stub):
    stub.behaviour["mode"] = "malformed"
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert not res.applied and res.text == ORIGINAL and "malformed JSON" in res.reason


def test_http_500(stub):
    stub.behaviour["mode"] = "500"
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert not res.applied and res.text == ORIGINAL
    assert "HTTP 500" in res.reason and "model crashed" in res.reason


def test_no_model_loaded(stub):
    stub.behaviour["mode"] = "no_models"
    enh = Enhancer(url=stub.url)
    assert not enh.check().ok and "no model loaded" in enh.health.reason
    assert enh.enhance("fire", ORIGINAL).text == ORIGINAL


@pytest.mark.parametrize("reply, why", [
    ("I'm sorry, but as an AI I cannot help with that request.", "refusal"),
    ("", "empty"),
    ("   ", "empty"),
    ("Here is the rewritten text: the night burns beneath the fallen kings.", "meta-commentary"),
    ("Sure! The night burns, and the shadows of fallen kings march on.", "meta-commentary"),
    ("The night burns. " * 40, "too long"),
    ("Sunny meadows and happy puppies playing in the bright green grass together.", "theme"),
])
def test_rejected_rewrites_keep_original(stub, reply, why):
    stub.behaviour["reply"] = reply
    res = Enhancer(url=stub.url).enhance("fire", ORIGINAL)
    assert not res.applied and res.text == ORIGINAL
    assert why in res.reason and "kept the original" in res.reason


def test_streaming(stub):
    stub.behaviour["reply"] = "Beneath the burning night, the shadows of fallen kings march to the sea."
    enh = Enhancer(url=stub.url, stream=True)
    pieces = []
    res = enh.enhance("fire", ORIGINAL, on_token=pieces.append)
    assert stub.requests[-1]["stream"] is True
    assert res.applied, res.reason
    # read piece by piece, shown once validated: on_token gets the whole rewrite, once
    assert pieces == [res.text] and res.text == stub.behaviour["reply"]


def test_streaming_can_be_stopped(stub):
    stub.behaviour["reply"] = "the night burns " * 10
    enh = Enhancer(url=stub.url, stream=True)
    seen, polls = [], []
    res = enh.enhance("fire", ORIGINAL, on_token=seen.append,
                      should_stop=lambda: polls.append(1) or len(polls) > 3)  # stop after 3 pieces
    assert not res.applied and res.reason == "stopped" and res.text == ORIGINAL and seen == []


def test_validation_rules():
    assert validate_rewrite(ORIGINAL, "The night burns below; the fallen kings cast their shadows.") is None
    assert "too short" in validate_rewrite(ORIGINAL * 4, "Night.")
    assert clean_rewrite('<think>plan the edit</think>\n"The night burns."') == "The night burns."
    assert clean_rewrite("```\nThe night burns.\n```") == "The night burns."
