"""The loopback HTTP endpoints of the tests (OpenAI-compatible models and judges, a foreign server
on a port) answer JSON the same way: one base class for that and for staying quiet."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


class JSONHandler(BaseHTTPRequestHandler):
    def send_json(self, status: int, payload: Any) -> None:
        """Answer with `payload` (a str is sent as it is, anything else as JSON)."""
        raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def read_json(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def log_message(self, *args: object) -> None:
        pass  # the tests' output stays the tests'
