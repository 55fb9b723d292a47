"""Reuse of earlier predictions of a pair: after a crash, a kill, or a retry, nothing is inferred
twice, and nothing is reused that was made under another fingerprint.

Sources of reusable answers, all in the pair's folder: the runner's own archive
(`.spectravenv_predictions.pkl`, which survives VLMEvalKit rewriting its prediction file), the
prediction file, VLMEvalKit's `_PREV.pkl`, the units' files (`.spectravenv_units/`, of any
sharding: a run resumed with other unit sizes still reuses them) and rank pickles. The pair's fingerprint is
kept in `.spectravenv_pair.json`; when it differs from the current one, everything in the folder
moves to `.superseded/<n>/` (kept, never deleted) and the pair starts afresh.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from typing import Any

from . import fingerprint
from .files import write_atomic
from .kit import Kit, log

ARCHIVE = ".spectravenv_predictions.pkl"
UNITS = ".spectravenv_units"  # each unit's own predictions (infer_data's out_file)
PAIR_STATE = ".spectravenv_pair.json"
SUPERSEDED = ".superseded"


def check_fingerprint(pair_dir: str, parts: dict[str, Any]) -> tuple[list[str], str | None]:
    """Compare with the pair's recorded fingerprint; on a difference move the old files aside.

    Returns (what changed, where the old files went); ([], None) when nothing is in the way.
    """
    os.makedirs(pair_dir, exist_ok=True)
    state = os.path.join(pair_dir, PAIR_STATE)
    old = None
    if os.path.exists(state):
        with open(state) as fh:
            old = json.load(fh).get("parts")
    changed: list[str] = []
    moved = None
    entries = [e for e in os.listdir(pair_dir) if e != SUPERSEDED]
    if old is not None:
        changed = fingerprint.changes(old, parts)
    elif entries:
        changed = ["unknown (files without a fingerprint)"]
    if changed and entries:
        base = os.path.join(pair_dir, SUPERSEDED)
        os.makedirs(base, exist_ok=True)
        n = 1 + max((int(x) for x in os.listdir(base) if x.isdigit()), default=0)
        moved = os.path.join(base, str(n))
        os.makedirs(moved)
        for e in entries:
            os.replace(os.path.join(pair_dir, e), os.path.join(moved, e))
    if old is None or changed:
        # Merge with what was recorded: a part known now but unknown before is filled in.
        merged = {k: (parts.get(k) if parts.get(k) is not None else (old or {}).get(k)) for k in parts}
        record = {"digest": fingerprint.digest(merged), "parts": merged}
        write_atomic(state, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return changed, moved


def _clean(v: Any) -> Any:
    return "" if isinstance(v, float) and math.isnan(v) else v  # an empty answer read from .xlsx


def _load_archive(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as fh:
        return pickle.load(fh)


def reusable(kit: Kit, pair_dir: str, model: str, dname: str) -> dict[str, Any]:
    """Union of every earlier good prediction for this pair, keyed by str(index)."""
    union: dict[str, Any] = {}

    def add(mapping: dict[Any, Any]) -> None:
        for k, v in mapping.items():
            v = _clean(v)
            if not kit.is_failed(v):
                union[str(k)] = v

    archive = os.path.join(pair_dir, ARCHIVE)
    add(_load_archive(archive))
    pred = kit.pred_path(pair_dir, model, dname)
    if os.path.exists(pred):
        df = kit.load(pred)
        if "prediction" in df and "index" in df:
            add(dict(zip(df["index"], df["prediction"])))
    prev = os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl")
    pat = re.compile(r"^\d+_" + re.escape(dname) + r"\.pkl$")
    shard_dir = os.path.join(pair_dir, UNITS)
    shard_files = [os.path.join(shard_dir, f) for f in sorted(os.listdir(shard_dir))] if os.path.isdir(shard_dir) else []
    for path in [prev, *shard_files] + [os.path.join(pair_dir, f) for f in sorted(os.listdir(pair_dir)) if pat.match(f)]:
        if os.path.exists(path):
            try:
                add(kit.load(path))
            except Exception as exc:  # a pickle cut short by a kill: skip it
                log(f"ignoring unreadable {os.path.basename(path)}: {exc}")
    write_atomic(archive, pickle.dumps(union))  # all of it safe before anything is touched
    return union


def unit_file(pair_dir: str, shards: int, index: int) -> str:
    """Where one unit's predictions go (infer_data's out_file): a pickle {index: prediction}.
    Its folder is made here: VLMEvalKit dumps the file every 10 samples and does not make it."""
    os.makedirs(os.path.join(pair_dir, UNITS), exist_ok=True)
    return os.path.join(pair_dir, UNITS, f"n{shards}-{index}.pkl")


def seed_prev(kit: Kit, pair_dir: str, model: str, dname: str, union: dict[str, Any],
              index_of: dict[str, Any]) -> None:  # fmt: skip
    """Hand reusable predictions to every unit's infer_data through VLMEvalKit's _PREV.pkl (it
    starts from that file, then skips the rows it holds)."""
    seeded = {index_of[k]: v for k, v in union.items() if k in index_of}
    write_atomic(os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl"), pickle.dumps(seeded))


def drop_failed(kit: Kit, out_file: str) -> None:
    """Before a unit is inferred (again): remove failed answers from its file, which VLMEvalKit's
    infer_data would otherwise take as done. A unit whose generate raised holds the failure text
    for every row it had left; run.py likewise re-infers failed rows (its default retry_failed)."""
    if not os.path.exists(out_file):
        return
    try:
        held = kit.load(out_file)
    except Exception as exc:  # a pickle cut short by a kill: start the unit's file afresh
        log(f"ignoring unreadable {os.path.basename(out_file)}: {exc}")
        os.remove(out_file)
        return
    good = {k: v for k, v in held.items() if not kit.is_failed(_clean(v))}
    if len(good) != len(held):
        write_atomic(out_file, pickle.dumps(good))


def known(kit: Kit, pair_dir: str, model: str, dname: str, out_file: str) -> set[str]:
    """Rows already answered for a unit: in _PREV.pkl or in its own file (a unit cut short)."""
    keys: set[str] = set()
    for path in (os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl"), out_file):
        if os.path.exists(path):
            try:
                keys |= {str(k) for k, v in kit.load(path).items() if not kit.is_failed(v)}
            except Exception as exc:  # a pickle cut short by a kill
                log(f"ignoring unreadable {os.path.basename(path)}: {exc}")
    return keys


def merge_units(kit: Kit, pair_dir: str, model: str, dname: str, shards: int, rows: list[Any]) -> int:
    """Every row's prediction, from _PREV.pkl and the units' files, into the rank file that
    VLMEvalKit's infer_data_job (world size 1) reads; returns how many rows."""
    merged: dict[Any, Any] = {}
    prev = os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl")
    if os.path.exists(prev):
        merged.update(kit.load(prev))
    for k in range(shards):
        path = unit_file(pair_dir, shards, k)
        if os.path.exists(path):
            merged.update(kit.load(path))
    by_str = {str(k): v for k, v in merged.items()}
    missing = [r for r in rows if str(r) not in by_str]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(rows)} rows have no prediction after all units (first: {missing[:5]})")
    write_atomic(os.path.join(pair_dir, f"01_{dname}.pkl"), pickle.dumps({r: by_str[str(r)] for r in rows}))
    return len(rows)


def update_archive(kit: Kit, pair_dir: str, pred_file: str) -> None:
    archive = os.path.join(pair_dir, ARCHIVE)
    union = _load_archive(archive)
    df = kit.load(pred_file)
    for k, v in zip(df["index"], df["prediction"]):
        v = _clean(v)
        if not kit.is_failed(v):
            union[str(k)] = v
    write_atomic(archive, pickle.dumps(union))


