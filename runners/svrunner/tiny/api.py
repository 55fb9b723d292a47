"""The API path, offline: VLMEvalKit's GPT4V wrapper against a local OpenAI-compatible stand-in.

This checks the wrapper, not the service: the real VLMEvalKit GPT4V code builds its request (the
image encoded as a data URL, the prompt, the sampling fields), sends it over HTTP with its own
`requests` call and reads the answer out of the reply; the other end is a stand-in on 127.0.0.1
that checks the request has the shape of OpenAI's chat-completions API and answers "A". Whether
the real service, its models or a key work is not tested (that needs the network and a key).

The wrapper never raises on a failed request: it retries and then answers its fail message,
which the selftest would count as an answer. So the stand-in records every request, and leaving
`serve` raises when no well-formed request came or any request was malformed: that makes the
selftest row fail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from . import Recipe

KEY = "sk-selftest-local"
ANSWER = "A"
PATH = "/v1/chat/completions"
# How a real client may try to reach a proxy instead of 127.0.0.1: the wrapper passes
# http_proxy/https_proxy explicitly to requests, which then ignores no_proxy.
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def check_request(path: str, headers: dict[str, str], body: bytes) -> str:
    """What is wrong with a request, by OpenAI's chat-completions shape ("" when nothing)."""
    if path.split("?")[0] != PATH:
        return f"path {path!r}, not {PATH}"
    if headers.get("authorization") != f"Bearer {KEY}":
        return f"authorization header {headers.get('authorization')!r}"
    try:
        payload = json.loads(body)
    except ValueError as exc:
        return f"body is not JSON: {exc}"
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str) or not payload["model"]:
        return "no model named"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        return "messages do not end with a user turn"
    parts = messages[-1].get("content")
    if isinstance(parts, str):
        return "the user turn has no image (DemoMCQ rows have one)"
    texts = [p for p in parts if isinstance(p, dict) and p.get("type") == "text" and p.get("text")]
    images = [p for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    if not texts or not images:
        return f"the user turn has {len(texts)} text and {len(images)} image parts"
    for part in images:
        url = (part.get("image_url") or {}).get("url", "")
        head, _, data = url.partition(",")
        if not head.startswith("data:image/") or not head.endswith(";base64"):
            return f"image url {url[:40]!r} is no base64 data URL"
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            return "image data is not base64"
        if not (raw.startswith(b"\xff\xd8") or raw.startswith(b"\x89PNG")):
            return "image data is neither JPEG nor PNG"
    limit = payload.get("max_tokens", payload.get("max_completion_tokens"))
    if not isinstance(limit, int) or limit <= 0:
        return f"max_tokens {limit!r}"
    return ""


@contextlib.contextmanager
def local_openai() -> Iterator[dict[str, Any]]:
    """An OpenAI-compatible stand-in on 127.0.0.1 (stdlib http.server, in a thread) while the
    wrapper is built and asked; yields the wrapper's api_base and key. Raises on leaving when
    the wrapper sent no well-formed request."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []  # "" for a well-formed request, else what was wrong

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            problem = check_request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            seen.append(problem)
            if problem:
                reply, status = {"error": {"message": f"selftest stand-in: {problem}", "type": "invalid_request"}}, 400
            else:
                reply = {
                    "id": f"chatcmpl-selftest-{len(seen)}", "object": "chat.completion", "created": 0,
                    "model": json.loads(body).get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": ANSWER}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
                }  # fmt: skip
                status = 200
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="selftest-openai", daemon=True)
    thread.start()
    saved = {k: os.environ.pop(k) for k in _PROXY_VARS if k in os.environ}
    saved_no_proxy = {k: os.environ.get(k) for k in ("no_proxy", "NO_PROXY")}
    for k in saved_no_proxy:
        os.environ[k] = ",".join(x for x in (saved_no_proxy[k], "127.0.0.1", "localhost") if x)
    try:
        yield {"api_base": f"http://127.0.0.1:{server.server_address[1]}{PATH}", "key": KEY}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        os.environ.update(saved)
        for k, v in saved_no_proxy.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bad = [p for p in seen if p]
    if not seen:
        raise RuntimeError("the wrapper sent no request to the local OpenAI stand-in")
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(seen)} requests to the local OpenAI stand-in were malformed: {bad[0]}")


def make_nothing(folder: str) -> None:
    """An API model has no checkpoint."""


RECIPES = [
    Recipe(
        name="openai-local",
        family="api_models",
        models=("GPT4o", "GPT4o_MINI", "GPT4o_20240806", "GPT4o_20241120"),
        make=make_nothing,
        # One try, short waits: a failure shows at once (the registry asks for 10 retries).
        kwargs={"max_tokens": 4, "retry": 1, "wait": 0, "timeout": 30, "verbose": False},
        path_kwarg="",  # no model_path: the wrapper takes api_base and key (from `serve`)
        serve=local_openai,
        note="the GPT4V wrapper against a local OpenAI-compatible stand-in, not the real service "
        "(no network, no key); Azure, the BOYUE override and other API wrappers are not covered",
    ),
]
