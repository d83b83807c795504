"""A minimal OpenAI-compatible HTTP server over a local model (for the HTTP judge and its tests).

Endpoints: GET /v1/models, GET /health, POST /v1/chat/completions (messages, max_tokens or
max_completion_tokens, temperature (0 = greedy), top_p, seed, n). Generation goes through
engine.TransformersEngine one request at a time (a lock; the model is not thread-safe), so the
responses of a greedy request are exactly what the local judge backend would produce.

    python -m igrpo_core.serve --model DIR [--gguf_file F] [--host 127.0.0.1] [--port 8000]

Binds to loopback by default. A prompt longer than the model context is a 400 error with code
"context_length_exceeded", not a crash.

Deliberately left out: streaming, tools, logprobs, authentication, batching across requests.

Why not `transformers serve` (5.19, tried offline on loopback with fastapi 0.165 + openai 3.57, which
the project does not otherwise need): its greedy replies equal ours on the tiny model, but GET
/v1/models lists the HF cache, not the served model (HTTP 500 CacheNotFound without a cache dir,
`[]` with an empty one), so the judge cannot discover the model name; requests must name the model by
the exact path it was started with; a prompt longer than the model context is generated anyway (HTTP
200, garbage verdict) where the judge needs a 400 "context_length_exceeded" to record a request
error; malformed requests (empty messages, unknown role, max_tokens 0) are HTTP 500, which the judge
retries as server faults; `n` > 1 returns one choice; a local GGUF (SmolLM2-135M Q4_1,
`serve DIR:file.gguf`) fails at start-up with TypeError (config.architectures is None); start-up
takes 13-25 s on 2 CPUs against a thread start here.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from igrpo_core.engine import SamplingParams

MAX_BODY_BYTES = 4 << 20


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, engine, tokenizer, model_name: str, max_model_len: int | None = None,
                 default_max_tokens: int = 256):
        super().__init__(addr, _Handler)
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.max_model_len, self.default_max_tokens = max_model_len, default_max_tokens
        self.lock = threading.Lock()
        self.requests_received = 0   # chat completion requests, answered or refused
        self.requests_served = 0     # of those, the ones that generated

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"


class _BadRequest(Exception):
    def __init__(self, message: str, code: str = "invalid_request_error", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


def _render(tokenizer, messages) -> list[int]:
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("messages must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                "system", "user", "assistant"):
            raise _BadRequest("each message needs role system|user|assistant and string content")
    ids = tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                        add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def chat_completion(server: ModelServer, req: dict) -> dict:
    """The response body for one /v1/chat/completions request."""
    ids = _render(server.tokenizer, req.get("messages"))
    max_tokens = next((req[k] for k in ("max_completion_tokens", "max_tokens") if req.get(k) is not None),
                      server.default_max_tokens)
    max_tokens, n = int(max_tokens), int(req.get("n", 1) if req.get("n") is not None else 1)
    temperature = float(req.get("temperature", 1.0))
    if max_tokens < 1 or not 1 <= n <= 16 or temperature < 0:
        raise _BadRequest("need max_tokens >= 1, 1 <= n <= 16, temperature >= 0")
    if server.max_model_len is not None and len(ids) + max_tokens > server.max_model_len:
        raise _BadRequest(f"prompt has {len(ids)} tokens; with max_tokens {max_tokens} that exceeds the "
                          f"model context of {server.max_model_len}", code="context_length_exceeded")
    params = SamplingParams(n=n, greedy=temperature == 0, temperature=temperature or 1.0,
                            top_p=float(req.get("top_p", 1.0)), max_new_tokens=max_tokens,
                            seed=int(req.get("seed") or 0))
    with server.lock:
        comps = server.engine.generate([ids], params)
        server.requests_served += 1
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": server.model_name,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                     "finish_reason": c.finish_reason} for i, c in enumerate(comps)],
        "usage": {"prompt_tokens": len(ids), "completion_tokens": sum(len(c.ids) for c in comps),
                  "total_tokens": len(ids) + sum(len(c.ids) for c in comps)},
    }


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: callers own the logging
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, exc: _BadRequest) -> None:
        self._send(exc.status, {"error": {"message": str(exc), "type": "invalid_request_error", "code": exc.code}})

    def do_GET(self):
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model",
                                                         "owned_by": "igrpo"}]})
        elif self.path.rstrip("/") == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._error(_BadRequest(f"no route {self.path}", "not_found", 404))

    def do_POST(self):
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            return self._error(_BadRequest(f"no route {self.path}", "not_found", 404))
        self.server.requests_received += 1
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                raise _BadRequest(f"request body must be 1..{MAX_BODY_BYTES} bytes")
            try:
                req = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise _BadRequest(f"body is not JSON: {exc}") from None
            if not isinstance(req, dict):
                raise _BadRequest("body must be a JSON object")
            self._send(200, chat_completion(self.server, req))
        except _BadRequest as exc:
            self._error(exc)
        except (TypeError, ValueError) as exc:
            self._error(_BadRequest(f"bad request: {exc}"))
        except Exception as exc:  # the server stays up; the client sees a 500 and may retry
            self._error(_BadRequest(f"{type(exc).__name__}: {exc}", "server_error", 500))


def start_server(engine, tokenizer, model_name: str, *, host: str = "127.0.0.1", port: int = 0,
                 max_model_len: int | None = None) -> tuple[ModelServer, threading.Thread]:
    """Serve in a daemon thread (port 0: a free port; see server.url). Stop with stop_server."""
    if max_model_len is None:
        config = getattr(getattr(engine, "model", None), "config", None)
        max_model_len = getattr(config, "max_position_embeddings", None)
    server = ModelServer((host, port), engine, tokenizer, model_name, max_model_len)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return server, thread


def stop_server(server: ModelServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m igrpo_core.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local model directory or HF id")
    ap.add_argument("--gguf_file", help="GGUF file inside --model")
    ap.add_argument("--name", help="model name reported by /v1/models (default: --model)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch_threads", type=int, default=None)
    ns = ap.parse_args(argv)
    from igrpo_core.models import load_transformers_engine, setup_threads
    setup_threads(ns.torch_threads)
    engine, tok = load_transformers_engine(ns.model, ns.gguf_file, device=ns.device, dtype="float32")
    server = ModelServer((ns.host, ns.port), engine, tok, ns.name or ns.model,
                         getattr(engine.model.config, "max_position_embeddings", None))
    print(f"serving {ns.name or ns.model} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
