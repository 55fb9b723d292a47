"""How a model generates: `hf` (its VLMEvalKit wrapper in its env, the default) or `vllm` (its
checkpoint served by vLLM in the engine env, asked through VLMEvalKit's `LMDeployWrapper` with
many requests in flight: runners/svrunner/served.py).

`--backend` on `eval` sets every model of the run; otherwise a model's own `backend` (in
spectravenv.toml) holds. vLLM loads a checkpoint by its config's `architectures`; the ones the
engine env's vLLM serves are read inside that env by scripts/probe_vllm.py into
catalog/data/vllm_architectures.json, and the plan refuses, in one line, a model whose
architecture is not among them or cannot be known before its weights are downloaded.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from spectravenv.catalog.entries import Catalog, Model
from spectravenv.errors import SpectravenvError
from spectravenv.paths import Paths

ENGINE_ENV = "vllm-cpu"  # the one engine env shipped (the CPU build; a GPU env would join it)
ARCHITECTURES = Path(__file__).resolve().parents[1] / "catalog" / "data" / "vllm_architectures.json"


@cache
def engine_facts() -> dict[str, Any]:
    """The probe's record: engine, version, architectures."""
    return json.loads(ARCHITECTURES.read_text())


def engine_version() -> str:
    facts = engine_facts()
    return f"{facts['engine']} {facts['version']}"


def _config_file(model: Model, paths: Paths) -> Path | None:
    """The checkpoint's config.json: a local folder's, or the hub cache's newest snapshot."""
    where = model.kwargs.get("model_path") or model.checkpoint
    if not where:
        return None
    local = Path(str(where)).expanduser()
    if local.is_dir():
        return local / "config.json"
    folder = paths.hf_home / "hub" / ("models--" + str(where).replace("/", "--")) / "snapshots"
    found = (
        sorted(folder.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
        if folder.is_dir()
        else []
    )
    return found[-1] if found else None


def architecture(model: Model, paths: Paths) -> str | None:
    """The architecture vLLM would load: the catalog's, else the checkpoint config's."""
    if model.architecture:
        return model.architecture
    config = _config_file(model, paths)
    if config is None or not config.is_file():
        return None
    archs = json.loads(config.read_text()).get("architectures") or []
    return str(archs[0]) if archs else None


def refusal(model: Model, paths: Paths) -> str | None:
    """Why vLLM cannot serve this model, in one line; None when it can."""
    if model.kind == "api":
        return f"{model.name} is an API model: it is served already; use --backend hf"
    arch = architecture(model, paths)
    if arch is None:
        return (f"{model.name}: its checkpoint's architecture is not known before its weights are here; "
                "run `spectravenv prefetch` for it first, or use --backend hf")  # fmt: skip
    if arch not in engine_facts()["architectures"]:
        return f"{model.name}: {engine_version()} does not serve {arch} (see {ARCHITECTURES.name}); use --backend hf"
    return None


def apply(catalog: Catalog, names: list[str], backend: str | None, paths: Paths) -> list[str]:
    """Give the run's models their backend (`backend` from --backend, else each its own), and
    refuse a served model vLLM cannot load; returns what the plan must say about the served ones."""
    notes = []
    for name in names:
        model = catalog.models[name]
        chosen = backend or model.backend
        if chosen != model.backend:
            catalog.models[name] = model = replace(model, backend=chosen)
        if chosen == "vllm" and (why := refusal(model, paths)) is not None:
            raise SpectravenvError(f"--backend vllm: {why}")
        if chosen == "vllm" and not model.builtin:
            notes.append(f"{name} served by vLLM: its prompts are the datasets' (its wrapper's own prompts, "
                         "if it has any, are not reproduced; the report's prompt column says so)")  # fmt: skip
    return notes


def engine_env(models: list[Model]) -> str | None:
    """The engine env the run needs, if any model of it is served."""
    return ENGINE_ENV if any(m.backend == "vllm" for m in models) else None
