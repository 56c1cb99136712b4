"""`atom serve`: a trained run behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

    atom serve --run outputs/runs/tiny            # http://127.0.0.1:8000/v1, no key needed
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "ravens"}])

Endpoints: GET /v1/models, POST /v1/completions, POST /v1/chat/completions (streamed as
server-sent events ending in `data: [DONE]`, or not) and GET /health. Every request runs the one
answer pipeline (generation.answer) in a worker thread, sampling through one Batcher, so
requests in flight decode together (continuous batching). serve_api.py maps the OpenAI
parameters onto ATOM's and says how chat messages become a prompt.

Limits and errors. Each error is OpenAI's JSON with its status, never a traceback: 400 (a bad
value), 401 (a missing or wrong key, compared in constant time), 404 (an unknown model or
path), 413 (a body over the limit), 422 (a field of the wrong type), 429 (every row busy and the
waiting line full). max_tokens is lowered to the server's cap. A client that disconnects stops
its generation at the next step, freeing its rows, whether it was streaming or waiting for the
whole answer.

Streaming. A stream sends what was drawn since its last event at most every `stream_interval`
seconds (20 ms: a screen refreshes every 17), the first piece at once. One event a token would
cost the server and the client more than drawing the token does on a small model.

Security. The server binds 127.0.0.1. Another --host needs --api-key, or --insecure, which says
that anyone who can reach the port may use the model.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import threading
import time
from dataclasses import dataclass
from functools import partial

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from atomlib.apps.serve_api import (ApiError, ChatRequest, CompletionRequest, Limits, chat_body, chat_prompt, chunk,
                                    completion_body, completion_prompt, finish_reason, new_id, settings_for, usage)
from atomlib.errors import AtomError
from atomlib.generation.answer import answer
from atomlib.generation.batcher import Batcher, QueueFull
from atomlib.model.checkpoint import load_run
from atomlib.paths import free_port, resolve_run

DISCONNECT_POLL = 0.25  # seconds between checks that a client waiting for a whole answer is still there


@dataclass
class Served:
    """What the app serves: one model under one id, its batcher, the key and the limits."""

    model: object
    tokenizer: object
    model_id: str
    batcher: Batcher
    limits: Limits
    api_key: str | None = None
    created: int = 0


class _Gate:
    """Requests in flight (decoding or waiting), bounded: the one more is refused with 429."""

    def __init__(self, limit: int):
        self.limit, self.count, self.lock = limit, 0, threading.Lock()

    def enter(self) -> None:
        with self.lock:
            if self.count >= self.limit:
                raise ApiError(429, "the server is busy (every slot decoding, the queue full); retry shortly.",
                               code="rate_limit_exceeded")
            self.count += 1

    def leave(self, *_) -> None:
        with self.lock:
            self.count -= 1


def create_app(served: Served) -> FastAPI:
    """The FastAPI app over one model (tests run it with uvicorn on 127.0.0.1)."""
    app = FastAPI(title="ATOM-GPT", docs_url=None, redoc_url=None, openapi_url=None)
    gate = _Gate(served.limits.max_rows + served.limits.max_waiting)
    limiter = anyio.CapacityLimiter(gate.limit)
    _add_error_handlers(app)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.model_id, **served.batcher.load()}

    @app.get("/v1/models")
    async def models(request: Request):
        _authorize(request, served)
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "created": served.created,
                                            "owned_by": "atom-gpt"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await _read(request, served, CompletionRequest)
        return await _respond(request, served, gate, limiter, req, completion_prompt(req), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = await _read(request, served, ChatRequest)
        return await _respond(request, served, gate, limiter, req, chat_prompt(req), chat=True)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # unknown paths and methods
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):  # a bug of ours: said plainly, without a traceback
        return JSONResponse(ApiError(500, "internal error; the server log says more.").body(), status_code=500)


def _authorize(request: Request, served: Served) -> None:
    if served.api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), served.api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send it as 'Authorization: Bearer KEY'.",
                       code="invalid_api_key")


async def _read(request: Request, served: Served, kind):
    """The request's body, checked in order: key (401), size (413), JSON (400), fields (422), model (404)."""
    _authorize(request, served)
    limit = served.limits.max_body
    if int(request.headers.get("content-length") or 0) > limit:
        raise ApiError(413, f"the request body is larger than {limit:,} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"the request body is larger than {limit:,} bytes.")
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "the request body is not JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object.")
    try:
        req = kind.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"])
        raise ApiError(422, f"{param}: {err['msg']}", param=param) from None
    if req.model != served.model_id:
        raise ApiError(404, f"the model {req.model!r} does not exist; this server has {served.model_id!r}.",
                       param="model", code="model_not_found")
    return req


async def _respond(request: Request, served: Served, gate: _Gate, limiter, req, prompt: str, chat: bool):
    settings = settings_for(req, served.tokenizer, served.limits)
    gate.enter()
    if req.stream:
        return StreamingResponse(_events(served, req, settings, chat, *_start(served, gate, limiter, prompt, settings)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        ans = await _whole(request, served, limiter, prompt, settings)
    except QueueFull as e:
        raise ApiError(429, str(e), code="rate_limit_exceeded") from None
    except AtomError as e:
        raise ApiError(400, str(e)) from None
    finally:
        gate.leave()
    rid = new_id("chatcmpl" if chat else "cmpl")
    body = (chat_body if chat else completion_body)(ans, served.tokenizer, served.model_id, rid)
    return JSONResponse(body)


async def _whole(request: Request, served: Served, limiter, prompt: str, settings):
    """The whole answer, in a worker thread; a client that leaves meanwhile stops it (checked
    every DISCONNECT_POLL seconds)."""
    cancel = threading.Event()
    work = partial(answer, served.model, served.tokenizer, prompt, settings, should_stop=cancel.is_set,
                   decode=served.batcher.generate)
    task = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL))[0]:
        if await request.is_disconnected():
            cancel.set()
    return task.result()


def _start(served: Served, gate: _Gate, limiter, prompt: str, settings):
    """Start answering in a worker thread now, its pieces collected for the response; the gate is
    left when the answer is over, whether or not anyone reads the stream."""
    pieces, cancel = _Pieces(asyncio.get_running_loop()), threading.Event()
    ranked = settings.mode == "completion"  # its endings are ranked at the end: sent whole

    def work():
        try:
            return answer(served.model, served.tokenizer, prompt, settings, should_stop=cancel.is_set,
                          on_token=None if ranked else (lambda i, piece: pieces.put((i, piece))),
                          decode=served.batcher.generate)
        finally:
            pieces.put(None)

    task = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    task.add_done_callback(gate.leave)
    return task, pieces, cancel


class _Pieces:
    """A stream's pieces, (sample, text) then None at the end, put by the decoding thread and
    read by the response. The event loop is woken only when the response waits for them, not
    once a token."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.lock = loop, threading.Lock()
        self.items: list = []
        self.waiter: asyncio.Future | None = None

    def put(self, item) -> None:
        with self.lock:
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            try:
                self.loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the event loop is gone (shutdown)
                pass

    async def ready(self) -> dict[int, str] | None:
        """What has arrived, joined per sample (waiting for something if nothing has); None once
        the answer is over."""
        with self.lock:
            waiter = None if self.items else self.loop.create_future()
            self.waiter = waiter
        if waiter is not None:
            await waiter
        with self.lock:
            items, self.items = self.items, []
        ready: dict[int, str] = {}
        for item in items:
            if item is None:  # the end: the next call's, if pieces came with it
                with self.lock:
                    self.items.insert(0, None)
                return ready or None
            ready[item[0]] = ready.get(item[0], "") + item[1]
        return ready


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():  # (a response that stopped waiting cancelled it)
        waiter.set_result(None)


async def _events(served: Served, req, settings, chat: bool, task, pieces, cancel):
    """The answer as server-sent events. Leaving early (the client gone) stops the generation."""
    ranked = settings.mode == "completion"
    rid, mid = new_id("chatcmpl" if chat else "cmpl"), served.model_id
    try:
        if chat:
            for i in range(settings.n):
                yield chunk(chat, rid, mid, i, role=True)
        while (ready := await pieces.ready()) is not None:
            for i, text in ready.items():
                yield chunk(chat, rid, mid, i, text)
            await asyncio.sleep(served.limits.stream_interval)  # what arrives meanwhile goes in the next event
        try:
            ans = await task
        except Exception as e:  # after the 200 is sent an error can only be an event
            err = ApiError(429 if isinstance(e, QueueFull) else 400 if isinstance(e, AtomError) else 500,
                           str(e) if isinstance(e, AtomError) else "internal error; the server log says more.")
            yield f"data: {json.dumps(err.body())}\n\n"
            return
        for i, c in enumerate(ans.choices):
            text = c.text if ranked else None
            yield chunk(chat, rid, mid, i, text, finish_reason(c.finish_reason))
        if (req.stream_options or {}).get("include_usage"):
            yield chunk(chat, rid, mid, usage_=usage(ans, served.tokenizer))
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # (a no-op once the answer is complete)


# --- running it ----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """A server reachable from other machines needs a key, or the --insecure that says it has none."""
    if not is_loopback(host) and not api_key and not insecure:
        raise AtomError(f"--host {host} would let anyone who can reach this machine use the model; "
                        "give --api-key KEY, or --insecure to serve it without one.")


def open_run(run=None, device: str = "auto", limits: Limits | None = None, api_key: str | None = None) -> Served:
    """A run (default: the newest under outputs/runs/) ready to serve, under its folder's name."""
    run = resolve_run(run)
    model, tokenizer, _ = load_run(run, device=device)
    limits = limits or Limits()
    batcher = Batcher(model, tokenizer, max_rows=limits.max_rows, max_waiting=limits.max_rows + limits.max_waiting,
                      inline_callbacks=True,  # (the callbacks only hand pieces to the event loop)
                      spare_cores=1)  # for the event loop and the clients (the README's serve section measures it)
    return Served(model, tokenizer, run.name, batcher, limits, api_key, int(run.stat().st_mtime))


class Background:
    """The server in a thread on a free port of 127.0.0.1 (the tests, the benchmark, notebook 06)."""

    def __init__(self, served: Served, port: int = 0, timeout: float = 30.0, own: bool = True):
        port = port or free_port()
        self.served, self.port, self.url, self.own = served, port, f"http://127.0.0.1:{port}", own
        config = uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="atom-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AtomError(f"the server did not start on 127.0.0.1:{port}; is the port taken?")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server, and its batcher when it owns it (not when servers share one)."""
        self.server.should_exit = True
        self.thread.join(10)
        if self.own:
            self.served.batcher.close()


def serve(served: Served, host: str = "127.0.0.1", port: int = 8000, insecure: bool = False) -> None:
    """Run the server until Ctrl-C."""
    check_exposure(host, served.api_key, insecure)
    try:
        uvicorn.run(create_app(served), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        served.batcher.close()
