"""The judge of each pair: which of VLMEvalKit's judges scores a benchmark, what it needs, and
what is recorded of it.

VLMEvalKit scores many benchmarks with an LLM judge (`build_judge` in
vlmeval/dataset/utils/judge_util.py): `exact_matching` is no judge at all; `qwen-7b`, `qwen-72b`
and `deepseek` are SiliconFlow models (key `SiliconFlow_API_KEY`); `llama31-8b` is a local
Hugging Face model loaded in the job; every other name is a model version asked of an
OpenAI-compatible endpoint (OpenAIWrapper), its aliases (`gpt-4o-mini` ...) mapped to versions.
`LOCAL_LLM` replaces the version, `--judge-base-url` the endpoint.

The default policy, per benchmark (docs/judges.md):
- a benchmark whose scoring calls no judge (`judge_need = "none"`) gets none;
- `--judge NAME` gives every other benchmark that judge; `--judge exact_matching` is refused for
  a benchmark that cannot be scored without a judge;
- otherwise run.py's choice (`Benchmark.judge`) where what it needs is there (its key, or an
  endpoint of the user's own); where it is not and the benchmark allows exact matching, exact
  matching, chosen here and said at plan time, never discovered in a log; where a judge is
  required, the run is refused at plan time, naming the variable and the .env file.
The choice is kept with the run: a resumed run judges as it did (the fingerprint says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from spectravenv.catalog.entries import Benchmark
from spectravenv.errors import SpectravenvError
from spectravenv.plan.credentials import OFFICIAL_OPENAI, OPENAI_BASE_VAR, Lookup, openai_key_var

EXACT = "exact_matching"
# judge_util.build_judge's model_map (VLMEvalKit 0.0.20): alias -> model version.
MODEL_MAP = {
    "gpt-4-turbo": "gpt-4-1106-preview",
    "gpt-4-0613": "gpt-4-0613",
    "gpt-4-0125": "gpt-4-0125-preview",
    "gpt-4-0409": "gpt-4-turbo-2024-04-09",
    "chatgpt-1106": "gpt-3.5-turbo-1106",
    "chatgpt-0125": "gpt-3.5-turbo-0125",
    "gpt-4o": "gpt-4o-2024-05-13",
    "gpt-4o-0806": "gpt-4o-2024-08-06",
    "gpt-4o-1120": "gpt-4o-2024-11-20",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "qwen-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen-72b": "Qwen/Qwen2.5-72B-Instruct",
    "deepseek": "deepseek-ai/DeepSeek-V3",
    "llama31-8b": "meta-llama/Llama-3.1-8B-Instruct",
}
SILICONFLOW = ("qwen-7b", "qwen-72b", "deepseek")
SILICONFLOW_KEY = "SiliconFlow_API_KEY"
SILICONFLOW_HOST = "api.siliconflow.cn"
LOCAL_HF = ("llama31-8b",)
LOCAL_LLM_VAR = "LOCAL_LLM"
# The .env (or environment) variable that does what --judge-base-url does.
BASE_URL_VAR = "SPECTRAVENV_JUDGE_BASE_URL"
# run.py's judge settings with its default flags (--retry 6, --judge-timeout 600); nproc is the
# run's API concurrency (run.py's --api-nproc, 4), not part of what a score depends on.
SETTINGS = {"retry": 6, "timeout": 600}
NEEDS = ("none", "optional", "required")


@dataclass(frozen=True)
class Options:
    """The run-wide judge options: --judge (None: each benchmark's default) and the endpoint."""

    judge: str | None = None
    base_url: str | None = None  # an OpenAI-compatible base URL, e.g. http://host:8000/v1
    base_url_from: str = "--judge-base-url"  # or the variable it came from (BASE_URL_VAR)


@dataclass(frozen=True)
class Judge:
    """The judge one pair is scored with, as the job file, fingerprint and provenance hold it."""

    name: str  # VLMEvalKit's `model` judge argument; EXACT for none
    version: str | None = None  # what the endpoint is asked for
    client: str | None = None  # OpenAIWrapper | SiliconFlowAPI | HFChatModel
    key_var: str | None = None
    api_base: str | None = None  # the full .../chat/completions URL we pass (None: the client's own)
    endpoint: str | None = None  # its host, for the record (never a key)
    local_llm: str | None = None
    why: str = ""
    used: bool = True  # False: the benchmark's scoring calls no judge

    @property
    def is_exact(self) -> bool:
        return self.name == EXACT

    def identity(self) -> dict[str, Any] | None:
        """The fingerprint's judge part: what a score depends on. None where no judge is used
        (a part that is None is never compared, so --judge does not rerun such a pair)."""
        if not self.used:
            return None
        if self.is_exact:
            return {"model": EXACT}
        return {"model": self.name, "version": self.version, "endpoint": self.endpoint, **SETTINGS}

    def spec(self) -> dict[str, Any]:
        """The job file's judge of a benchmark (svrunner.judging reads it)."""
        spec: dict[str, Any] = {"model": self.name, "identity": self.identity()}
        if not self.is_exact:
            spec.update(SETTINGS)
            if self.api_base:
                spec["api_base"] = self.api_base
            if self.local_llm:
                spec["local_llm"] = self.local_llm
        return spec

    def record(self) -> dict[str, Any]:
        """run.json's judges: the identity and why it was chosen."""
        return {"model": self.name, **(self.identity() or {"used": False}), "why": self.why}


def check_base_url(url: str, source: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpectravenvError(f"{source} {url!r} is not an http(s) URL; give the base URL of an OpenAI-"
                               "compatible server, e.g. http://judge-host:8000/v1")  # fmt: skip
    return url.rstrip("/")


def host(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else None


def options(judge: str | None, base_url: str | None, lookup: Lookup) -> Options:
    """The run's options; an endpoint given neither way may come from the .env file."""
    if judge is not None and not judge.strip():
        raise SpectravenvError("--judge needs a name, e.g. gpt-4o-mini or exact_matching")
    if base_url:
        return Options(judge, check_base_url(base_url, "--judge-base-url"))
    env_url = lookup.get(BASE_URL_VAR)
    if env_url:
        return Options(judge, check_base_url(env_url, BASE_URL_VAR), BASE_URL_VAR)
    return Options(judge)


def build(name: str, opts: Options, lookup: Lookup, why: str) -> Judge:
    """A judge by VLMEvalKit name, with what it needs and where it will be asked."""
    if name == EXACT:
        return Judge(EXACT, why=why)
    local_llm = lookup.get(LOCAL_LLM_VAR)
    version = local_llm or MODEL_MAP.get(name, name)
    api_base = f"{opts.base_url}/chat/completions" if opts.base_url else None
    if name in LOCAL_HF:
        return Judge(name, version, "HFChatModel", None, None, "local", local_llm, why)
    if name in SILICONFLOW:
        return Judge(name, version, "SiliconFlowAPI", SILICONFLOW_KEY, api_base,
                     host(api_base) or SILICONFLOW_HOST, local_llm, why)  # fmt: skip
    endpoint = host(api_base or lookup.get(OPENAI_BASE_VAR) or OFFICIAL_OPENAI)
    return Judge(name, version, "OpenAIWrapper", openai_key_var(version), api_base, endpoint, local_llm, why)


def missing(judge: Judge, opts: Options, lookup: Lookup) -> str | None:
    """Why the judge cannot work here, or None. An endpoint of the user's own (a lab's vLLM or
    LMDeploy server, a gateway) may want no key, so none is demanded for it."""
    if judge.key_var is None or lookup.has(judge.key_var):
        return None
    if opts.base_url or (judge.client == "OpenAIWrapper" and lookup.has(OPENAI_BASE_VAR)):
        return None
    return lookup.missing((judge.key_var,))


def choose(bench: Benchmark, opts: Options, lookup: Lookup, kept: str | None = None) -> tuple[Judge, str | None]:
    """The judge of one benchmark, and why the run cannot use it (a refusal), or None."""
    need = bench.judge_need if bench.judge_need in NEEDS else "optional"
    if need == "none":
        return Judge(EXACT, why="its scoring calls no judge", used=False), None
    default = bench.judge or EXACT
    name = kept or opts.judge or default
    why = ("kept from the run's first attempt" if kept else "--judge" if opts.judge
           else f"VLMEvalKit's default for {bench.name}")  # fmt: skip
    if name == EXACT and need == "required":
        return Judge(EXACT, why=why), (f"{bench.name} cannot be scored by exact matching: its scoring needs a "
                                       f"judge ({default}); give --judge NAME or leave {bench.name} out")  # fmt: skip
    judge = build(name, opts, lookup, why)
    lack = missing(judge, opts, lookup)
    if lack is None:
        return judge, None
    if kept is None and opts.judge is None and need == "optional":
        return Judge(EXACT, why=f"exact matching: its default judge {name} needs {lack}"), None
    ways = [f"add `{judge.key_var}=...` to the .env file", "point --judge-base-url at an OpenAI-compatible server"]
    if need != "required":
        ways.append("give --judge exact_matching")
    advice = ", ".join(ways[:-1]) + f" or {ways[-1]}"
    return judge, f"{bench.name} is judged by {name}, which needs {lack}; {advice}"


def announce(judges: dict[str, Judge]) -> str | None:
    """One line for the run: which benchmarks are judged by what, and which fell to exact
    matching because their default judge lacks what it needs."""
    groups: dict[str, list[str]] = {}
    for bench, j in sorted(judges.items()):
        if not j.used or (j.is_exact and not j.why.startswith("exact matching:")):
            continue
        label = j.why if j.is_exact else f"{j.name} at {j.endpoint}" if j.endpoint else j.name
        groups.setdefault(label, []).append(bench)
    if not groups:
        return None
    return "spectravenv: judges: " + "; ".join(f"{', '.join(b)}: {label}" for label, b in groups.items())
