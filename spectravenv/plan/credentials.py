"""What VLMEvalKit's API clients read from the environment, and where a run finds it.

An API model or a judge that lacks its key does not fail in VLMEvalKit: every answer becomes
its failure message, or the judge is swapped for exact matching, and the run "succeeds". So the
variables a client cannot work without are known here, from VLMEvalKit 0.0.20's `vlmeval/api`
sources, and checked before anything is built: in the run's `.env` first, then in the
environment spectravenv was started from (the children get both).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spectravenv.catalog.entries import Model
from spectravenv.errors import SpectravenvError
from spectravenv.secrets import Secrets

# OpenAIWrapper (vlmeval/api/gpt.py) picks the key variable from the model version it is asked
# for, in this order; anything else reads OPENAI_API_KEY (AZURE_OPENAI_API_KEY with use_azure).
OPENAI_KEY_BY_VERSION: tuple[tuple[tuple[str, ...], str], ...] = (
    (("step",), "STEPAI_API_KEY"),
    (("yi-vision",), "YI_API_KEY"),
    (("internvl2-pro",), "InternVL2_PRO_KEY"),
    (("abab",), "MiniMax_API_KEY"),
    (("moonshot",), "MOONSHOT_API_KEY"),
    (("grok",), "XAI_API_KEY"),
    (("gemini", "preview"), "GOOGLE_API_KEY"),
    (("ernie",), "BAIDU_API_KEY"),
)
OPENAI_CLIENTS = ("GPT4V", "OpenAIWrapper")
# The endpoint of OpenAIWrapper when no api_base is given (the variable, or the official API).
OPENAI_BASE_VAR = "OPENAI_API_BASE"
OFFICIAL_OPENAI = "https://api.openai.com/v1/chat/completions"
# Clients whose need is not "one of the credential variables they read".
CLIENT_NEEDS: dict[str, tuple[str, ...]] = {
    "LMDeployAPI": ("LMDEPLOY_API_BASE",),  # the server's URL is asserted; its key has a default
    "LMDeployWrapper": ("LMDEPLOY_API_BASE",),
    "GCPVertexAPI": (),  # Google application-default credentials, not a variable
    "BedrockAPI": (),  # the AWS credential chain
}
_CREDENTIAL = re.compile(r"KEY|SECRET|TOKEN|^ALLES$")


def openai_key_var(version: str, use_azure: bool = False) -> str:
    """The variable OpenAIWrapper reads its key from for a model version."""
    low = version.lower()
    for parts, var in OPENAI_KEY_BY_VERSION:
        if all(p in low for p in parts):
            return var
    return "AZURE_OPENAI_API_KEY" if use_azure else "OPENAI_API_KEY"


def model_needs(model: Model) -> tuple[str, ...]:
    """The variables an API model cannot work without: one of them must be set (empty: none)."""
    if model.kind != "api" or model.kwargs.get("key") or model.kwargs.get("api_key"):
        return ()
    client = model.vlmeval_class or model.cls or ""
    if client in OPENAI_CLIENTS:
        version = model.kwargs.get("model") or model.checkpoint or model.vlmeval_name or model.name
        return (openai_key_var(str(version), bool(model.kwargs.get("use_azure"))),)
    if client in CLIENT_NEEDS:
        return () if model.kwargs.get("api_base") else CLIENT_NEEDS[client]
    return tuple(v for v in model.env_vars if _CREDENTIAL.search(v))


def own_endpoint(model: Model, lookup: Lookup) -> bool:
    """An OpenAI-protocol model sent to another server than the official API (its api_base, or
    OPENAI_API_BASE): a lab's server may want no key, so none is demanded."""
    client = model.vlmeval_class or model.cls or ""
    return client in OPENAI_CLIENTS and bool(model.kwargs.get("api_base") or lookup.has(OPENAI_BASE_VAR))


@dataclass(frozen=True)
class Lookup:
    """Where a run's children get their variables: the `.env` secrets, then the environment."""

    secrets: Secrets
    environ: Mapping[str, str]
    env_file: Path

    def get(self, var: str) -> str | None:
        value = self.secrets.values.get(var) or self.environ.get(var)
        return value or None

    def has(self, var: str) -> bool:
        return self.get(var) is not None

    def missing(self, names: tuple[str, ...]) -> str:
        """One clause for a need none of whose variables is set."""
        what = names[0] if len(names) == 1 else "one of " + ", ".join(names)
        where = self.env_file.absolute()
        exists = "" if where.exists() else ", which does not exist"
        return f"{what}: not set in the .env file ({where}{exists}) nor in the environment"

    def with_environment(self, names: set[str]) -> Secrets:
        """The secrets plus the variables among `names` that only the environment holds, so that
        they are masked like the `.env` ones wherever a child could print them."""
        extra = {v: self.environ[v] for v in sorted(names)
                 if v not in self.secrets.values and self.environ.get(v)}  # fmt: skip
        if not extra:
            return self.secrets
        return Secrets({**extra, **self.secrets.values}, self.secrets.source)


def used_by(models: list[Model]) -> set[str]:
    """Every variable the models' clients read for a key or an endpoint."""
    return {v for m in models for v in model_needs(m)}


def check_models(models: list[Model], lookup: Lookup) -> set[str]:
    """Refuse, in one line, an API model whose key (or endpoint) is not set; returns the
    variables the models use, so the caller can mask them."""
    used: set[str] = set()
    for m in models:
        needs = model_needs(m)
        if needs and not any(lookup.has(v) for v in needs) and not own_endpoint(m, lookup):
            example = needs[0]
            raise SpectravenvError(
                f"{m.name} needs {lookup.missing(needs)}; add `{example}=...` to the .env file "
                f"(or --env-file FILE), or leave {m.name} out"
            )
        used.update(needs)
    return used
