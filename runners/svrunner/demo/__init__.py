"""The built-in demo: a tiny LLaVA trained on CPU at first use, and the synthetic datasets it answers.

This package runs INSIDE a per-transformers-version environment, as part of the runner package.
It may import only the standard library and the packages of that environment (torch,
transformers, tokenizers, safetensors, vlmeval), and those only inside functions; never
spectravenv. Its dataset half is standard library only. docs/demo.md has the measurements.

    scenes        the pictures: four shapes a scene, raster drawing, the datasets' rows
    png           a standard-library PNG encoder (image bytes independent of Pillow)
    datasets      DemoMCQ, DemoShapes and their controls as VLMEvalKit TSVs, placed in LMUData
    prompts       VLMEvalKit's MCQ prompt inside the wrapper's template (training uses both)
    architecture  the model's configs and tokenizer, its parts built fresh for training
    training      the training loop (deterministic: seeded generators, one thread)
    checkpoint    the trained checkpoint on disk, keyed by the recipe's digest
    loading       loading it for inference under any transformers release
    wrapper       the VLMEvalKit model class and its test hooks
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .checkpoint import DEMO_MODEL_NAME, ensure_demo_model, recipe_digest
from .datasets import BUILTIN_DATASETS, builtin_dataset_bytes, ensure_builtin_dataset
from .wrapper import make_demo_class

__all__ = [
    "BUILTIN_DATASETS",
    "DEMO_MODEL_NAME",
    "builtin_dataset_bytes",
    "builtin_model_class",
    "builtin_model_names",
    "ensure_builtin_dataset",
    "ensure_demo_model",
    "recipe_digest",
]

_MODEL_FACTORIES: dict[str, Callable[[], type]] = {DEMO_MODEL_NAME: make_demo_class}


def builtin_model_names() -> list[str]:
    return sorted(_MODEL_FACTORIES)


@functools.cache
def builtin_model_class(name: str) -> type:
    """The BaseModel subclass of a built-in model (built lazily: needs vlmeval imported)."""
    if name not in _MODEL_FACTORIES:
        raise KeyError(f"unknown built-in model {name!r}; known: {builtin_model_names()}")
    return _MODEL_FACTORIES[name]()
