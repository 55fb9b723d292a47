"""VLMEvalKit's own `vlmeval/run.py` on the built-in demo model, registered in supported_VLM the
way a user registers a model of their own (tests/test_parity.py compares what it writes with
spectravenv's run folder).

    <env python> run_py_parity.py RUNNERS_DIR ASSETS_DIR WORK_DIR DATASET...
"""

import functools
import sys

runners, assets, work, *datasets = sys.argv[1:]
sys.path.insert(0, runners)

from svrunner import demo  # noqa: E402
from vlmeval import run  # noqa: E402
from vlmeval.config import supported_VLM  # noqa: E402

name = demo.DEMO_MODEL_NAME
supported_VLM[name] = functools.partial(demo.builtin_model_class(name), assets_dir=assets)
sys.argv = [
    "run.py",
    "--model",
    name,
    "--data",
    *datasets,
    "--judge",
    "exact_matching",
    "--work-dir",
    work,
]
run.load_env()  # as `python run.py` does before main()
run.main()
