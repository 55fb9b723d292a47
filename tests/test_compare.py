"""`spectravenv compare RUN_A RUN_B`: per-pair score differences and statuses, and the provenance
differences of the two manifests and fingerprints; for two real demo runs of different --limit
(heavy), and for run folders that only hold a manifest (the real CLI, no env)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from spectravenv.catalog.entries import Benchmark, Catalog
from spectravenv.results import compare, samples
from spectravenv.results.rows import Row

from .conftest import Workspace


def manifest(name: str, limit: int | None, torch: str = "2.1.2") -> dict:
    return {
        "schema": 2, "run": name, "status": "finished", "command": f"spectravenv eval m1 m2 A B --run-name {name}",
        "started": "2026-12-01T10:00:00+0000", "finished": "2026-12-01T10:05:00+0000",
        "host": "node1", "launcher": "local", "judge": "exact_matching", "limit": limit, "seed": 0,
        "spectravenv": {"version": "0.1.0", "git_revision": "abc"},
        "models": ["m1", "m2"], "benchmarks": ["A", "B"], "skipped_pairs": [], "secrets_passed": [],
        "gpus": [{"index": 0, "name": "NVIDIA H100", "memory_total_mb": 81559, "driver": "550", "used": True},
                 {"index": 1, "name": "NVIDIA H100", "memory_total_mb": 81559, "driver": "550", "used": False}],
        "envs": {"tf437": {"key": "k", "lock_sha256": "a" * 64, "python": "3.10.13", "cuda_runtime": "12.1",
                           "lock": "/x/tf437.lock",
                           "versions": {"torch": torch, "transformers": "4.37.2", "vlmeval": "0.0.20"}}},
        "attempts": [{"started": "2026-12-01T10:00:00+0000"}],
    }  # fmt: skip


def test_manifest_fields_name_every_difference_that_could_explain_a_score():
    a = manifest("r1", 8)
    b = copy.deepcopy(a) | {"run": "r2", "started": "2026-12-02T00:00:00+0000", "limit": 4}
    b["envs"]["tf437"]["versions"]["torch"] = "2.8.0"
    b["gpus"][1]["used"] = True
    b["attempts"].append({"started": "later"})
    b["envs"]["tf450"] = {"key": "k2", "versions": {"torch": "2.8.0"}}
    va, vb = compare.manifest_view(a), compare.manifest_view(b)
    changed = {d.field: (d.a, d.b) for d in compare.provenance_diff(va, vb)}
    # When and under which name a run ran explains nothing, and is not listed; an env only one
    # run has is one field, not one per package.
    assert set(changed) == {"limit", "envs.tf437.versions.torch", "gpus (used)", "envs.tf450"}
    assert changed["limit"] == ("8", "4")
    assert changed["envs.tf437.versions.torch"] == ("2.1.2", "2.8.0")
    assert "1: NVIDIA H100" in changed["gpus (used)"][1] and "1:" not in changed["gpus (used)"][0]
    assert changed["envs.tf450"][0] is None and json.loads(changed["envs.tf450"][1])["key"] == "k2"
    assert compare.provenance_diff(va, compare.manifest_view(copy.deepcopy(a))) == []


def write_run(folder: Path, m: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(m))


def test_compare_of_runs_that_never_started_a_pair(ws: Workspace):
    """Only manifests: every pair is skipped on both sides, and the manifests' differences show."""
    a, b = ws.cwd / "outputs" / "a", ws.cwd / "outputs" / "b"
    write_run(a, manifest("a", 8) | {"models": ["demo-tiny-llava"], "benchmarks": ["DemoMCQ"]})
    write_run(
        b,
        manifest("b", None)
        | {"models": ["demo-tiny-llava"], "benchmarks": ["DemoMCQ", "DemoShapes"]},
    )
    proc = ws.run("compare", str(a), str(b), check=True)
    lines = proc.stdout.splitlines()
    assert any(
        line.split()[:4] == ["demo-tiny-llava", "DemoMCQ", "skipped", "skipped"] for line in lines
    )
    assert any("DemoShapes" in line and "only in B" in line for line in lines)
    assert any(line.split()[:3] == ["limit", "8", "null"] for line in lines), proc.stdout
    doc = json.loads(ws.run("compare", str(a), str(b), "--json", check=True).stdout)
    assert doc["schema"] == "spectravenv.compare/2"
    pairs = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    assert pairs[("demo-tiny-llava", "DemoShapes")]["only_in"] == "b"
    assert pairs[("demo-tiny-llava", "DemoMCQ")]["delta"] is None
    assert {"field": "limit", "a": "8", "b": "null"} in doc["provenance"]


def test_compare_refuses_what_is_not_a_run_in_one_line(ws: Workspace):
    good = ws.cwd / "outputs" / "a"
    write_run(good, manifest("a", 8))
    (ws.cwd / "empty").mkdir()
    for other in (ws.cwd / "nope", ws.cwd / "empty"):
        proc = ws.run("compare", str(good), str(other))
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and str(other) in proc.stderr, proc.stderr
    broken = ws.cwd / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    proc = ws.run("compare", str(broken), str(good))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- two real demo runs (heavy) ---------------------------------------------------------------


def scores(run: Path) -> dict[tuple[str, str], float]:
    with (run / "results" / "summary.csv").open() as f:
        return {
            (r["model"], r["benchmark"]): float(r["value"]) for r in csv.DictReader(f) if r["value"]
        }


@pytest.mark.heavy
def test_two_demo_runs_of_different_limits(demo_ws):
    for limit, name in (("8", "l8"), ("4", "l4")):
        proc = demo_ws.run("eval", "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", limit,
                           "--run-name", name)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    a, b = demo_ws.cwd / "outputs" / "l8", demo_ws.cwd / "outputs" / "l4"
    sa, sb = scores(a), scores(b)
    assert set(sa) == set(sb) and len(sa) == 2

    doc = json.loads(demo_ws.run("compare", str(a), str(b), "--json", check=True).stdout)
    pairs = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    assert set(pairs) == set(sa)
    for key, p in pairs.items():
        assert p["a"]["status"] == p["b"]["status"] == "done" and not p["status_changed"]
        assert p["delta"] == pytest.approx(sb[key] - sa[key], abs=1e-6)
        assert "settings (limit)" in p["fingerprint_changes"]
    prov = {f["field"]: (f["a"], f["b"]) for f in doc["provenance"]}
    assert prov["limit"] == ("8", "4")
    assert not any(k.startswith("envs.") for k in prov), "the same env built both runs"

    text = demo_ws.run("compare", str(a), str(b), check=True).stdout
    for model, bench in pairs:
        [line] = [ln for ln in text.splitlines() if ln.split()[:2] == [model, bench]]
        assert line.split()[2:5] == [f"{sa[(model, bench)]:.2f}", f"{sb[(model, bench)]:.2f}",
                                     f"{sb[(model, bench)] - sa[(model, bench)]:+.2f}"]  # fmt: skip
    assert any(ln.split()[:3] == ["limit", "8", "4"] for ln in text.splitlines()), text

    # A run against itself: nothing changed, nothing to explain.
    same = json.loads(demo_ws.run("compare", str(a), str(a), "--json", check=True).stdout)
    assert same["provenance"] == [] and all(p["delta"] == 0 for p in same["pairs"])


# ---- the paired test on the samples both runs scored (no env) -----------------------------------


def sample_row(run: str, hits: list[int], indices: list[str] | None = None) -> Row:
    indices = indices or [str(i) for i in range(len(hits))]
    sset = samples.SampleSet("m/B/m_B_exact_matching_result.xlsx", "hit",
                             [samples.Sample(i, float(h), i) for i, h in zip(indices, hits, strict=True)])
    value = 100 * sum(hits) / len(hits)
    judged = samples.assess(sset, "Overall", value)
    return Row("m", "tf437", "B", "done", "acc", value, len(hits), None, 1.0, "", run, "log",
               interval=judged.interval, sample_set=sset)  # fmt: skip


def test_paired_test_says_which_differences_are_more_than_noise():
    cat = Catalog(envs={}, models={}, benchmarks={"B": Benchmark("B", headline="Overall", scale=100)}, addons={})
    a = sample_row("a", [1] * 20 + [0] * 20)
    better = sample_row("b", [1] * 20 + [1] * 12 + [0] * 8)  # 12 more right, none lost
    test, note = compare.paired_test(a, better, cat)
    assert note == "" and test.test == "mcnemar exact" and test.discordant == (0, 12)
    assert test.significant and test.delta == pytest.approx(30.0) and test.n == 40
    noise = sample_row("b", [1] * 19 + [0] + [1] + [0] * 19)  # one lost, one won
    test, _ = compare.paired_test(a, noise, cat)
    assert not test.significant and test.p_value == 1.0 and test.delta == 0
    # Different subsets: only the samples both scored are paired.
    part = sample_row("b", [1, 1, 0], ["0", "1", "39"])
    test, _ = compare.paired_test(a, part, cat)
    assert test.n == 3 and test.delta == 0
    disjoint = sample_row("b", [1, 1], ["x", "y"])
    test, note = compare.paired_test(a, disjoint, cat)
    assert test is None and "no sample in common" in note
    a.interval, a.interval_note = None, "no per-sample results in VLMEvalKit's files for this dataset"
    test, note = compare.paired_test(a, better, cat)
    assert test is None and note.startswith("no paired test: A has no per-sample results")
