"""The OpenAI API's shapes for `atom serve`: requests in, ATOM's Settings out; Answers in, JSON out.

Pure functions and pydantic models, no HTTP: serve.py does the serving.

Parameters. OpenAI's map onto ATOM's sampling one to one: max_tokens (capped by the server),
temperature, top_p, stop, seed, n, presence_penalty and frequency_penalty (the same penalties,
over the generated tokens). ATOM's own go in the body beside them (the client's extra_body):

    top_k               keep the k most likely tokens
    repetition_penalty  CTRL's penalty over the recent window (1.0 is off)
    min_tokens          no stop string or end-of-text ends a sample before this many tokens
                        (vLLM's name for it; capped by max_tokens)
    kind                the prompt kind whose preset applies (creative, question, command,
                        thematic); left out, the prompt is classified (adaptive presets)
    filters             false shows the samples as drawn (default true: the filter pipeline)
    mode                "chat" (default: classify, preset, frame, sample, filter) or
                        "completion" (finish the line: n endings ranked best first)

A setting left out is decided by the prompt kind's preset, as in `atom chat`.

Chat messages. The model was trained on verse, not on conversations, so it has no notion of
roles: the prompt is the text of the last user message, and system messages and earlier turns
are left out (they would use up the small context and be continued as verse).

Streaming sends each sample as drawn (in chat mode the framed prompt's lead first); the filters
need a whole sample, so a streamed answer is unfiltered (send filters: false to get the same
text both ways). In completion mode the ranked endings arrive whole, at the end.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from atomlib.errors import AtomError
from atomlib.generation.answer import Answer, Settings, completion_params


@dataclass
class Limits:
    """What one request may ask for, how many may be in flight, and how often a stream sends."""

    max_tokens: int = 1024  # max_tokens above this is lowered to it
    max_body: int = 256 * 1024  # bytes of a request body (413 above)
    max_n: int = 8
    max_rows: int = 16  # rows decoding at once (one per sample)
    max_waiting: int = 64  # requests waiting for rows beyond those decoding (429 above)
    stream_interval: float = 0.02  # seconds between a stream's events: pieces drawn meanwhile share one


class ApiError(Exception):
    """An error the client caused (or may retry), as OpenAI reports it."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
             500: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class _Sampling(BaseModel):
    """The fields both endpoints share. Unknown fields (user, logit_bias, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    stream_options: dict | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = Field(None, ge=0)
    kind: str | None = None
    filters: bool = True
    mode: Literal["chat", "completion"] = "chat"


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=0)


# --- requests -> ATOM ------------------------------------------------------------------------------


def completion_prompt(req: CompletionRequest) -> str:
    if isinstance(req.prompt, str):
        return req.prompt
    if len(req.prompt) != 1:
        raise ApiError(400, "send one prompt per request (a list of several is not supported).", "prompt")
    return req.prompt[0]


def chat_prompt(req: ChatRequest) -> str:
    """The text of the last user message (the module docstring says why)."""
    for msg in reversed(req.messages):
        if msg.role == "user":
            if isinstance(msg.content, list):
                return "\n".join(str(p.get("text", "")) for p in msg.content if p.get("type") == "text")
            return msg.content or ""
    raise ApiError(400, "messages holds no user message; the model answers the last one.", "messages")


def settings_for(req: _Sampling, tokenizer, limits: Limits) -> Settings:
    """ATOM's Settings for a request, every value checked now (400), before anything is streamed."""
    if not 1 <= req.n <= min(limits.max_n, limits.max_rows):
        raise ApiError(400, f"n must be between 1 and {min(limits.max_n, limits.max_rows)}.", "n")
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    if stop is not None and len(stop) > 4:
        raise ApiError(400, "stop takes at most 4 strings.", "stop")
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
    max_tokens = None if max_tokens is None else min(max_tokens, limits.max_tokens)
    min_tokens = req.min_tokens if req.min_tokens is None or max_tokens is None else min(req.min_tokens, max_tokens)
    try:
        settings = Settings(mode=req.mode, n=req.n, seed=req.seed, kind=req.kind, filters=req.filters,
                            temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                            repetition_penalty=req.repetition_penalty, frequency_penalty=req.frequency_penalty,
                            presence_penalty=req.presence_penalty, stop=None if stop is None else tuple(stop),
                            min_new_tokens=min_tokens, max_new_tokens=max_tokens)
        completion_params(tokenizer, settings).checked()  # the caller's values, checked as sampling will
    except AtomError as e:
        raise ApiError(400, str(e)) from None
    return settings


# --- ATOM -> responses -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(reason: str) -> str:
    """ATOM's reasons as OpenAI's: the token limit is "length"; a stop string, end-of-text or a
    stop request is "stop"."""
    return "length" if reason == "length" else "stop"


def usage(ans: Answer, tokenizer) -> dict:
    prompt = len(tokenizer.encode(ans.framed)) if ans.framed else 1
    completion = sum(c.tokens for c in ans.choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(ans: Answer, tokenizer, model_id: str, rid: str) -> dict:
    choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": finish_reason(c.finish_reason)}
               for i, c in enumerate(ans.choices)]
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
            "choices": choices, "usage": usage(ans, tokenizer)}


def chat_body(ans: Answer, tokenizer, model_id: str, rid: str) -> dict:
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                "finish_reason": finish_reason(c.finish_reason)} for i, c in enumerate(ans.choices)]
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "choices": choices, "usage": usage(ans, tokenizer)}


def chunk(chat: bool, rid: str, model_id: str, index: int | None = None, text: str | None = None,
          reason: str | None = None, role: bool = False, usage_: dict | None = None) -> str:
    """One server-sent event of a streamed answer (index None: the usage-only last chunk)."""
    choices = []
    if index is not None:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choices.append({"index": index, "delta": delta, "logprobs": None, "finish_reason": reason})
        else:
            choices.append({"index": index, "text": text or "", "logprobs": None, "finish_reason": reason})
    body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model_id, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return f"data: {json.dumps(body)}\n\n"
