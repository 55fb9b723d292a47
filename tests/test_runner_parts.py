"""The runner's pure parts, imported on the host: events protocol, subset choice, fingerprints."""

from __future__ import annotations

import json
import os

from svrunner import fingerprint, sampling
from svrunner.protocol import KINDS, EventLog, EventReader, read_events


def test_every_event_kind_round_trips_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "e.jsonl"
    log = EventLog(str(path), "j", 0)
    for kind in sorted(KINDS):
        log.emit(kind, benchmark="B", value=float("nan"), nested={"x": (1, 2)})
    evs = read_events(path)
    assert [e["event"] for e in evs] == sorted(KINDS)
    assert all(e["job_id"] == "j" and e["rank"] == 0 and e["value"] is None for e in evs)
    assert evs[0]["nested"] == {"x": [1, 2]}
    # A crash mid-write leaves half a line: readers skip it, the next writer starts afresh.
    with path.open("ab") as f:
        f.write(b'{"event": "progress", "ti')
    reader = EventReader(str(path))
    assert len(reader.read()) == len(KINDS)
    EventLog(str(path), "j", 0).emit("job_done", ok=True, failed=[], seconds=1.0)
    assert [e["event"] for e in reader.read()] == ["job_done"]


def test_the_limit_subset_is_stratified_deterministic_and_keeps_circular_groups():
    indices = list(range(40))
    cats = ["a"] * 30 + ["b"] * 8 + ["c"] * 2
    rows, info = sampling.choose_subset(indices, cats, 10, seed=0)
    assert len(rows) == 10 and info["per_category"] == {"a": 7, "b": 2, "c": 1}
    assert sampling.choose_subset(indices, cats, 10, seed=0)[0] == rows
    assert sampling.choose_subset(indices, cats, 10, seed=1)[0] != rows
    assert rows != list(range(10))
    # MMBench style: i + 1e6 is a rotation of question i; whole questions are chosen.
    circ = [1, 2, 3, 4, 1_000_001, 1_000_002, 1_000_003, 1_000_004]
    rows, info = sampling.choose_subset(circ, ["x"] * 8, 2, seed=0)
    assert info["circular"] and len(rows) == 4
    assert {r % 1_000_000 for r in rows} == {r for r in rows if r < 1_000_000}
    assert sampling.allocate({"a": 5, "b": 1}, 3) == {"a": 2, "b": 1}
    assert sampling.allocate({"a": 5, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}


def test_fingerprint_changes_name_the_part_and_ignore_unknowns(tmp_path):
    old = {"settings": {"limit": 8}, "model": {"kwargs": {"a": 1}}, "checkpoint": None, "dataset": "d1"}
    assert fingerprint.changes(old, {**old, "checkpoint": "hub:x@1"}) == []  # unknown before
    assert fingerprint.changes(old, {**old, "model": {"kwargs": {"a": 2}}}) == ["model (kwargs)"]
    assert fingerprint.changes(old, {**old, "dataset": "d2"}) == ["dataset"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    first = fingerprint.checkpoint_identity(str(ckpt), None)
    (ckpt / "model.safetensors").write_bytes(b"w")
    assert first.startswith("dir:") and fingerprint.checkpoint_identity(str(ckpt), None) != first
    hub = tmp_path / "hf" / "hub" / "models--org--m" / "refs"
    hub.mkdir(parents=True)
    (hub / "main").write_text("abc123\n")
    assert fingerprint.checkpoint_identity("org/m", str(tmp_path / "hf")) == "hub:org/m@abc123"
    assert fingerprint.checkpoint_identity("org/other", str(tmp_path / "hf")) is None


def test_dataset_hashes_are_cached_by_size_and_mtime(tmp_path):
    tsv = tmp_path / "B.tsv"
    tsv.write_text("index\tquestion\n1\tq\n")
    cache = tmp_path / "cache"
    first = fingerprint.dataset_sha256(str(tsv), str(cache))
    assert json.loads((cache / "B.tsv.sha256.json").read_text())["sha256"] == first
    tsv.write_text("index\tquestion\n1\tQ\n")
    os.utime(tsv, ns=(1, 1))
    assert fingerprint.dataset_sha256(str(tsv), str(cache)) != first
