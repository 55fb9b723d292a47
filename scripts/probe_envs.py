#!/usr/bin/env python3
"""Build every shipped env (or those named) and record what its VLMEvalKit can do, for the catalog.

    python scripts/probe_envs.py [ENV]...      # writes data/probes/<env>.json

Runs scripts/probe_env.py inside each env (see there), with a clean environment: no API keys,
no network-dependent variables, HF offline. Then regenerate the catalog with
`python scripts/gen_catalog.py`. Both outputs are committed: the catalog is derived data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spectravenv.catalog import loader  # noqa: E402
from spectravenv.envs import venv as envs  # noqa: E402
from spectravenv.paths import Paths  # noqa: E402

KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SPECTRAVENV_HOME", "UV_CACHE_DIR", "UV_PYTHON_DOWNLOADS")


def main(names: list[str]) -> int:
    paths = Paths.from_env()
    cat = loader.load(paths)
    out_dir = REPO / "data" / "probes"
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k in KEEP}
    clean.update(HF_HUB_OFFLINE="1", LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONDONTWRITEBYTECODE="1")
    for name in names or sorted(cat.envs):
        state = envs.ensure(cat.env(name), paths, report=lambda m: print(m, file=sys.stderr))
        out = out_dir / f"{name}.json"
        print(f"probing {name} ...", file=sys.stderr)
        subprocess.run([state.python, REPO / "scripts" / "probe_env.py", out], env=clean, check=True,
                       stdout=subprocess.DEVNULL, cwd=out_dir)  # fmt: skip
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
