"""Tiny checkpoints of real model families, for `spectravenv selftest` (runs inside an env).

Each module here holds one or more `Recipe`s: a family's real Hugging Face classes, built from a
shrunken config with random weights (seeded), a tokenizer trained locally and a processor made
locally, written with `save_pretrained` into a folder. The selftest then builds the family's own
VLMEvalKit wrapper from its `supported_VLM` entry with `model_path` pointing at that folder and
runs `generate` on a few DemoMCQ rows: the family's real code, offline, in seconds.

Modules import torch and transformers only inside functions, so the host can list the recipes
(it imports this package to plan a selftest) without any of the env's packages. A new module
is found by itself: nothing to register.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str  # "qwen2-vl": unique, part of the checkpoint's cache key
    family: str  # the registry family it stands for (catalog `family`)
    models: tuple[str, ...]  # registry names it can stand in for; the env's own is used
    make: Callable[[str], None]  # writes the checkpoint (and tokenizer, processor) into a folder
    kwargs: dict[str, Any] = field(default_factory=dict)  # overrides of the registry kwargs
    path_kwarg: str = "model_path"  # the wrapper's keyword for the checkpoint folder
    min_transformers: str = "0"
    note: str = ""  # what it does not cover
    # A context manager around building and asking the model, yielding extra kwargs (an API
    # recipe starts a local stand-in server here and gives its URL).
    serve: Callable[[], Any] | None = None


def recipes() -> list[Recipe]:
    out: list[Recipe] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        out.extend(getattr(module, "RECIPES", ()))
    names = [r.name for r in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"recipe names must be unique: {sorted(dupes)}")
    return out
