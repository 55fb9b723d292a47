"""The catalog's entries: envs, models, benchmarks and add-ons, and the lookups by name (with
suggestions for a mistyped one). `loader` makes them from the TOML files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectravenv.catalog.suites import Suite
from spectravenv.errors import SpectravenvError, did_you_mean, folded


@dataclass(frozen=True)
class Env:
    name: str
    python: str
    transformers: str
    lock: Path
    source: Path | None = None
    overrides: Path | None = None
    platform: str = "x86_64-manylinux_2_28"
    exclude_newer: str | None = None
    description: str = ""
    # Modules imported to prove a fresh build works (an env for tests may not carry vlmeval).
    verify: tuple[str, ...] = ("transformers", "vlmeval")
    # (VLMEvalKit class, the envs that run it) for classes this env does not serve: the import
    # guard names the right env when such a class cannot be imported here.
    elsewhere: tuple[tuple[str, str], ...] = ()
    # An interpreter the site provides (its torch, its CUDA build): the env is a venv of it that
    # sees its packages and holds, hash-locked, only what it lacks (envs.py, docs/air-gapped.md).
    # Kept as written, never resolved: a venv's `bin/python` is a link to another interpreter.
    base_python: Path | None = None

    @property
    def runs_models(self) -> bool:
        """A model env (VLMEvalKit inside: workers run there); the others are engine envs (vLLM),
        whose servers the model envs' workers start."""
        return "vlmeval" in self.verify


@dataclass(frozen=True)
class Addon:
    """A git-only package installed with a commit-pinned source, outside the env's lock."""

    name: str
    env: str
    source: str
    description: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    env: str
    family: str = ""
    gpu_memory_gb: float = 24.0
    gpus: int = 1
    cpu: bool = False
    vlmeval_name: str | None = None
    cls: str | None = None
    builtin: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    addons: tuple[str, ...] = ()
    load_seconds: float = 60.0
    seconds_per_sample: float = 0.5
    # Can its wrapper spread one copy over several GPUs (it loads with device_map="auto")? A
    # wrapper that loads onto one device (`.cuda()`, device_map="cuda") cannot, whatever it needs.
    multi_gpu: bool = False
    checkpoint: str | None = None  # the weights it loads (hub id or path): identity, prefetch
    kind: str = "local"  # local | api (no weights, no GPU)
    vlmeval_class: str = ""  # the VLMEvalKit wrapper class (information; `cls` builds a model)
    needs: tuple[str, ...] = ()  # what it needs beyond its env's lock (some satisfied: see blocked)
    blocked: str = ""  # why it cannot run from the shipped envs: refused at plan time, saying so
    evidence: str = ""  # why this env
    memory_note: str = ""  # where gpu_memory_gb comes from (declared, estimated)
    # none | lock builds | class imports | wrapper ran on a tiny checkpoint | (API) wrapper ran
    # against a loopback OpenAI-compatible server: what scripts/gen_catalog.py read in data/selftest
    verified: str = "none"
    env_vars: tuple[str, ...] = ()  # variables an API wrapper reads (keys, base URLs: put them in .env)
    backend: str = "hf"  # hf (the VLMEvalKit wrapper in its env) | vllm (served: plan/backends.py)
    architecture: str = ""  # its checkpoint's config `architectures[0]`, where known without the weights


@dataclass(frozen=True)
class Benchmark:
    name: str
    category: str = "Custom"
    kind: str = "MCQ"  # MCQ, Y/N, VQA, OCR, caption, grounding, multi-turn, other
    metric: str | None = None
    headline: str | None = None  # the sub-score (key in the flattened score file) to headline
    scale: float = 1.0  # multiplies the headline into 0-100
    # The headline is a count of correct answers (OCRBench's "Final Score"): 0-100 is
    # count / samples evaluated x 100, which stays right under --limit.
    per_sample: bool = False
    headline_from: str = ""  # which score file and rule the headline is read by
    no_headline: str = ""  # why there is no 0-100 headline, where that is known
    samples: int = 1000
    # `samples` is a planning guess, not a count: replaced by the rows of the TSV once it is on
    # disk (catalog/samples.py).
    samples_estimated: bool = False
    since_vlmeval: str | None = None
    builtin: str | None = None
    tsv: Path | None = None
    experimental: bool = False
    # Where its TSV comes from: VLMEvalKit's DATASET_URL / DATASET_MD5 for official sets
    # (generated into catalog/data/vlmeval_benchmarks.toml), or a user's own for a custom set.
    # `spectravenv prefetch` downloads it to $LMUData/<name>.tsv and checks the md5.
    url: str | None = None
    md5: str | None = None
    # How VLMEvalKit scores it: the judge run.py chooses for it by default (None: its scoring
    # calls no judge), and whether a judge is "none" (never used), "optional" (exact matching
    # works; the judge extracts answers it cannot match) or "required" (no score without one).
    judge: str | None = None
    judge_need: str = "none"
    judge_evidence: str = ""  # what in VLMEvalKit's code says so
    # What VLMEvalKit builds for the name: the dataset class, its TYPE, and what it shows a
    # model: image, multi-image (several per question), video or text.
    vlmeval_class: str = ""
    vlmeval_type: str = ""
    modality: str = "image"
    # The envs whose VLMEvalKit knows the name; empty: every env (and a user's custom set).
    envs: tuple[str, ...] = ()
    blocked: str = ""  # why no env can run it yet: the plan refuses it, saying so
    decoders: tuple[str, ...] = ()  # packages its code reads frames with (decord, av, ...)
    decoders_missing: dict[str, tuple[str, ...]] = field(default_factory=dict)  # env -> those it lacks
    frames: int | None = None  # frames sampled per video (a video config's nframe)
    fps: float | None = None  # or frames per second of video
    parts: tuple[str, ...] = ()  # the datasets a concatenation (ConcatDataset) is made of
    inference_only: bool = False  # no public answers: predictions, never a score (as run.py)
    note: str = ""

    def unavailable(self, env: str) -> str:
        """Why this benchmark cannot run in `env`; '' when it can."""
        if self.blocked:
            return self.blocked
        if self.envs and env not in self.envs:
            return f"the VLMEvalKit of env {env} does not know it (envs that do: {', '.join(self.envs)})"
        if env in self.decoders_missing:
            return f"it reads its videos with {', '.join(self.decoders_missing[env])}, which env {env} lacks"
        return ""


@dataclass(frozen=True)
class Catalog:
    envs: dict[str, Env]
    models: dict[str, Model]
    benchmarks: dict[str, Benchmark]
    addons: dict[str, Addon]
    sources: tuple[Path, ...] = ()
    suites: dict[str, Suite] = field(default_factory=dict)

    def env(self, name: str) -> Env:
        if name not in self.envs:
            raise SpectravenvError(
                f"unknown env {name!r}{did_you_mean(name, self.envs)}; "
                f"known envs: {', '.join(sorted(self.envs))}"
            )
        return self.envs[name]

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise SpectravenvError(
                f"unknown model {name!r}{did_you_mean(name, self.models)}; "
                "`spectravenv models` lists them"
            )
        return self.models[name]

    def benchmark(self, name: str) -> Benchmark:
        if name not in self.benchmarks:
            raise SpectravenvError(
                f"unknown benchmark {name!r}{did_you_mean(name, self.benchmarks)}; "
                "`spectravenv benchmarks` lists them"
            )
        return self.benchmarks[name]

    def benchmark_names(self, name: str) -> list[str]:
        """The benchmarks a name stands for: a suite's, or the one benchmark (-d/--data)."""
        if name in self.suites:
            return list(self.suites[name].benchmarks)
        if name not in self.benchmarks:
            raise SpectravenvError(
                f"unknown benchmark {name!r}{did_you_mean(name, [*self.benchmarks, *self.suites])}; "
                "`spectravenv benchmarks` lists them, `spectravenv benchmarks --suites` the suites"
            )
        return [name]

    def classify(self, names: list[str]) -> tuple[list[str], list[str]]:
        """Split free names into (models, benchmarks), a suite standing for its benchmarks;
        unknown or ambiguous names are errors."""
        models: list[str] = []
        benchmarks: list[str] = []
        for name in names:
            is_model, is_bench = name in self.models, name in self.benchmarks
            if is_model and is_bench:
                raise SpectravenvError(
                    f"{name!r} is both a model and a benchmark; say which with -m/--model or -d/--data"
                )
            if is_model:
                models.append(name)
            elif is_bench or name in self.suites:
                benchmarks += self.benchmark_names(name)
            else:
                every = [*self.models, *self.benchmarks, *self.suites]
                raise SpectravenvError(
                    f"{name!r} is neither a known model nor a benchmark or suite{did_you_mean(name, every)}; "
                    "`spectravenv models` and `spectravenv benchmarks` list them"
                )
        return models, benchmarks

    def select_benchmarks(self, search: str | None = None, *, kind: str | None = None,
                          modality: str | None = None, judge: str | None = None) -> list[Benchmark]:  # fmt: skip
        """Benchmarks matching every filter given, by name: `search` is a case-insensitive part of
        the name, the VLMEvalKit class or the type; a filter value nothing has is an error that
        lists the values there are, never an empty answer."""
        every = list(self.benchmarks.values())
        for option, value, known in (("--type", kind, {b.kind for b in every}),
                                     ("--modality", modality, {b.modality for b in every}),
                                     ("--judge", judge, {b.judge_need for b in every})):  # fmt: skip
            if value is not None and value.lower() not in {k.lower() for k in known}:
                raise SpectravenvError(f"{option} {value!r}: give one of {', '.join(sorted(known, key=str.lower))}")
        text = (search or "").lower()
        return sorted(
            (b for b in every
             if (not text or any(text in f.lower() for f in (b.name, b.vlmeval_class, b.kind)))
             and (kind is None or b.kind.lower() == kind.lower())
             and (modality is None or b.modality == modality.lower())
             and (judge is None or b.judge_need == judge.lower())),
            key=lambda b: (b.name.lower(), b.name),
        )  # fmt: skip

    def model_envs(self) -> list[str]:
        """The envs whose VLMEvalKit runs models (selftest, probes, `sync`'s checks iterate these)."""
        return [n for n, e in self.envs.items() if e.runs_models]

    def models_of_env(self, env: str) -> list[str]:
        return sorted(m.name for m in self.models.values() if m.env == env)

    def select_models(self, search: str | None = None, *, env: str | None = None, family: str | None = None,
                      kind: str | None = None, runnable: bool = False) -> list[Model]:  # fmt: skip
        """Models matching every filter given, sorted by env then name. `search` is a part of
        the name or family, `family` a part of the family (VLMEvalKit's registry group: `qwen`
        stands for qwen_series, qwen2vl_series, ...), both in any case and without separators.
        A filter value that matches nothing known is an error with suggestions, never an empty
        answer."""
        if env is not None:
            self.env(env)
        if kind not in (None, "local", "api"):
            raise SpectravenvError(f"--kind {kind!r}: give local or api")
        families = self.families(family) if family is not None else None
        found = self.search_models(search) if search else None
        return sorted(
            (m for m in self.models.values()
             if (env is None or m.env == env) and (families is None or m.family in families)
             and (found is None or m.name in found)
             and (kind is None or m.kind == kind) and (not runnable or not m.blocked)),
            key=lambda m: (m.env, m.name),
        )  # fmt: skip

    def families(self, typed: str) -> set[str]:
        """The families a user's family name stands for: those holding it, case and separators
        aside (`qwen` -> qwen_series, qwen2vl_series, qwen3vl_series, qwen3_5_series)."""
        known = {m.family for m in self.models.values()}
        chosen = {f for f in known if folded(typed) and folded(typed) in folded(f)}
        if not chosen:
            # Suggested as users type them: "qwen", not "qwen_series" (whose suffix makes
            # difflib find "qwn" too far from it).
            short = sorted(f.removesuffix("_series") for f in known)
            raise SpectravenvError(f"no model family matches {typed!r}{did_you_mean(typed, short)}; "
                                   "`spectravenv models` shows each model's family")  # fmt: skip
        return chosen

    def search_models(self, text: str) -> set[str]:
        """The names of the models whose name or family holds `text` (case and separators aside)."""
        typed = folded(text)
        chosen = {
            m.name
            for m in self.models.values()
            if typed and (typed in folded(m.name) or typed in folded(m.family))
        }
        if not chosen:
            raise SpectravenvError(f"no model name or family holds {text!r}"
                                   f"{did_you_mean(text, [*self.models, *{m.family for m in self.models.values()}])}; "
                                   "try a shorter part of the name, or `spectravenv models` for them all")  # fmt: skip
        return chosen


def benchmark_record(b: Benchmark) -> dict[str, Any]:
    """A benchmark as `spectravenv benchmarks --json` lists it."""
    return {
        "name": b.name,
        "class": b.vlmeval_class or (f"builtin {b.builtin}" if b.builtin else None),
        "vlmeval_type": b.vlmeval_type or None,
        "type": b.kind,
        "modality": b.modality,
        "category": b.category or None,
        "samples": b.samples,
        "samples_estimated": b.samples_estimated,
        "metric": b.metric if b.headline else None,
        "headline": b.headline,
        "scale": None if b.per_sample or not b.headline else b.scale,
        "per_sample": b.per_sample,
        "headline_from": b.headline_from or None,
        "no_headline": None if b.headline else (b.no_headline or "no headline rule for its score file"),
        "judge": b.judge,
        "judge_need": b.judge_need,
        "judge_evidence": b.judge_evidence or None,
        "envs": list(b.envs) or "all",
        "runnable": not b.blocked,
        "blocked": b.blocked or None,
        "frames": b.frames,
        "fps": b.fps,
        "decoders": list(b.decoders),
        "decoders_missing": {e: list(m) for e, m in b.decoders_missing.items()},
        "parts": list(b.parts),
        "url": b.url,
        "md5": b.md5,
        "tsv": str(b.tsv) if b.tsv else None,
        "experimental": b.experimental,
        "inference_only": b.inference_only,
        "note": b.note or None,
    }


def model_record(m: Model) -> dict[str, Any]:
    """A model as `spectravenv models --json` lists it."""
    return {
        "name": m.name,
        "env": m.env,
        "kind": m.kind,
        "family": m.family,
        "class": m.vlmeval_class or m.cls or (f"builtin {m.builtin}" if m.builtin else None),
        "checkpoint": m.checkpoint or m.kwargs.get("model_path"),
        "gpu_memory_gb": m.gpu_memory_gb,
        "memory_note": m.memory_note,
        "gpus": 0 if m.kind == "api" else m.gpus,
        "multi_gpu": m.multi_gpu,
        "env_vars": list(m.env_vars),
        "cpu": m.cpu,
        "needs": list(m.needs),
        "runnable": not m.blocked,
        "blocked": m.blocked or None,
        "verified": m.verified,
        "evidence": m.evidence,
        "kwargs": m.kwargs,
        "addons": list(m.addons),
    }
