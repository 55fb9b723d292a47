"""The benchmark half of scripts/gen_catalog.py: every dataset name of the envs' VLMEvalKit.

Writes spectravenv/catalog/data/vlmeval_benchmarks.toml from
- data/probes/<env>.json: what each env's VLMEvalKit builds for each name (class, TYPE, MODALITY,
  TSV URL and md5, a video config's frames, run.py's default judge) and what reading each
  class's code told (the evaluate() it runs, whether that reaches a judge and has a way
  without one, the decoders it imports and which the env lacks): scripts/probe_datasets.py;
- data/benchmark_rules.toml: types, multi-image sets, what the runner cannot run yet, the
  headline metric per evaluate() (or per class where VLMEvalKit dispatches on the name), the
  judge where the code defeats the reading, and what was measured of the old system's sets.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from svrunner import kit  # noqa: E402  (the runner's list of sets it only infers)

from spectravenv.catalog.loader import tomllib  # noqa: E402  (tomli on Python 3.10)

OUT = REPO / "spectravenv" / "catalog" / "data" / "vlmeval_benchmarks.toml"
RULES = REPO / "data" / "benchmark_rules.toml"
PROBES = REPO / "data" / "probes"
REFERENCE = "tf437"  # the env whose probe names the release (every env pins the same one)
NO_ANSWERS = "no public answers: inference only, as run.py does (svrunner.kit.no_eval)"
MODALITIES = {"IMAGE": "image", "VIDEO": "video", "TEXT": "text"}
# What every env must agree on for a name; decoders may be present in one env and not another.
SAME_EVERYWHERE = ("class", "type", "modality", "url", "md5", "judge", "config", "parts")


@dataclass
class Bench:
    name: str
    cls: str
    vlmeval_type: str
    kind: str
    modality: str
    envs: list[str]
    samples: int
    samples_estimated: bool
    category: str = ""
    experimental: bool = False
    url: str | None = None
    md5: str | None = None
    judge: str | None = None
    judge_need: str = "none"
    judge_evidence: str = ""
    headline: dict[str, Any] = field(default_factory=dict)
    blocked: str = ""
    decoders: list[str] = field(default_factory=list)
    decoders_missing: dict[str, list[str]] = field(default_factory=dict)
    frames: int | None = None
    fps: float | None = None
    parts: list[str] = field(default_factory=list)
    inference_only: bool = False
    note: str = ""


def matches(name: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


# ---- reading the probes -------------------------------------------------------------------------


def load_probes() -> dict[str, dict[str, Any]]:
    probes = {p.stem: json.loads(p.read_text()) for p in sorted(PROBES.glob("*.json"))}
    old = [env for env, p in probes.items() if "dataset_classes" not in p]
    if old or REFERENCE not in probes:
        raise SystemExit(f"the probes of {', '.join(old or [REFERENCE])} hold no dataset classes: run "
                         f"`python scripts/probe_envs.py {' '.join(old or [REFERENCE])}`")  # fmt: skip
    return probes


def agreed(name: str, probes: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The name as the envs that know it describe it (they must agree), and those envs."""
    envs = [env for env, p in probes.items() if name in p["datasets"]]
    first = probes[envs[0]]["datasets"][name]
    for env in envs[1:]:
        other = probes[env]["datasets"][name]
        for key in SAME_EVERYWHERE:
            if other.get(key) != first.get(key):
                raise SystemExit(f"{name}: env {env}'s VLMEvalKit gives {key} {other.get(key)!r}, "
                                 f"env {envs[0]}'s {first.get(key)!r}")  # fmt: skip
    return first, envs


def facts_of(entry: dict[str, Any], probe: dict[str, Any]) -> dict[str, Any]:
    """What the code of the class that scores it does. A concatenation of datasets
    (ConcatDataset) scores each part with the part's own class: its first part's facts."""
    classes, datasets = probe["dataset_classes"], probe["datasets"]
    parts = entry.get("parts") or []
    if parts and parts[0] in datasets:
        return classes[datasets[parts[0]]["class"]]
    return classes[entry["class"]]


# ---- the fields ---------------------------------------------------------------------------------


def kind_of(entry: dict[str, Any], rules: dict[str, Any]) -> str:
    for rule in rules.get("type", []):
        if entry["class"] in rule["class"]:
            return rule["type"]
    return rules["types"].get(entry["type"] or "", "other")


def modality_of(name: str, entry: dict[str, Any], rules: dict[str, Any]) -> str:
    for rule in rules.get("modality", []):
        if matches(name, rule["match"]):
            return rule["modality"]
    return MODALITIES.get(entry["modality"] or "IMAGE", str(entry["modality"]).lower())


def blocked_of(b: Bench, rules: dict[str, Any]) -> str:
    """The reason of the first rule that fits; '' when it runs."""
    for rule in rules.get("blocked", []):
        fits = (rule.get("modality", b.modality) == b.modality
                and rule.get("vlmeval_type", b.vlmeval_type) == b.vlmeval_type
                and b.cls in rule.get("class", [b.cls])
                and matches(b.name, rule.get("match"))
                and (rule.get("frames") != "none" or (b.frames is None and b.fps is None)))  # fmt: skip
        if fits:
            return "" if rule.get("runs") else rule["reason"].replace("{class}", b.cls)
    return ""


def judge_of(entry: dict[str, Any], facts: dict[str, Any], rules: dict[str, Any]) -> tuple[str | None, str, str]:
    """(the judge run.py picks when its scoring calls one, need, evidence)."""
    for rule in rules.get("judge", []):
        if entry["class"] in rule["class"]:
            return entry["judge"], rule["need"], rule["evidence"]
    if not (facts["calls_judge"] or facts["asserts_judge"]):
        return None, "none", "evaluate() reaches no judge"
    picked = entry["judge"] if entry["judge"] != "exact_matching" else None
    if facts["exact_path"]:
        return picked, "optional", "evaluate() calls a judge, and matches answers without one (exact_matching)"
    return picked, "required", "evaluate() calls a judge and has no way without one"


def headline_of(name: str, entry: dict[str, Any], facts: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    for rule in rules.get("headline", []):
        fits = (entry["class"] in rule["class"]) if "class" in rule else rule["evaluate"] == facts["evaluate"]
        if fits and matches(name, rule.get("match")):
            return rule
    return {}


def frames_of(entry: dict[str, Any], facts: dict[str, Any]) -> tuple[int | None, float | None]:
    """Frames per video (nframe) or frames per second (fps), from its config or the class's
    defaults; VLMEvalKit uses whichever is set (> 0)."""
    given = {**(facts.get("frames") or {}), **(entry.get("config") or {})}
    nframe, fps = given.get("nframe"), given.get("fps")
    return (int(nframe) if isinstance(nframe, (int, float)) and nframe > 0 else None,
            float(fps) if isinstance(fps, (int, float)) and fps > 0 else None)  # fmt: skip


def decoders_of(name: str, probes: dict[str, dict[str, Any]], envs: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    needed: set[str] = set()
    missing = {}
    for env in envs:
        facts = facts_of(probes[env]["datasets"][name], probes[env])
        needed |= set(facts["media"])
        if facts["media_missing"]:
            missing[env] = sorted(facts["media_missing"])
    return sorted(needed), missing


def build(name: str, probes: dict[str, dict[str, Any]], rules: dict[str, Any]) -> Bench:
    entry, envs = agreed(name, probes)
    facts = facts_of(entry, probes[REFERENCE if REFERENCE in envs else envs[0]])
    measured = rules.get("measured", {}).get(name, {})
    b = Bench(name, entry["class"], (entry["type"] or "").strip(), kind_of(entry, rules),
              modality_of(name, entry, rules), envs if len(envs) < len(probes) else [],
              measured.get("samples", rules["estimate"]["samples"]), "samples" not in measured,
              measured.get("category", ""), measured.get("experimental", False))  # fmt: skip
    b.judge, b.judge_need, b.judge_evidence = judge_of(entry, facts, rules)
    b.headline = headline_of(name, entry, facts, rules)
    b.inference_only = kit.no_eval(name)  # the runner, like run.py, infers and never scores it
    if b.inference_only:
        b.headline = {"none": NO_ANSWERS}
        b.judge, b.judge_need, b.judge_evidence = None, "none", NO_ANSWERS
    b.frames, b.fps = frames_of(entry, facts) if b.modality == "video" else (None, None)
    b.blocked = blocked_of(b, rules)
    b.decoders, b.decoders_missing = decoders_of(name, probes, envs)
    b.parts = entry.get("parts") or []
    if facts["standard"] and entry["url"] and not b.parts:
        b.url, b.md5 = entry["url"], entry["md5"]
    else:
        b.note = f"{entry['class']} loads its data in its own way: `spectravenv prefetch` cannot fetch it"
    return b


# ---- writing ------------------------------------------------------------------------------------


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def render_headline(h: dict[str, Any]) -> list[str]:
    if not h:
        return []
    if "none" in h:
        return [f"no_headline = {toml_str(h['none'])}"]
    lines = [f"metric = {toml_str(h['metric'])}", f"headline = {toml_str(h['key'])}"]
    lines.append("per_sample = true" if h.get("per_sample") else f"scale = {h['scale']}")
    where = h.get("evaluate") or "/".join(h["class"]) + ".evaluate"
    source = f"{where}: {h['file']} (checked against: {h['checked']})"
    return [*lines, f"headline_from = {toml_str(source)}"]


def render(b: Bench) -> list[str]:
    out = [f"[benchmarks.{toml_str(b.name)}]", f"vlmeval_class = {toml_str(b.cls)}",
           f"vlmeval_type = {toml_str(b.vlmeval_type)}", f"kind = {toml_str(b.kind)}",
           f"modality = {toml_str(b.modality)}", f"samples = {b.samples}"]  # fmt: skip
    out += ["samples_estimated = true"] if b.samples_estimated else []
    out += [f"category = {toml_str(b.category)}"] if b.category else []
    out += ["experimental = true"] if b.experimental else []
    out += ["inference_only = true"] if b.inference_only else []
    out += [f"envs = {json.dumps(b.envs)}"] if b.envs else []
    out += render_headline(b.headline)
    out += [f"judge = {toml_str(b.judge)}"] if b.judge else []
    out += [f"judge_need = {toml_str(b.judge_need)}", f"judge_evidence = {toml_str(b.judge_evidence)}"]
    out += [f"url = {toml_str(b.url)}"] if b.url else []
    out += [f"md5 = {toml_str(b.md5)}"] if b.md5 else []
    out += [f"parts = {json.dumps(b.parts)}"] if b.parts else []
    out += [f"frames = {b.frames}"] if b.frames else []
    out += [f"fps = {b.fps:g}"] if b.fps else []
    out += [f"decoders = {json.dumps(b.decoders)}"] if b.decoders else []
    if b.decoders_missing:
        out.append("decoders_missing = { " + ", ".join(f"{e} = {json.dumps(m)}" for e, m in b.decoders_missing.items()) + " }")
    out += [f"blocked = {toml_str(b.blocked)}"] if b.blocked else []
    out += [f"note = {toml_str(b.note)}"] if b.note else []
    return [*out, ""]


def generate() -> str:
    probes = load_probes()
    rules = tomllib.loads(RULES.read_text())
    names = sorted({n for p in probes.values() for n in p["datasets"]}, key=lambda n: (n.lower(), n))
    benches = [build(name, probes, rules) for name in names]
    video = sum(b.modality == "video" for b in benches)
    lines = [
        "# GENERATED by scripts/gen_catalog.py (scripts/gen_benchmarks.py): do not edit. Change",
        "# data/benchmark_rules.toml or the env probes (data/probes/, scripts/probe_envs.py), then regenerate.",
        f"# Every dataset name VLMEvalKit {probes[REFERENCE]['vlmeval']} builds: {len(benches)}, {video} of them video;",
        f"# {sum(not b.blocked for b in benches)} the runner runs today; {sum('key' in b.headline for b in benches)} "
        "with a headline rule (the others show their sub-scores).",
        "",
    ]
    for b in benches:
        lines += render(b)
    return "\n".join(lines)
