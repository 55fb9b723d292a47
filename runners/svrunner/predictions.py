"""Reuse of earlier predictions of a pair: after a crash, a kill, or a retry, nothing is inferred
twice, and nothing is reused that was made under another fingerprint.

Sources of reusable answers, all in the pair's folder: the runner's own archive
(`.spectravenv_predictions.pkl`, which survives VLMEvalKit rewriting its prediction file), the
prediction file, VLMEvalKit's `_PREV.pkl`, the units' files (`.spectravenv_units/`, of any
sharding: a run resumed with other unit sizes still reuses them) and rank pickles. The pair's fingerprint is
kept in `.spectravenv_pair.json`; when it differs from the current one, everything in the folder
moves to `.superseded/<n>/` (kept, never deleted) and the pair starts afresh.

A file VLMEvalKit writes in place (the prediction file, `_PREV.pkl`, an API model's
`_checkpoint.pkl`, a unit's file) is torn when a kill lands in the middle of the write, and
VLMEvalKit would then fail loading it on every retry. Such a file is moved to `.broken/` (kept,
and the log says where), its answers come from the other sources (the archive and the units'
files usually hold them all), and the rows found nowhere are inferred again.

A prediction that is VLMEvalKit's failure message (an API call that failed after its retries, a
generate that raised) is never an answer: it is never reused, and a unit or pair holding one
fails, so that `--resume` asks those rows again.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import Any

from . import fingerprint
from .files import write_atomic
from .kit import Kit, log

ARCHIVE = ".spectravenv_predictions.pkl"
UNITS = ".spectravenv_units"  # each unit's own predictions (infer_data's out_file)
PAIR_STATE = ".spectravenv_pair.json"
SUPERSEDED = ".superseded"
BROKEN = ".broken"  # unreadable files (torn by a kill mid-write), kept for inspection


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


def set_aside(pair_dir: str, path: str, exc: BaseException) -> str:
    """Move an unreadable file to `<pair>/.broken/`, never deleting it; returns where it went."""
    folder = os.path.join(pair_dir, BROKEN)
    os.makedirs(folder, exist_ok=True)
    n = 1 + sum(1 for f in os.listdir(folder) if f.startswith(os.path.basename(path) + "."))
    dest = os.path.join(folder, f"{os.path.basename(path)}.{n}")
    os.replace(path, dest)
    log(f"{os.path.basename(path)} is unreadable ({type(exc).__name__}: {str(exc)[:200]}), torn by a kill "
        f"mid-write?: moved to {os.path.relpath(dest, pair_dir)}; its answers are taken from the other "
        "saved predictions, and rows found nowhere are asked again")  # fmt: skip
    return dest


def load_or_set_aside(kit: Kit, pair_dir: str, path: str) -> Any | None:
    """The file's content, or None when it does not exist or was unreadable (and set aside)."""
    if not os.path.exists(path):
        return None
    try:
        return kit.load(path)
    except Exception as exc:  # BadZipFile, UnpicklingError, EOFError, ...: whatever a torn file gives
        set_aside(pair_dir, path, exc)
        return None


def _as_mapping(data: Any) -> dict[Any, Any]:
    """{index: prediction} of a prediction table or of a pickle that already is one."""
    if isinstance(data, dict):
        return data
    if data is not None and "prediction" in data and "index" in data:
        return dict(zip(data["index"], data["prediction"]))
    return {}


def reusable(kit: Kit, pair_dir: str, model: str, dname: str) -> dict[str, Any]:
    """Union of every earlier good prediction for this pair, keyed by str(index)."""
    union: dict[str, Any] = {}
    archive = os.path.join(pair_dir, ARCHIVE)
    sources = [kit.pred_path(pair_dir, model, dname), os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl")]
    pat = re.compile(r"^\d+_" + re.escape(dname) + r"\.pkl$")
    shard_dir = os.path.join(pair_dir, UNITS)
    if os.path.isdir(shard_dir):
        sources += [os.path.join(shard_dir, f) for f in sorted(os.listdir(shard_dir))]
    sources += [os.path.join(pair_dir, f) for f in sorted(os.listdir(pair_dir)) if pat.match(f)]
    for mapping in [_load_archive(archive)] + [_as_mapping(load_or_set_aside(kit, pair_dir, p)) for p in sources]:
        for k, v in mapping.items():
            v = _clean(v)
            if not kit.is_failed(v):
                union[str(k)] = v
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


def drop_failed(kit: Kit, pair_dir: str, out_file: str) -> None:
    """Before a unit is inferred (again): remove failed answers from its file, which VLMEvalKit's
    infer_data would otherwise take as done. A unit whose generate raised holds the failure text
    for every row it had left; run.py likewise re-infers failed rows (its default retry_failed).
    A file torn by a kill is set aside: the unit starts its file afresh."""
    held = load_or_set_aside(kit, pair_dir, out_file)
    if held is None:
        return
    good = {k: v for k, v in held.items() if not kit.is_failed(_clean(v))}
    if len(good) != len(held):
        write_atomic(out_file, pickle.dumps(good))


def repair_prev(kit: Kit, pair_dir: str, model: str, dname: str, rows: list[Any]) -> None:
    """Before VLMEvalKit loads `_PREV.pkl` and an API model's `_checkpoint.pkl` unguarded
    (infer_data, infer_data_api): set aside whichever a kill tore. A torn `_PREV.pkl` is seeded
    again from the archive (what every earlier attempt of this fingerprint answered), as the
    pair's preparation seeded it."""
    load_or_set_aside(kit, pair_dir, os.path.join(pair_dir, f"{model}_{dname}_checkpoint.pkl"))
    prev = os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl")
    if os.path.exists(prev) and load_or_set_aside(kit, pair_dir, prev) is None:
        archive = _load_archive(os.path.join(pair_dir, ARCHIVE))
        seed_prev(kit, pair_dir, model, dname, archive, {str(r): r for r in rows})


def known(kit: Kit, pair_dir: str, model: str, dname: str, out_file: str) -> set[str]:
    """Rows already answered for a unit: in _PREV.pkl or in its own file (a unit cut short)."""
    keys: set[str] = set()
    for path in (os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl"), out_file):
        held = load_or_set_aside(kit, pair_dir, path)
        keys |= {str(k) for k, v in (held or {}).items() if not kit.is_failed(v)}
    return keys


def failed_rows(kit: Kit, out_file: str, rows: list[Any]) -> list[Any]:
    """The rows of a unit whose answer in its file is VLMEvalKit's failure message."""
    held = {str(k): v for k, v in (kit.load(out_file) if os.path.exists(out_file) else {}).items()}
    return [r for r in rows if str(r) in held and kit.is_failed(_clean(held[str(r)]))]


def failure_message(kit: Kit, failed: int, total: int, where: str = "") -> str:
    return (f"{failed} of {total} answers{where} are VLMEvalKit's failure message ({kit.fail_msg!r}): the "
            "model gave no answer for them (an API model: a missing or wrong key, an unreachable "
            "endpoint, a quota?); --resume asks those rows again")  # fmt: skip


@dataclass
class Merged:
    """The pair's predictions gathered from every source, and what is wrong with them."""

    rows: int
    missing: list[Any] = field(default_factory=list)  # rows no source answers
    failed: list[Any] = field(default_factory=list)  # rows whose answer is the failure message


def merge_units(kit: Kit, pair_dir: str, model: str, dname: str, shards: int, rows: list[Any],
                rank_file: str | None = None) -> Merged:  # fmt: skip
    """Every row's prediction, from the archive, _PREV.pkl and the units' files (later ones win),
    into the rank file that VLMEvalKit's infer_data_job (world size 1) reads, when every row has
    an answer that is no failure. `rank_file`: its name where it is not `01_<dname>.pkl`
    (infer_data_job_video names it after the prediction file)."""
    by_str = {str(k): v for k, v in _load_archive(os.path.join(pair_dir, ARCHIVE)).items()}
    paths = [os.path.join(pair_dir, f"{model}_{dname}_PREV.pkl")]
    paths += [unit_file(pair_dir, shards, k) for k in range(shards)]
    for path in paths:
        by_str.update({str(k): v for k, v in (load_or_set_aside(kit, pair_dir, path) or {}).items()})
    out = Merged(len(rows), [r for r in rows if str(r) not in by_str])
    out.failed = [r for r in rows if str(r) in by_str and kit.is_failed(_clean(by_str[str(r)]))]
    if not out.missing and not out.failed:
        name = rank_file or f"01_{dname}.pkl"
        write_atomic(os.path.join(pair_dir, name), pickle.dumps({r: by_str[str(r)] for r in rows}))
    return out


def update_archive(kit: Kit, pair_dir: str, pred_file: str) -> None:
    archive = os.path.join(pair_dir, ARCHIVE)
    union = _load_archive(archive)
    df = kit.load(pred_file)
    for k, v in zip(df["index"], df["prediction"]):
        v = _clean(v)
        if not kit.is_failed(v):
            union[str(k)] = v
    write_atomic(archive, pickle.dumps(union))
