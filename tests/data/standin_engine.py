"""A stand-in for vLLM's OpenAI server in the fast tests of runners/svrunner/serve.py (stdlib only).

It speaks the three endpoints serve.py uses, with vLLM's command-line flags (--port,
--served-model-name; the rest are accepted and ignored) and its key variable (VLLM_API_KEY), and
misbehaves on request, so the lifecycle can be tested without the engine's minutes of start-up:
  --exit-at-start CODE   print a few lines and exit with CODE before binding the port
  --never-healthy        bind and answer, but /health says 503 forever
  --die-after N          the (N+1)-th chat request kills the whole server mid-request
  --grandchild           fork a child process that sleeps (vLLM forks its engine processes)
The real engine is tested the same way in tests/test_serve_vllm.py (heavy).
"""

import argparse
import http.server
import json
import os
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--served-model-name", required=True)
p.add_argument("--exit-at-start", type=int)
p.add_argument("--never-healthy", action="store_true")
p.add_argument("--die-after", type=int)
p.add_argument("--grandchild", action="store_true")
args, _ignored = p.parse_known_args()
KEY = os.environ.get("VLLM_API_KEY")
print(f"standin: starting on port {args.port} as {args.served_model_name}", flush=True)
if args.exit_at_start is not None:
    print("standin: cannot load the checkpoint (told to fail at start)", flush=True)
    sys.exit(args.exit_at_start)
if args.grandchild:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print(f"standin: forked engine process {child.pid}", flush=True)
served = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *a):
        print("standin: " + fmt % a, flush=True)

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self):
        return KEY is None or self.headers.get("Authorization") == f"Bearer {KEY}"

    def do_GET(self):
        if self.path == "/health":
            return self._send(503 if args.never_healthy else 200, {})
        if self.path == "/v1/models":
            if not self._authorised():
                return self._send(401, {"error": "bad key"})
            return self._send(200, {"data": [{"id": args.served_model_name}]})
        self._send(404, {})

    def do_POST(self):
        global served
        length = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions" or not self._authorised():
            return self._send(401, {"error": "bad key or path"})
        if req.get("model") != args.served_model_name:
            return self._send(404, {"error": f"no model {req.get('model')}"})
        if args.die_after is not None and served >= args.die_after:
            print("standin: engine core died (told to die mid-request)", flush=True)
            os.kill(os.getpid(), 9)
        served += 1
        text = " ".join(c.get("text", "") for m in req["messages"] for c in
                        (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]))
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": f"echo {len(text)}"}}],
                         "max_tokens": req.get("max_tokens")})


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
print(f"standin: listening on 127.0.0.1:{args.port}", flush=True)
time.sleep(0.2)  # a server is never healthy at once
server.serve_forever()
