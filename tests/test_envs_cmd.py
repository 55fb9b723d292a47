"""`spectravenv envs`: a readable table (a model count per env, not a 2,800-character line),
`--models` for the lists wrapped to the screen, `--json` for machines. The real CLI, no env built."""

from __future__ import annotations

import json

from .conftest import Workspace


def test_envs_shows_counts_and_lists_on_request(ws: Workspace):
    data = json.loads(ws.run("envs", "--json", check=True).stdout)
    by_env = {e["env"]: e for e in data}
    assert by_env["tf437"]["models"] and by_env["tf437"]["state"] == "missing"
    assert all(set(e) == {"env", "transformers", "python", "lock", "state", "disk_bytes", "models"} for e in data)

    text = ws.run("envs", check=True).stdout
    assert max(len(line) for line in text.splitlines()) < 120, text
    [line] = [ln for ln in text.splitlines() if ln.split()[:1] == ["tf437"]]
    assert line.split()[-1] == str(len(by_env["tf437"]["models"]))  # a count, not the list

    listed = ws.run("envs", "--models", check=True).stdout
    assert max(len(line) for line in listed.splitlines()) <= 100
    flat = " ".join(line.strip() for line in listed.split(f"tf437 ({len(by_env['tf437']['models'])}):", 1)[1].split("\n\n")[0].splitlines())
    assert [m.strip() for m in flat.split(",")] == by_env["tf437"]["models"]
