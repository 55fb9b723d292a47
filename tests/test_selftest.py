"""`spectravenv selftest` over every shipped env: each family's real VLMEvalKit wrapper on a tiny
checkpoint made in the env, on the CPU (this machine has no GPU), with no network.

Heavy: builds (or reuses) all the shipped envs in the session's home.
"""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, Workspace

pytestmark = pytest.mark.heavy

COMMITTED = REPO / "data" / "selftest"


def committed_ok() -> set[tuple[str, str]]:
    """The (env, recipe) pairs data/selftest/*.json says passed: what the generated catalog's
    verification level and the README claim."""
    rows = [
        r for p in sorted(COMMITTED.glob("*.json")) for r in json.loads(p.read_text())["results"]
    ]
    return {(r["env"], r["recipe"]) for r in rows if r["status"] == "ok"}


def test_every_env_runs_its_families_wrappers_on_tiny_checkpoints(demo_ws: Workspace):
    out = demo_ws.cwd / "selftest.json"
    proc = demo_ws.run("selftest", "--json", str(out), timeout=3600)
    results = json.loads(out.read_text())["results"]
    failed = [
        f"{r['env']} {r['recipe']}: {r['detail']}" for r in results if r["status"] == "failed"
    ]
    assert proc.returncode == 0 and not failed, "\n".join(failed) + proc.stderr[-2000:]

    ok = [r for r in results if r["status"] == "ok"]
    assert all(r["device"].startswith("cpu") and r["seconds"] > 0 for r in ok), ok
    families = {r["family"] for r in ok}
    assert len(families) >= 15, sorted(families)
    # Every env is accounted for: at least one family verified, or only families that
    # cannot be tested offline, each with its reason.
    for env in {r["env"] for r in results}:
        mine = [r for r in results if r["env"] == env]
        if not any(r["status"] == "ok" for r in mine):
            assert all(r["status"] == "not testable" and r["detail"] for r in mine), mine
    assert all(r["detail"] for r in results if r["status"] == "not testable")
    # What the catalog and README claim is what ran here.
    assert {(r["env"], r["recipe"]) for r in ok} == committed_ok()

    table = proc.stdout
    assert f"{len(ok)} ok ({len(families)} families" in table, table[-500:]


def test_unknown_env_or_family_is_one_line(demo_ws: Workspace):
    for args, word in (
        (["selftest", "tf999"], "tf999"),
        (["selftest", "--family", "nope_series"], "nope_series"),
    ):
        proc = demo_ws.run(*args)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], proc.stderr
