"""Run inside an env: VLMEvalKit's own `build_dataset` for every named benchmark, with nothing
built (each dataset class's __new__ answers with its name, so no __init__ runs and nothing is
downloaded), and what that env's run.py and evaluate() code say of its judge.

    <env>/bin/python dataset_check.py SCRIPTS_DIR NAMES.json      # prints one JSON object
"""

import json
import sys

sys.path.insert(0, sys.argv[1])

import probe_datasets  # scripts/ (argv[1]): run.py's judge, the reading of evaluate()
import vlmeval  # noqa: F401
from vlmeval.dataset import DATASET_CLASSES, build_dataset
from vlmeval.dataset.utils.judge_util import build_judge
from vlmeval.dataset.video_dataset_config import supported_video_datasets


def built_by(cls, *args, **kwargs):
    return ("built by", cls.__name__)


classes = set(DATASET_CLASSES) | {getattr(f, "func", f) for f in supported_video_datasets.values()}
for cls in list(classes):
    classes |= set(cls.__subclasses__())
for cls in classes:
    cls.__new__ = built_by  # a result that is no instance of cls: Python skips __init__

with open(sys.argv[2]) as fh:
    names = json.load(fh)
judge = probe_datasets.run_py_judge()
lookup = probe_datasets.lookup()
out = {}
for name in names:
    made = build_dataset(name)
    cls = made[1] if isinstance(made, tuple) else f"not a class of DATASET_CLASSES: {made!r}"
    entry = {"class": cls}
    if name in lookup:
        scoring, _ = lookup[name]
        parts = getattr(scoring, "DATASET_SETS", {}).get(name)
        scorer = lookup[parts[0]][0] if parts else scoring  # a concatenation scores by its parts
        type_, _ = probe_datasets.type_and_modality(scoring, name, lookup)
        entry.update(judge=judge(name, type_), facts=probe_datasets.judge_facts(scorer, build_judge))
    out[name] = entry
print(json.dumps(out))
