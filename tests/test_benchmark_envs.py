"""Every catalog benchmark, in every env that claims it, is what VLMEvalKit's own build_dataset
makes of its name there (its class, found without building or downloading anything), and its
judge is what that env's vlmeval/run.py picks and its evaluate() code needs, derived afresh: a
VLMEvalKit release that changes either fails here until the catalog is regenerated.

Heavy (every shipped env really built, as test_real_envs does): run in CI.
"""

from __future__ import annotations

import json
import sys

import pytest

from spectravenv import procs
from spectravenv.catalog import loader
from spectravenv.paths import Paths

from .conftest import DATA, REPO, sync_shipped

sys.path.insert(0, str(REPO / "scripts"))
import gen_benchmarks  # scripts/: the derivation the catalog was generated with

pytestmark = pytest.mark.heavy
SHIPPED = loader.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=DATA / "no-config"))


@pytest.mark.parametrize("env_name", sorted(SHIPPED.model_envs()))
def test_every_benchmark_resolves_to_its_class_and_judge(heavy_home, env_name, tmp_path):
    cat, state, env = sync_shipped(heavy_home, env_name, tmp_path)
    claimed = {n: b for n, b in cat.benchmarks.items() if b.vlmeval_class and (not b.envs or env_name in b.envs)}
    assert len(claimed) >= 725
    names = tmp_path / "names.json"
    names.write_text(json.dumps(sorted(claimed)))
    out = procs.run([state.python, DATA / "dataset_check.py", REPO / "scripts", names], env=env, timeout=1800,
                    cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    wrong_class = {n: (b.vlmeval_class, found[n]["class"]) for n, b in claimed.items() if found[n]["class"] != b.vlmeval_class}
    assert not wrong_class, f"in {env_name}, catalog class vs build_dataset's: {wrong_class}"
    rules = gen_benchmarks.tomllib.loads(gen_benchmarks.RULES.read_text())
    wrong_judge = {}
    for n, b in claimed.items():
        if b.inference_only:
            continue  # never scored: no judge
        derived = gen_benchmarks.judge_of({"class": b.vlmeval_class, "judge": found[n]["judge"]}, found[n]["facts"], rules)
        if derived != (b.judge, b.judge_need, b.judge_evidence):
            wrong_judge[n] = {"catalog": (b.judge, b.judge_need), "env": derived[:2]}
    assert not wrong_judge, f"in {env_name}, run.py and evaluate() now say: {wrong_judge}"
