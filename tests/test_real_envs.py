"""Every shipped env, really built from its shipped lock: torch, transformers at the exact pin,
VLMEvalKit's model, dataset and inference code importing, and every runnable catalog model's class
resolving in its env through the same import path the runner uses.

Heavy (two torch builds, hardlinked into 13 envs through uv's cache): run in CI.
"""

from __future__ import annotations

import json

import pytest

from spectravenv import procs
from spectravenv.catalog import loader
from spectravenv.paths import RUNNERS_DIR, Paths
from spectravenv.run.jobfile import model_spec

from .conftest import DATA, sync_shipped

pytestmark = pytest.mark.heavy
SHIPPED = loader.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=DATA / "no-config")).model_envs()
TORCH = {"tf433": "2.1.2", "tf436": "2.1.2", "tf437": "2.1.2", "tf440": "2.1.2", "tf442": "2.1.2",
         "tf444": "2.1.2", "tf445": "2.1.2", "tf448": "2.1.2", "tf450": "2.8.0", "tf451": "2.8.0",
         "tf457": "2.8.0", "tf5": "2.8.0", "api": "2.8.0"}  # fmt: skip


def test_the_torch_table_covers_every_env():
    assert set(TORCH) == set(SHIPPED)


@pytest.mark.parametrize("env_name", sorted(SHIPPED, key=lambda n: (TORCH.get(n, ""), n)))
def test_shipped_env_builds_and_resolves_its_models(heavy_home, env_name, tmp_path):
    cat, state, env = sync_shipped(heavy_home, env_name, tmp_path)
    assert state.state == "ready"
    runnable = [m for m in cat.models.values() if m.env == env_name and not m.blocked and m.vlmeval_name]
    assert runnable, f"env {env_name} serves no runnable model"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps([model_spec(m) for m in runnable]))
    out = procs.run([state.python, DATA / "env_check.py", RUNNERS_DIR, spec], env=env, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["transformers"] == cat.envs[env_name].transformers
    assert info["torch"].startswith(TORCH[env_name]) and info["cpu_ok"]
    assert info["names"] >= 545  # VLMEvalKit 0.0.20's supported_VLM, whole
    bad = {n: r for n, r in info["models"].items() if not r.startswith("ok vlmeval.")}
    assert not bad, f"in {env_name}: {bad}"
    assert state.marker["versions"]["vlmeval"] == "0.0.20"
