"""Loading the demo checkpoint for inference, in whatever transformers release the env has.

Prefer transformers' own ``LlavaForConditionalGeneration`` (4.36+) when it has the classic layout
(.vision_tower / .multi_modal_projector / .language_model with generate()). Older transformers
(e.g. 4.33) lack it, and newer ones restructured it; then the same weights are loaded into a
CLIPVisionModel + projector + LlamaForCausalLM composite. Generation goes through the three parts
in both cases, so the outputs are the same.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .architecture import composite


def _classic(path: str, device: str, cfg: dict[str, Any]) -> tuple[Any, ...] | None:
    import torch
    import transformers

    llava_cls = getattr(transformers, "LlavaForConditionalGeneration", None)
    if llava_cls is None:
        return None
    model = llava_cls.from_pretrained(path, torch_dtype=torch.float32)
    lm = getattr(model, "language_model", None)
    if not (hasattr(model, "vision_tower") and hasattr(model, "multi_modal_projector") and lm is not None
            and hasattr(lm, "generate")):  # fmt: skip
        return None
    model.to(device).eval()
    return model.vision_tower, model.multi_modal_projector, lm, cfg, "LlavaForConditionalGeneration"


def _composite(path: str, device: str, cfg: dict[str, Any]) -> tuple[Any, ...]:
    from safetensors.torch import load_file

    state = load_file(os.path.join(path, "model.safetensors"))
    vision, proj, lm = composite(cfg)
    for prefix, module in (("vision_tower.", vision), ("language_model.", lm), ("multi_modal_projector.", proj)):
        sub = fit_keys({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, module)
        missing, unexpected = module.load_state_dict(sub, strict=False)
        # only non-persistent buffers (position ids, rotary caches) may be missing
        bad = [m for m in missing if not ("position_ids" in m or "inv_freq" in m)]
        if bad or unexpected:
            raise RuntimeError(f"demo checkpoint mismatch: missing={bad} unexpected={unexpected}")
    for m in (vision, proj, lm):
        m.to(device).eval()
    return vision, proj, lm, cfg, "composite(CLIPVisionModel+LlamaForCausalLM)"


def load_tiny_llava(path: str, device: str) -> tuple[Any, ...]:
    """(vision_tower, projector, language_model, config dict, which backend)."""
    with open(os.path.join(path, "config.json")) as fh:
        cfg = json.load(fh)
    return _classic(path, device, cfg) or _composite(path, device, cfg)


def fit_keys(state: dict[str, Any], module: Any) -> dict[str, Any]:
    """Parameter names as this transformers release spells them: releases differ by a leading
    component (CLIPVisionModel's `vision_model.` is there in 4.x and gone in 5.x)."""
    want = set(module.state_dict())
    if set(state) <= want:
        return state
    for head in {k.split(".", 1)[0] for k in want} | {k.split(".", 1)[0] for k in state}:
        added = {f"{head}.{k}": v for k, v in state.items()}
        if set(added) <= want:
            return added
        dropped = {k[len(head) + 1 :]: v for k, v in state.items() if k.startswith(head + ".")}
        if len(dropped) == len(state) and set(dropped) <= want:
            return dropped
    return state
