"""A small OpenAI-compatible server (the part of LM Studio's API that atomlib.apps.llm_client calls).

Listens on 127.0.0.1, port 0 (the OS picks a free one), in a background thread. Each
behaviour a test needs is a field of `StubServer.behaviour`:

    reply      the rewrite text the server answers (str), or a callable(request_json) -> str
    mode       "ok" | "500" | "malformed" | "sleep" | "no_models"
    sleep      seconds to wait before answering /chat/completions (mode "sleep")
    models     the ids /v1/models lists; the first entry is reported as loaded
    hook       callable(handler, method) -> bool: a hostile server's own answer, written raw to
               handler.wfile (see `send_raw` and `drip`); False falls back to the normal answer

Every request body is kept in `requests` so tests can check what was sent (the system
instruction, the model name, stream flag). Streaming requests are answered as SSE chunks.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(self, reply="In the dark of night, the fire burns on.", models=("dark-editor-7b", "other-model")):
        self.behaviour = {"reply": reply, "mode": "ok", "sleep": 0.0, "models": list(models), "hook": None}
        self.requests: list[dict] = []
        self.model_queries = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def _send(self, code, body: bytes, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _hooked(self, method) -> bool:
                hook = stub.behaviour["hook"]
                if hook is None or hook(self, method) is False:
                    return False
                self.close_connection = True
                return True

            def do_GET(self):
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, b'{"error": "not found"}')
                stub.model_queries += 1
                if self._hooked("GET"):
                    return
                b = stub.behaviour
                models = [] if b["mode"] == "no_models" else b["models"]
                data = [{"id": m, "object": "model", "owned_by": "stub",
                         **({"state": "loaded"} if i == 0 else {"state": "not-loaded"})} for i, m in enumerate(models)]
                # list the loaded model last, so picking "the loaded one" is tested, not "the first one"
                data.reverse()
                self._send(200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                stub.requests.append(body)
                if self._hooked("POST"):
                    return
                b = stub.behaviour
                mode = b["mode"]
                if mode == "sleep":
                    time.sleep(b["sleep"])
                if mode == "500":
                    return self._send(500, b'{"error": {"message": "model crashed"}}')
                if mode == "malformed":
                    return self._send(200, b'{"choices": [{"message": {"content": "half')
                reply = b["reply"](body) if callable(b["reply"]) else b["reply"]
                if body.get("stream"):
                    return self._stream(reply, body)
                payload = {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                        "finish_reason": "stop"}]}
                self._send(200, json.dumps(payload).encode())

            def _stream(self, reply, body):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                words = reply.split(" ")
                pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
                try:
                    for p in pieces:
                        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body.get("model"),
                                 "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="lmstudio-stub",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "StubServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def send_raw(handler, head: str, chunks=(), pause: float = 0.0) -> None:
    """Write `head` (status line and headers, no blank line) and then each chunk of the body,
    sleeping `pause` seconds after each; stops quietly when the client hangs up."""
    try:
        handler.wfile.write(head.replace("\n", "\r\n").encode() + b"\r\n\r\n")
        handler.wfile.flush()
        for chunk in chunks:
            handler.wfile.write(chunk)
            handler.wfile.flush()
            time.sleep(pause)
    except OSError:  # BrokenPipe / ConnectionReset: the client gave up, as it should
        pass


def drip(handler, data: bytes, every: float = 0.5) -> None:
    """Write `data` (a whole raw answer, headers included) one byte every `every` seconds."""
    try:
        for i in range(len(data)):
            handler.wfile.write(data[i:i + 1])
            handler.wfile.flush()
            time.sleep(every)
    except OSError:
        pass


def free_port_url() -> str:
    """A 127.0.0.1 URL where nothing listens (a port that was just free)."""
    from atomlib.paths import free_port

    return f"http://127.0.0.1:{free_port()}/v1"


if __name__ == "__main__":  # run it by hand: python tests/lmstudio_stub.py
    with StubServer() as srv:
        print(f"stub OpenAI-compatible server at {srv.url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
