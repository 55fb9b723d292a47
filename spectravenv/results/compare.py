"""`spectravenv compare RUN_A RUN_B`: what changed between two runs, and what could explain it.

Per (model, benchmark): both scores, their difference (B - A) with its 95% interval from a
paired test on the samples both runs scored (McNemar's exact test for right/wrong scores, a
paired bootstrap otherwise; `uncertainty.paired`) and whether it is significant, a status that
changed, a pair only one run has, and the parts of the pair's fingerprint that differ (settings,
env, model, checkpoint, dataset; `svrunner.fingerprint.changes`). Then every provenance difference of the two
manifests (run.json: limit, seed, judge, envs' lock hashes and package versions, GPUs, the
spectravenv revision, ...), plus what the fingerprints and the runner's notes say per model and
benchmark (checkpoint identity, model source and kwargs, dataset sha256, the attention used).

Both runs are read the way `report` reads them (`results_json.for_run`: rows, events,
fingerprints), never from a results.json that could be stale or missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from spectravenv.catalog.entries import Catalog
from spectravenv.console import table
from spectravenv.results import document as results_json
from spectravenv.results import rows as results
from spectravenv.results import samples as sample_files
from spectravenv.results import uncertainty
from spectravenv.results.rows import Row
from spectravenv.run import rundir

SCHEMA = "spectravenv.compare/2"
# Fields of a manifest that differ between any two runs and explain no score: when and under
# which name it ran. (`attempts` repeats the latest attempt's fields, which are compared.)
NOT_PROVENANCE = frozenset({"attempts", "run", "started", "finished"})


@dataclass
class Side:
    status: str
    value: float | None
    run: str


@dataclass
class PairDiff:
    model: str
    benchmark: str
    a: Side | None  # None: the pair is not in run A
    b: Side | None
    fingerprint_changes: list[str] = field(default_factory=list)
    test: uncertainty.Difference | None = None  # paired, on the samples both scored
    test_note: str = ""  # why there is no paired test

    @property
    def delta(self) -> float | None:
        a, b = self.a, self.b
        if a and b and a.status == b.status == "done" and None not in (a.value, b.value):
            return round(b.value - a.value, 6)  # type: ignore[operator]
        return None

    @property
    def status_changed(self) -> bool:
        return bool(self.a and self.b and self.a.status != self.b.status)

    @property
    def what(self) -> str:
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        parts = []
        if self.status_changed:
            parts.append(f"status {self.a.status} -> {self.b.status}")
        if self.delta:
            parts.append("score" + (" (significant)" if self.test and self.test.significant else ""))
        if self.fingerprint_changes:
            parts.append("fingerprint: " + ", ".join(self.fingerprint_changes))
        return "; ".join(parts) or "same"


@dataclass
class FieldDiff:
    field: str
    a: str | None  # None: absent from that run
    b: str | None


@dataclass
class Comparison:
    a: rundir.RunDir
    b: rundir.RunDir
    pairs: list[PairDiff]
    provenance: list[FieldDiff]


# ---- provenance ---------------------------------------------------------------------------------


_ABSENT = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return ", ".join(" x ".join(str(x) for x in v) for v in value)  # skipped_pairs
    return json.dumps(value, sort_keys=True)


def _diff(prefix: str, a: Any, b: Any, out: list[FieldDiff]) -> None:
    """The differences of two values as dotted fields; a subtree one side lacks is one field."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _diff(f"{prefix}.{k}" if prefix else str(k), a.get(k, _ABSENT), b.get(k, _ABSENT), out)
        return
    ta = None if a is _ABSENT else _text(a)
    tb = None if b is _ABSENT else _text(b)
    if ta != tb:
        out.append(FieldDiff(prefix, ta, tb))


def _gpus(gpus: list[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{g.get('index')}: {g.get('name')} ({g.get('memory_total_mb')} MB, driver {g.get('driver')})"
            for g in gpus
        )
        or "none"
    )


def manifest_view(m: dict[str, Any]) -> dict[str, Any]:
    """A manifest as two runs' manifests are compared: without when and under which name it ran,
    its GPUs as the ones used and the ones visible."""
    view = {k: v for k, v in m.items() if k not in NOT_PROVENANCE and k != "gpus"}
    gpus = m.get("gpus") or []
    view["gpus (used)"] = _gpus([g for g in gpus if g.get("used")])
    view["gpus (visible)"] = _gpus(gpus)
    return view


def document_view(doc: dict[str, Any]) -> dict[str, str]:
    """What the pairs' fingerprints and the runner's notes say, per model and benchmark."""
    out: dict[str, str] = {}
    for p in doc["pairs"]:
        fp = p.get("fingerprint") or {}
        if fp.get("checkpoint") is not None:
            out.setdefault(f"checkpoint [{p['model']}]", _text(fp["checkpoint"]))
        if fp.get("model") is not None:
            out.setdefault(f"model source [{p['model']}]", _text(fp["model"]))
        if fp.get("dataset") is not None:
            out.setdefault(f"dataset sha256 [{p['benchmark']}]", _text(fp["dataset"]))
    for m in doc["models"]:
        if m["notes"]:
            out[f"loaded with [{m['name']}]"] = "; ".join(m["notes"])
    return out


def provenance_diff(a: dict[str, Any], b: dict[str, Any]) -> list[FieldDiff]:
    out: list[FieldDiff] = []
    _diff("", a, b, out)
    return out


# ---- comparison ---------------------------------------------------------------------------------


def compare(run_a: rundir.RunDir, run_b: rundir.RunDir, catalog: Catalog) -> Comparison:
    from svrunner import fingerprint

    rows = [results.rows_for_run(r, catalog) for r in (run_a, run_b)]
    docs = [results_json.for_run(r, catalog, rs) for r, rs in zip((run_a, run_b), rows, strict=True)]
    by_pair = [{(p["model"], p["benchmark"]): p for p in d["pairs"]} for d in docs]
    by_row = [{(r.model, r.benchmark): r for r in rs} for rs in rows]
    pairs = []
    for key in sorted(set(by_pair[0]) | set(by_pair[1])):
        pa, pb = by_pair[0].get(key), by_pair[1].get(key)
        sides = [Side(p["status"], p["value"], p["run"]) if p else None for p in (pa, pb)]
        changes = []
        if pa and pb and pa.get("fingerprint") and pb.get("fingerprint"):
            changes = fingerprint.changes(pa["fingerprint"], pb["fingerprint"])
        test, why = paired_test(by_row[0].get(key), by_row[1].get(key), catalog)
        pairs.append(PairDiff(*key, *sides, fingerprint_changes=changes, test=test, test_note=why))
    manifests = [r.manifest() or {} for r in (run_a, run_b)]
    prov = provenance_diff(manifest_view(manifests[0]), manifest_view(manifests[1]))
    prov += provenance_diff(document_view(docs[0]), document_view(docs[1]))
    return Comparison(run_a, run_b, pairs, prov)


def paired_test(a: Row | None, b: Row | None, catalog: Catalog) -> tuple[uncertainty.Difference | None, str]:
    """B - A on the samples both runs scored, when both have per-sample results that reproduce
    their headlines; else why not."""
    if a is None or b is None or a.status != "done" or b.status != "done" or None in (a.value, b.value):
        return None, ""
    for side, r in (("A", a), ("B", b)):
        if r.interval is None:
            return None, f"no paired test: {side} has no per-sample results ({r.interval_note})"
    bench = catalog.benchmarks.get(a.benchmark)
    key = bench.headline if bench else None
    sa = {s.index: s for s in sample_files.headline_samples(a.sample_set, key)}  # type: ignore[arg-type]
    sb = {s.index: s for s in sample_files.headline_samples(b.sample_set, key)}  # type: ignore[arg-type]
    common = sorted(set(sa) & set(sb))
    if not common:
        return None, "no paired test: the runs scored no sample in common"
    groups = [sa[i].group for i in common]
    clustered = groups if len(set(groups)) < len(groups) else None
    diff = uncertainty.paired([sa[i].score for i in common], [sb[i].score for i in common], clustered)
    return diff, ""


def _test_json(p: PairDiff) -> dict[str, Any] | None:
    t = p.test
    if t is None:
        return None
    return {"delta": round(t.delta, 4), "low": round(t.low, 4), "high": round(t.high, 4),
            "samples": t.n, "p_value": round(t.p_value, 6), "test": t.test,
            "significant": t.significant, "discordant": list(t.discordant) if t.discordant else None}  # fmt: skip


def as_json(c: Comparison) -> dict[str, Any]:
    def side(s: Side | None) -> dict[str, Any] | None:
        return None if s is None else {"status": s.status, "value": s.value, "run": s.run}

    return {
        "schema": SCHEMA,
        "a": {"run": c.a.path.name, "path": str(c.a.path)},
        "b": {"run": c.b.path.name, "path": str(c.b.path)},
        "pairs": [
            {
                "model": p.model,
                "benchmark": p.benchmark,
                "a": side(p.a),
                "b": side(p.b),
                "delta": p.delta,
                "status_changed": p.status_changed,
                "only_in": "a" if p.b is None else "b" if p.a is None else None,
                "fingerprint_changes": p.fingerprint_changes,
                "paired": _test_json(p),
                "paired_note": p.test_note,
            }
            for p in c.pairs
        ],
        "provenance": [{"field": f.field, "a": f.a, "b": f.b} for f in c.provenance],
    }


def dumps(c: Comparison) -> str:
    return json.dumps(as_json(c), indent=2, sort_keys=True, ensure_ascii=False)


def _score(s: Side | None) -> str:
    if s is None:
        return "-"
    if s.status != "done":
        return s.status
    return "n/a" if s.value is None else f"{s.value:.2f}"


def _ci(p: PairDiff) -> str:
    t = p.test
    if t is None:
        return ""
    return f"{t.delta:+.1f} [{t.low:+.1f}, {t.high:+.1f}] n={t.n}"


def _significance(p: PairDiff) -> str:
    t = p.test
    if t is None:
        return "-" if p.test_note else ""
    return f"{'yes' if t.significant else 'no'} (p={t.p_value:.3g})"


def _cut(text: str | None, n: int = 70) -> str:
    if text is None:
        return "(absent)"
    return text if len(text) <= n else text[: n - 1] + "…"


def render_text(c: Comparison) -> str:
    out = [f"A: {c.a.path.name}  ({c.a.path})", f"B: {c.b.path.name}  ({c.b.path})", ""]
    rows = [
        (p.model, p.benchmark, _score(p.a), _score(p.b),
         f"{p.delta:+.2f}" if p.delta is not None else "", _ci(p), _significance(p), p.what)
        for p in c.pairs
    ]  # fmt: skip
    out.append(table(("model", "benchmark", "A", "B", "B - A", "95% CI (paired)", "significant", "what changed"), rows))
    both = sum(1 for p in c.pairs if p.a and p.b)
    only_a = sum(1 for p in c.pairs if p.b is None)
    only_b = sum(1 for p in c.pairs if p.a is None)
    moved = sum(1 for p in c.pairs if p.delta)
    status = sum(1 for p in c.pairs if p.status_changed)
    sig = sum(1 for p in c.pairs if p.test and p.test.significant)
    out += ["", f"{len(c.pairs)} pairs: {both} in both, {only_a} only in A, {only_b} only in B; "
                f"{moved} scores changed ({sig} significantly at 95%), {status} statuses changed", "",
            "The paired test compares the samples both runs scored (McNemar's exact test for right/"
            "wrong answers, a paired bootstrap otherwise); its difference can differ from B - A when "
            "the runs scored different samples.", ""]  # fmt: skip
    notes = [f"{p.model} x {p.benchmark}: {p.test_note}" for p in c.pairs if p.test_note]
    if notes:
        out += [*notes, ""]
    if c.provenance:
        out.append("How the runs were made differs in (what could explain it):")
        out.append(
            table(("field", "A", "B"), [(f.field, _cut(f.a), _cut(f.b)) for f in c.provenance])
        )
    else:
        out.append("The runs were made the same way (no provenance difference in run.json, "
                   "the fingerprints or the runner's notes).")  # fmt: skip
    return "\n".join(out)
