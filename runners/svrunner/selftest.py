"""`spectravenv selftest` inside one env: each family's real wrapper on a tiny checkpoint.

    <env>/bin/python runners/selftest_runner.py SPEC.json

SPEC: {"recipes": [{"name": ..., "model": registry name}], "assets_dir", "data_root", "rows"}.
For each recipe: make (or reuse) its tiny checkpoint, build the model from its `supported_VLM`
entry with the checkpoint's path (and the recipe's overrides), and `generate` on the first rows
of DemoMCQ with the prompt VLMEvalKit would send. On a machine without a GPU, CUDA calls are
redirected to the CPU (svrunner.tiny.cpu). Prints one JSON line per recipe.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
import traceback
from typing import Any

from . import demo
from .kit import compat_notes, plain_parse_response, sdpa_for_flash_attention


def checkpoint_for(recipe: Any, assets_dir: str) -> str:
    """The recipe's tiny checkpoint, made once per (recipe code, transformers release).

    Made in its final folder (some configs name their own sub-folders by absolute path), under
    a lock, with `.complete` written last: a folder without it is a make cut short, redone."""
    import transformers

    from .locking import FileLock

    source = inspect.getsource(sys.modules[recipe.make.__module__])
    key = hashlib.sha256(f"{recipe.name}\n{transformers.__version__}\n{source}".encode()).hexdigest()[:12]
    final = os.path.join(assets_dir, "tiny", f"{recipe.name}-{key}")
    done = os.path.join(final, ".complete")
    if os.path.exists(done):
        return final
    with FileLock(final + ".lock", f"making the tiny checkpoint {recipe.name}").hold(600):
        if not os.path.exists(done):
            shutil.rmtree(final, ignore_errors=True)
            os.makedirs(final)
            recipe.make(final)
            open(done, "w").close()
    return final


def demo_rows(data_root: str, n: int) -> tuple[Any, list[Any]]:
    from vlmeval.dataset import build_dataset

    demo.ensure_builtin_dataset("DemoMCQ", data_root)
    dataset = build_dataset("DemoMCQ")
    return dataset, [dataset.data.iloc[i] for i in range(min(n, len(dataset.data)))]


def run_recipe(recipe: Any, item: dict[str, Any], spec: dict[str, Any], device: str) -> dict[str, Any]:
    import contextlib

    with recipe.serve() if recipe.serve else contextlib.nullcontext({}) as served:
        return _ask(recipe, item, spec, device, served or {})


def _ask(recipe: Any, item: dict[str, Any], spec: dict[str, Any], device: str, served: dict[str, Any]) -> dict[str, Any]:
    from vlmeval.config import supported_VLM

    # VLMEvalKit's FAIL_MSG is "Failed to obtain answer via API."; GLM's wrapper and others
    # write their own "Failed to obtain answer." when they swallow an error.
    fail_msg = "Failed to obtain answer"
    t0 = time.time()
    folder = checkpoint_for(recipe, spec["assets_dir"])
    made = time.time() - t0
    base = supported_VLM[item["model"]]
    # The registry's keyword arguments, the catalog's (as an evaluation passes them), the
    # recipe's, and the tiny checkpoint in place of the weights.
    kwargs = {**(getattr(base, "keywords", None) or {}), **item.get("kwargs", {}), **recipe.kwargs, **served}
    if recipe.path_kwarg:
        kwargs[recipe.path_kwarg] = folder
    factory = getattr(base, "func", base)
    model = functools.partial(factory, **kwargs)()
    dataset, rows = demo_rows(spec["data_root"], int(spec.get("rows", 2)))
    # As vlmeval.inference.infer_data does, step for step.
    if hasattr(model, "set_dump_image"):
        model.set_dump_image(dataset.dump_image)
    answers = []
    for row in rows:
        if getattr(dataset, "force_use_dataset_prompt", False):
            struct = dataset.build_prompt(row)
        elif hasattr(model, "use_custom_prompt") and model.use_custom_prompt("DemoMCQ"):
            struct = model.build_prompt(row, dataset="DemoMCQ")
        else:
            struct = dataset.build_prompt(row)
        out = model.generate(message=struct, dataset="DemoMCQ")
        if not isinstance(out, str):
            raise TypeError(f"generate returned {type(out).__name__}, not a string")
        if fail_msg in out:  # many wrappers catch their own errors and answer with this
            raise RuntimeError(f"the wrapper answered with VLMEvalKit's failure message: {out[:200]!r}")
        answers.append(out[:40])
    return {"status": "ok", "seconds": round(time.time() - t0, 2), "checkpoint_seconds": round(made, 2),
            "answers": answers, "device": device}  # fmt: skip


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        spec = json.load(fh)
    os.environ["LMUData"] = spec["data_root"]
    os.makedirs(spec["data_root"], exist_ok=True)
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    import vlmeval  # noqa: F401

    from .tiny import recipes

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        from .tiny.cpu import redirect_cuda_to_cpu

        redirect_cuda_to_cpu()
        device = "cpu (CUDA calls redirected)"
    swapped = sdpa_for_flash_attention()
    parsed = plain_parse_response()
    by_name = {r.name: r for r in recipes()}
    for item in spec["recipes"]:
        recipe = by_name[item["name"]]
        row = {"recipe": recipe.name, "family": recipe.family, "model": item["model"]}
        try:
            row.update(run_recipe(recipe, item, spec, device))
            if swapped or parsed:
                row["attention"] = compat_notes(swapped, parsed)
                swapped.clear()
                parsed.clear()
        except BaseException as exc:  # one family's failure is a row, never the end of the run
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400],
                       traceback="".join(tb)[-3000:], device=device)  # fmt: skip
        print(json.dumps(row), flush=True)
    return 0
