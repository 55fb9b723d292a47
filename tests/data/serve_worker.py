"""A worker that starts an engine server with runners/svrunner/serve.py and then waits to be
stopped (tests/test_serve.py and the heavy vLLM test send it signals).

usage: python serve_worker.py RUNNERS_DIR STATE_JSON -- SERVER ARGV... ({port} {name} filled in)
It writes STATE_JSON (server pid, port, key, served name) once the server is healthy.
"""

import json
import sys
import time

sys.path.insert(0, sys.argv[1])
from svrunner import serve

state_path, argv = sys.argv[2], sys.argv[sys.argv.index("--") + 1 :]


def command(port, name):
    return [a.replace("{port}", str(port)).replace("{name}", name) for a in argv]


with serve.Server(command, settings=serve.Settings(health_seconds=1200, stop_seconds=20)) as server:
    with open(state_path + ".tmp", "w") as fh:
        json.dump({"pid": server.proc.pid, "port": server.port, "key": server.key,
                   "name": server.served_name, "api_base": server.api_base}, fh)
    import os

    os.replace(state_path + ".tmp", state_path)
    print("worker: serving", flush=True)
    while True:
        time.sleep(0.2)
        server.check()
