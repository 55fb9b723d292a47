"""The shipped envs, really built from their shipped locks: torch, transformers at the exact pin,
VLMEvalKit, and every catalog model name resolving to a class in that env's VLMEvalKit.

Heavy (a torch build is ~6 GB; the two envs share it through uv's cache): run in CI.
"""

from __future__ import annotations

import json

import pytest

from spectravenv import catalog, envs, procs
from spectravenv.paths import Paths

from .conftest import heavy_env, spectravenv_exe

pytestmark = pytest.mark.heavy

PROBE = """
import json, sys
import torch, transformers, vlmeval
from vlmeval.config import supported_VLM
names = sys.argv[1:]
out = {"torch": torch.__version__, "transformers": transformers.__version__,
       "cpu_ok": float(torch.ones(3).sum()) == 3.0, "classes": {}}
for n in names:
    f = supported_VLM.get(n)
    out["classes"][n] = None if f is None else f"{f.func.__module__}.{f.func.__name__}"
print(json.dumps(out))
"""


@pytest.mark.parametrize("env_name", ["tf437", "tf433"])
def test_shipped_env_builds_and_resolves_its_models(heavy_home, env_name):
    env = heavy_env(heavy_home)
    paths = Paths.from_env(env)
    cat = catalog.load(paths)
    proc = procs.run([*spectravenv_exe(), "sync", env_name, "--no-addons"], env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr
    state = envs.status(cat.envs[env_name], paths)
    assert state.state == "ready"
    names = [m.vlmeval_name for m in cat.models.values() if m.env == env_name and m.vlmeval_name]
    out = procs.run([state.python, "-c", PROBE, *names], env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["transformers"] == cat.envs[env_name].transformers
    assert info["torch"].startswith("2.1.2") and info["cpu_ok"]
    unresolved = [n for n, cls in info["classes"].items() if cls is None]
    assert not unresolved, f"not in {env_name}'s supported_VLM: {unresolved}"
    assert all(cls.startswith("vlmeval.vlm.") for cls in info["classes"].values())
