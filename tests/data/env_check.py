"""Run inside an env: the import line a user types, then every named catalog model's class
through the very path the runner takes (svrunner.kit.model_factory), without building a model.

    <env>/bin/python env_check.py RUNNERS_DIR SPEC.json     # SPEC: [{model spec as in a job file}]
"""

import json
import sys

sys.path.insert(0, sys.argv[1])

import torch
import transformers
import vlmeval
import vlmeval.inference  # noqa: F401
from svrunner import kit
from vlmeval.config import supported_VLM
from vlmeval.dataset import build_dataset  # noqa: F401

out = {"torch": torch.__version__, "transformers": transformers.__version__,
       "cpu_ok": float(torch.ones(3).sum()) == 3.0, "names": len(supported_VLM), "models": {}}
with open(sys.argv[2]) as fh:
    specs = json.load(fh)
for spec in specs:
    try:
        factory, source, _ = kit.model_factory(spec, "/nonexistent")
        target = getattr(factory, "func", factory)
        out["models"][spec["name"]] = kit.unavailable_reason(factory) or f"ok {target.__module__}.{target.__name__}"
    except Exception as e:  # a name the env's VLMEvalKit lacks, a class that is gone
        out["models"][spec["name"]] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
