"""`spectravenv models`: SEARCH and --family as users type them (any case, `qwen` for VLMEvalKit's
qwen*_series groups), one line with suggestions when nothing matches, a status column of whole
phrases (the whole reason in --json). The real CLI on the shipped catalog."""

from __future__ import annotations

import json
import re

from .conftest import Workspace


def rows(text: str) -> list[dict[str, str]]:
    """The table's rows as {header: cell}, cut at the columns the dashes line marks."""
    lines = text.split("\n\n")[0].splitlines()
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    cells = [[line[a : (spans[i + 1][0] if i + 1 < len(spans) else None)].strip() for i, (a, _) in enumerate(spans)]
             for line in lines]  # fmt: skip
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


def folded(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def records(ws: Workspace, *args: str) -> list[dict]:
    return json.loads(ws.run("models", *args, "--json", check=True).stdout)


def test_search_is_a_part_of_a_name_or_family_in_any_case(ws: Workspace):
    every = records(ws)
    found = rows(ws.run("models", "qwen2.5-vl", check=True).stdout)
    names = {r["model"] for r in found}
    assert "Qwen2.5-VL-7B-Instruct" in names
    assert names == {
        m["name"]
        for m in every
        if "qwen25vl" in folded(m["name"]) or "qwen25vl" in folded(m["family"])
    }
    assert {r["model"] for r in rows(ws.run("models", "QWEN2.5 VL", check=True).stdout)} == names
    # A family's name finds its models too.
    assert {m["name"] for m in records(ws, "internvl2_5_mpo")} == {
        m["name"] for m in every if m["family"] == "internvl2_5_mpo"
    }


def test_family_takes_the_name_users_type(ws: Workspace):
    families = {m["family"] for m in records(ws, "--family", "qwen")}
    assert {"qwen_series", "qwen2vl_series", "qwen3vl_series"} <= families
    assert all("qwen" in f for f in families)
    families = {m["family"] for m in records(ws, "--family", "InternVL")}
    assert {"internvl", "internvl2", "internvl2_5", "internvl3", "internvl3_5"} <= families
    # VLMEvalKit's exact group name still works, and means only that group.
    assert {m["family"] for m in records(ws, "--family", "qwen2vl_series")} == {"qwen2vl_series"}


def test_nothing_found_is_one_line_saying_what_to_try(ws: Workspace):
    proc = ws.run("models", "--family", "qwn")
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert "no model family matches 'qwn' (did you mean: qwen" in line

    proc = ws.run("models", "qwen2.5-vl-7b-instrukt")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "no model name or family holds 'qwen2.5-vl-7b-instrukt'" in line
    assert "did you mean: Qwen2.5-VL-7B-Instruct" in line

    # Each filter matches models, none matches them all: one line, not an empty table.
    proc = ws.run("models", "--family", "llama", "--kind", "api", check=True)
    assert (
        proc.stdout.strip()
        == "no model matches --family llama, --kind api together; drop one of them"
    )


def test_the_status_column_is_whole_phrases_and_json_has_the_whole_reason(ws: Workspace):
    reasons = {m["name"]: m["blocked"] for m in records(ws) if m["blocked"]}
    table = {r["model"]: r["status"] for r in rows(ws.run("models", check=True).stdout)}
    assert len(reasons) > 50
    for name, reason in reasons.items():
        shown = table[name].removeprefix("blocked: ")
        assert shown and len(shown) <= 72, (name, shown)
        assert reason.startswith(shown), (name, shown, reason)
        # It stops at the end of a clause or a phrase, never inside a word or parentheses.
        rest = reason[len(shown) :]
        assert rest == "" or rest[0] in ":;,(" or rest.startswith(" ("), (name, shown, reason)
        assert shown.count("(") == shown.count(")"), (name, shown)
