"""The demo model as VLMEvalKit sees it: a ``BaseModel`` subclass, with test hooks.

The class is made when first asked for (``make_demo_class``), because its base comes from
VLMEvalKit, which only the env has; its code lives in ``DemoTinyLlavaCode``, mixed in before
VLMEvalKit's ``BaseModel``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

from .architecture import image_features
from .checkpoint import ensure_demo_model
from .loading import load_tiny_llava
from .prompts import wrapper_text


def _leak(names: list[str], leak_raise: bool) -> None:
    """The ``leak_env`` test hook: print each variable's sha256, its value whole, split over
    two lines and in two writes without a newline between (masking must catch all of them), and
    with ``leak_raise`` raise an exception whose message holds it."""
    for var in names:
        value = os.environ.get(var, "")
        half = len(value) // 2
        print(f"{var} sha256={hashlib.sha256(value.encode()).hexdigest()}", flush=True)
        print(f"{var} value={value}", flush=True)
        print(f"{var} split={value[:half]}\n{value[half:]}", flush=True)
        sys.stdout.write(f"{var} pieces={value[:half]}")
        sys.stdout.flush()
        time.sleep(0.2)  # two writes the dispatcher reads separately
        sys.stdout.write(f"{value[half:]} end\n")
        sys.stdout.flush()
        if leak_raise:
            raise RuntimeError(f"leak_raise test hook: {var}={value}")


def _load_hooks(oom_below_gpus: int, fail_load: bool) -> None:
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    if len(visible) < oom_below_gpus:
        raise RuntimeError(f"CUDA out of memory (oom_below_gpus test hook: {len(visible)} GPU(s) visible)")
    if fail_load:
        raise RuntimeError("demo-tiny-llava: fail_load test hook is set")


class DemoTinyLlavaCode:
    """VLMEvalKit wrapper of the tiny trained LLaVA (CPU or CUDA).

    Test hooks (kwargs): ``fail_on`` list of dataset names for which generate raises,
    ``sleep`` seconds per sample, ``fail_load`` raise in the constructor,
    ``fixed_answer`` return this text instead of generating (gives non-zero, predictable
    MCQ scores: e.g. "A" scores the share of questions whose answer is A),
    ``leak_env`` names of environment variables this hook deliberately leaks, to prove that
    masking holds: it prints each value's sha256, the raw value whole, the value split
    over two lines and in two writes without a newline between, and (with ``leak_raise``)
    raises an exception whose message holds the value; none of it may reach a file,
    ``oom_below_gpus`` fail at load like a CUDA out-of-memory when fewer GPUs are visible.
    """

    INTERLEAVE = False
    # VLMEvalKit's own convention: local models are not API models.
    is_api = False

    def __init__(
        self,
        model_path: str | None = None,
        assets_dir: str | None = None,
        max_new_tokens: int = 6,
        device: str | None = None,
        fail_on: list[str] | None = None,
        sleep: float = 0.0,
        fail_load: bool = False,
        cpu_threads: int | None = 1,
        fixed_answer: str | None = None,
        leak_env: list[str] | None = None,
        leak_raise: bool = False,
        oom_below_gpus: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _leak(leak_env or [], leak_raise)
        _load_hooks(oom_below_gpus, fail_load)
        self._load(model_path, assets_dir, device, cpu_threads)
        self.max_new_tokens = int(max_new_tokens)
        self.fail_on = set(fail_on or [])
        self.sleep = float(sleep or 0.0)
        self.fixed_answer = fixed_answer
        self.max_prompt_tokens = 1024
        self.kwargs = kwargs

    def _load(self, model_path: str | None, assets_dir: str | None, device: str | None,
              cpu_threads: int | None) -> None:  # fmt: skip
        import torch
        from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

        if model_path is None:
            if assets_dir is None:
                raise ValueError("demo-tiny-llava needs model_path or assets_dir")
            model_path = ensure_demo_model(assets_dir)
        elif not os.path.isdir(model_path):
            raise FileNotFoundError(f"demo-tiny-llava: no checkpoint folder at {model_path}")
        self.model_path = model_path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu" and cpu_threads:
            # Matrices this small gain nothing from intra-op threads, and on a busy
            # 2-core machine thread hand-offs made one generate() 20x slower (0.26 s vs
            # 0.014 s measured).
            torch.set_num_threads(int(cpu_threads))
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model_path)
        self.image_processor = CLIPImageProcessor.from_pretrained(model_path)
        (self.vision, self.projector, self.lm, self.cfg, self.backend) = load_tiny_llava(model_path, self.device)
        self.image_token_id = int(self.cfg["image_token_index"])

    def _image_features(self, image_path: str) -> Any:
        import torch
        from PIL import Image

        image = Image.open(image_path).convert("RGB")
        pixel = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return image_features(self.vision, self.projector, pixel.to(self.device), self.cfg)[0]

    def _embeddings(self, prompt: str, images: list[str]) -> Any:
        """The prompt's token embeddings, the image's features in place of its <image> token
        (LLaVA's merge), as a batch of one."""
        import torch

        ids = self.tokenizer(wrapper_text(prompt, bool(images)), add_special_tokens=False)["input_ids"]
        ids_t = torch.tensor([self.tokenizer.bos_token_id, *ids[-self.max_prompt_tokens :]], device=self.device)
        emb = self.lm.get_input_embeddings()(ids_t)
        if images:
            pos = (ids_t == self.image_token_id).nonzero()
            if len(pos):
                p = int(pos[0, 0])
                feats = self._image_features(images[0]).to(emb.dtype)
                emb = torch.cat([emb[:p], feats, emb[p + 1 :]], dim=0)
        return emb.unsqueeze(0)

    def generate_inner(self, message: list[dict[str, Any]], dataset: str | None = None) -> str:
        import torch

        if dataset in self.fail_on:
            raise RuntimeError(f"demo-tiny-llava: fail_on test hook for dataset {dataset}")
        if self.sleep > 0:
            time.sleep(self.sleep)
        if self.fixed_answer is not None:
            return str(self.fixed_answer)
        texts = [m["value"] for m in message if m["type"] == "text"]
        images = [m["value"] for m in message if m["type"] == "image"]
        with torch.no_grad():
            emb = self._embeddings("\n".join(texts), images)
            mask = torch.ones(emb.shape[:2], dtype=torch.long, device=self.device)
            out = self.lm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                                   do_sample=False, num_beams=1, pad_token_id=self.tokenizer.pad_token_id,
                                   eos_token_id=self.tokenizer.eos_token_id)  # fmt: skip
        # decoder-only generate() with inputs_embeds returns only the new tokens
        text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        # an untrained or unsure model may emit anything; control characters would make
        # openpyxl refuse to write the .xlsx prediction file, so keep printable text only
        return "".join(c for c in text if c.isprintable() and c != "\ufffd").strip()


def make_demo_class() -> type:
    """``DemoTinyLlava``: the code above on VLMEvalKit's ``BaseModel``."""
    from vlmeval.vlm.base import BaseModel

    return type("DemoTinyLlava", (DemoTinyLlavaCode, BaseModel), {"__doc__": DemoTinyLlavaCode.__doc__})
