"""Built-in demo model and demo datasets for the spectravenv VLMEvalKit runner.

This module runs INSIDE a per-transformers-version environment, as part of the runner
package.  It may import only the standard library and the packages of that environment
(torch, transformers, tokenizers, safetensors, vlmeval); never spectravenv.

What it provides
- ``demo-tiny-llava``: a tiny, randomly initialised LLaVA (2-layer CLIP vision tower,
  2-layer Llama, hidden size 32, a byte-level BPE tokenizer trained on a few sentences,
  a CLIPImageProcessor at 32x32).  It is written once to ``<assets_dir>/demo-tiny-llava-v1``
  as a regular ``LlavaForConditionalGeneration`` checkpoint and wrapped in a VLMEvalKit
  ``BaseModel`` subclass, so the runner drives it exactly like a real model.
- ``DemoMCQ`` (what colour is the shape?) and ``DemoShapes`` (which shape is it?): small
  synthetic multiple-choice TSVs in VLMEvalKit's format.  Written to ``<LMUData>/<name>.tsv``
  they are picked up by VLMEvalKit's own custom-MCQ path (``build_dataset`` of an unknown
  name -> ``CustomMCQDataset``), which has no md5 check and never downloads.

Determinism: weights come from a seeded torch generator in sorted-name order (not from
module construction order, which changes between transformers versions); images are
rasterised and PNG-encoded with the standard library only (no dependence on the Pillow
version).  Everything is written atomically: built in a temporary path in the same
folder, then renamed; if another process won the race, its copy is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any

from .files import sha256_file, write_atomic

DEMO_MODEL_NAME = "demo-tiny-llava"
DEMO_MODEL_DIRNAME = "demo-tiny-llava-v1"  # bump the suffix when the recipe changes
DEMO_MODEL_SEED = 1234
DEMO_DATA_SEED = 20261127

# ----------------------------------------------------------------------------------------
# Demo datasets: stdlib-only raster + PNG so the bytes do not depend on the Pillow version
# ----------------------------------------------------------------------------------------

IMG_SIZE = 64
COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    # name: (rgb, category)
    "red": ((220, 30, 30), "warm"),
    "orange": ((245, 140, 20), "warm"),
    "yellow": ((240, 220, 30), "warm"),
    "green": ((30, 160, 60), "cool"),
    "blue": ((30, 70, 220), "cool"),
    "purple": ((130, 40, 170), "cool"),
    "black": ((20, 20, 20), "neutral"),
    "gray": ((128, 128, 128), "neutral"),
}
SHAPES: dict[str, str] = {
    # name: category (uneven category sizes on purpose: exercises the stratified limit)
    "circle": "curved",
    "ring": "curved",
    "square": "quadrilateral",
    "diamond": "quadrilateral",
    "triangle": "triangle",
}


def _inside(shape: str, x: float, y: float, cx: float, cy: float, r: float) -> bool:
    """Point-in-shape test in pixel coordinates (pixel centres)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (0.55 * r) ** 2 <= d2 <= r * r
    if shape == "square":
        return abs(dx) <= r * 0.85 and abs(dy) <= r * 0.85
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r
    if shape == "triangle":  # apex up, base at cy + r/2
        if dy < -r or dy > r * 0.5:
            return False
        half = (dy + r) / 1.5 * 0.87  # widens linearly from apex to base
        return abs(dx) <= half
    raise ValueError(shape)


def _png_bytes(width: int, height: int, rows: list[bytes]) -> bytes:
    """Minimal RGB8 PNG encoder (filter 0 on each row, zlib level 9)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + tag
            + payload
            + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)
        )

    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def render_shape_png(
    shape: str, rgb: tuple[int, int, int], cx: float, cy: float, r: float
) -> bytes:
    bg = bytes((250, 250, 250))
    fg = bytes(rgb)
    rows = []
    for py in range(IMG_SIZE):
        row = bytearray()
        for px in range(IMG_SIZE):
            row += fg if _inside(shape, px + 0.5, py + 0.5, cx, cy, r) else bg
        rows.append(bytes(row))
    return _png_bytes(IMG_SIZE, IMG_SIZE, rows)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _mcq_rows(kind: str, n_rows: int = 24) -> list[dict[str, Any]]:
    """Rows for DemoMCQ (kind='colour') or DemoShapes (kind='shape')."""
    rng = random.Random(f"{DEMO_DATA_SEED}:{kind}")
    colour_names = list(COLOURS)
    shape_names = list(SHAPES)
    rows = []
    for i in range(n_rows):
        if kind == "colour":
            colour = colour_names[i % len(colour_names)]
            shape = rng.choice(shape_names)
            target, pool, category = colour, colour_names, COLOURS[colour][1]
            question = "What colour is the shape in the image?"
        else:
            shape = shape_names[i % len(shape_names)]
            colour = rng.choice(colour_names)
            target, pool, category = shape, shape_names, SHAPES[shape]
            question = "Which shape is shown in the image?"
        r = rng.uniform(14.0, 24.0)
        cx = rng.uniform(r + 2, IMG_SIZE - r - 2)
        cy = rng.uniform(r + 2, IMG_SIZE - r - 2)
        png = render_shape_png(shape, COLOURS[colour][0], cx, cy, r)
        distractors = rng.sample([p for p in pool if p != target], 3)
        options = distractors + [target]
        rng.shuffle(options)
        answer = "ABCD"[options.index(target)]
        rows.append(
            dict(
                index=i,
                image=_b64(png),
                question=question,
                A=options[0],
                B=options[1],
                C=options[2],
                D=options[3],
                answer=answer,
                category=category,
            )
        )
    return rows


def _tsv_bytes(rows: list[dict[str, Any]]) -> bytes:
    cols = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    lines = ["\t".join(cols)]
    for row in rows:
        lines.append("\t".join(str(row[c]) for c in cols))
    return ("\n".join(lines) + "\n").encode("utf-8")


BUILTIN_DATASETS: dict[str, Callable[[], bytes]] = {
    "DemoMCQ": lambda: _tsv_bytes(_mcq_rows("colour")),
    "DemoShapes": lambda: _tsv_bytes(_mcq_rows("shape")),
}


def builtin_dataset_bytes(builtin: str) -> bytes:
    if builtin not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {builtin!r}; known: {sorted(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[builtin]()


def ensure_builtin_dataset(builtin: str, data_root: str, name: str | None = None) -> str:
    """Place the built-in TSV at ``<data_root>/<name>.tsv`` (name defaults to builtin).

    Written only if missing.  An existing file with other content is an error rather than
    being overwritten: VLMEvalKit caches decoded images under LMUData/images/<name>/, so
    silently swapping the TSV would mix old images with new questions.
    """
    name = name or builtin
    path = os.path.join(data_root, f"{name}.tsv")
    want = builtin_dataset_bytes(builtin)
    if os.path.exists(path):
        with open(path, "rb") as fh:
            have = fh.read()
        if have != want:
            raise RuntimeError(
                f"{path} exists but differs from built-in dataset {builtin!r} "
                f"(sha256 {hashlib.sha256(have).hexdigest()[:12]} != {hashlib.sha256(want).hexdigest()[:12]}); "
                "remove it or use another benchmark name"
            )
        return path
    write_atomic(path, want)
    return path


# ----------------------------------------------------------------------------------------
# Demo model: creation of the checkpoint
# ----------------------------------------------------------------------------------------

TOKENIZER_SENTENCES = [
    "What colour is the shape in the image?",
    "Which shape is shown in the image?",
    "Options: A. red B. green C. blue D. yellow",
    "A circle, a ring, a square, a diamond and a triangle.",
    "Orange, purple, black and gray are colours too.",
    "Please select the correct answer from the options above.",
    "Answer with the option letter from the given choices directly.",
    "USER: <image> ASSISTANT: The answer is A.",
    "Hint: look at the picture. Question: what is it? Answer: B, C or D.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
]
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
HIDDEN = 32
IMAGE_SIZE = 32
PATCH = 8


def _vision_config_dict() -> dict[str, Any]:
    return dict(
        model_type="clip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=HIDDEN,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def _text_config_dict(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
    )


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TOKENIZER_SENTENCES, trainer=trainer)
    return tok


def _deterministic_state_dict(vision_cfg: dict[str, Any], text_cfg: dict[str, Any]):
    """Weights in Llava checkpoint naming, filled from one seeded generator in sorted order."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    vcfg = {k: v for k, v in vision_cfg.items() if k != "model_type"}
    tcfg = {k: v for k, v in text_cfg.items() if k != "model_type"}
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, module in (
        ("vision_tower.", CLIPVisionModel(CLIPVisionConfig(**vcfg))),
        ("language_model.", LlamaForCausalLM(LlamaConfig(**tcfg))),
    ):
        for n, p in module.named_parameters():
            shapes[prefix + n] = tuple(p.shape)
    shapes["multi_modal_projector.linear_1.weight"] = (HIDDEN, HIDDEN)
    shapes["multi_modal_projector.linear_1.bias"] = (HIDDEN,)
    shapes["multi_modal_projector.linear_2.weight"] = (HIDDEN, HIDDEN)
    shapes["multi_modal_projector.linear_2.bias"] = (HIDDEN,)

    gen = torch.Generator().manual_seed(DEMO_MODEL_SEED)
    state = {}
    for name in sorted(shapes):
        shape = shapes[name]
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "norm" in name or "layrnorm" in name
        if leaf == "bias":
            t = torch.zeros(shape)
        elif is_norm and len(shape) == 1:
            t = torch.ones(shape)
        else:
            # std 0.2 (not 0.02): a larger spread makes the greedy choice stable against
            # tiny numeric differences between CPU kernels / library versions.
            t = torch.randn(shape, generator=gen) * 0.2
        state[name] = t.contiguous()
    return state


def _write_demo_model(target: str) -> None:
    from safetensors.torch import save_file

    tok = _train_tokenizer()
    vocab = tok.get_vocab()
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    vision_cfg = _vision_config_dict()
    text_cfg = _text_config_dict(tok.get_vocab_size(), ids)
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": ids["<image>"],
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": tok.get_vocab_size(),
        "pad_token_id": ids["<pad>"],
        "tie_word_embeddings": False,
        "vision_config": vision_cfg,
        "text_config": text_cfg,
        "torch_dtype": "float32",
    }
    preproc = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": IMAGE_SIZE},
        "do_center_crop": True,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
        "resample": 3,
    }
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 2048,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "additional_special_tokens": ["<image>"],
        "clean_up_tokenization_spaces": False,
    }
    special_map = {
        k: tok_cfg[k]
        for k in ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
    }
    dump = lambda obj: (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()  # noqa: E731
    files = {
        "config.json": dump(config),
        "preprocessor_config.json": dump(preproc),
        "tokenizer_config.json": dump(tok_cfg),
        "special_tokens_map.json": dump(special_map),
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
    }
    for fname, data in files.items():
        with open(os.path.join(target, fname), "wb") as fh:
            fh.write(data)
    save_file(
        _deterministic_state_dict(vision_cfg, text_cfg),
        os.path.join(target, "model.safetensors"),
        metadata={"format": "pt"},
    )
    for fname in os.listdir(target):
        os.chmod(os.path.join(target, fname), 0o644)
    os.chmod(target, 0o755)  # mkdtemp makes 0700; assets are shared between users/envs
    manifest = {f: sha256_file(os.path.join(target, f)) for f in sorted(os.listdir(target))}
    manifest["_recipe"] = DEMO_MODEL_DIRNAME
    with open(os.path.join(target, "MANIFEST.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)


def ensure_demo_model(assets_dir: str) -> str:
    """Return the checkpoint folder, creating it (atomically) on first use."""
    final = os.path.join(assets_dir, DEMO_MODEL_DIRNAME)
    if os.path.exists(os.path.join(final, "MANIFEST.json")):
        return final
    os.makedirs(assets_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{DEMO_MODEL_DIRNAME}-", dir=assets_dir)
    try:
        _write_demo_model(tmp)
        try:
            os.rename(tmp, final)  # atomic; fails if ``final`` exists and is not empty
        except OSError:
            if not os.path.exists(os.path.join(final, "MANIFEST.json")):
                raise
            # another process won the race: use its copy
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------
# Demo model: loading and generation
# ----------------------------------------------------------------------------------------


def _load_tiny_llava(path: str, device: str):
    """Load the checkpoint; returns (vision_tower, projector, language_model, config dict).

    Prefer transformers' own ``LlavaForConditionalGeneration`` (4.36+) when it has the classic
    layout (.vision_tower / .multi_modal_projector / .language_model with generate()).  Older
    transformers (e.g. 4.33) lack it, and newer ones restructured it; then the same weights are
    loaded into a CLIPVisionModel + projector + LlamaForCausalLM composite.  Generation goes
    through the three parts in both cases, so the outputs are the same.
    """
    import torch
    import transformers

    with open(os.path.join(path, "config.json")) as fh:
        cfg = json.load(fh)
    llava_cls = getattr(transformers, "LlavaForConditionalGeneration", None)
    if llava_cls is not None:
        model = llava_cls.from_pretrained(path, torch_dtype=torch.float32)
        lm = getattr(model, "language_model", None)
        if (
            hasattr(model, "vision_tower")
            and hasattr(model, "multi_modal_projector")
            and lm is not None
            and hasattr(lm, "generate")
        ):
            model.to(device).eval()
            return (
                model.vision_tower,
                model.multi_modal_projector,
                lm,
                cfg,
                "LlavaForConditionalGeneration",
            )
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    state = load_file(os.path.join(path, "model.safetensors"))
    vcfg = {k: v for k, v in cfg["vision_config"].items() if k != "model_type"}
    tcfg = {k: v for k, v in cfg["text_config"].items() if k != "model_type"}
    vision = CLIPVisionModel(CLIPVisionConfig(**vcfg))
    lm = LlamaForCausalLM(LlamaConfig(**tcfg))
    proj = torch.nn.Sequential()
    proj.add_module("linear_1", torch.nn.Linear(HIDDEN, HIDDEN))
    proj.add_module("act", torch.nn.GELU())
    proj.add_module("linear_2", torch.nn.Linear(HIDDEN, HIDDEN))
    for prefix, module in (
        ("vision_tower.", vision),
        ("language_model.", lm),
        ("multi_modal_projector.", proj),
    ):
        sub = _fit_keys({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, module)
        missing, unexpected = module.load_state_dict(sub, strict=False)
        # only non-persistent buffers (position ids, rotary caches) may be missing
        bad = [m for m in missing if not ("position_ids" in m or "inv_freq" in m)]
        if bad or unexpected:
            raise RuntimeError(f"demo checkpoint mismatch: missing={bad} unexpected={unexpected}")
    for m in (vision, proj, lm):
        m.to(device).eval()
    return vision, proj, lm, cfg, "composite(CLIPVisionModel+LlamaForCausalLM)"


def _fit_keys(state: dict[str, Any], module: Any) -> dict[str, Any]:
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


def _base_model_class():
    from vlmeval.vlm.base import BaseModel

    return BaseModel


def _make_demo_class():
    BaseModel = _base_model_class()

    class DemoTinyLlava(BaseModel):
        """VLMEvalKit wrapper of the tiny random LLaVA (CPU or CUDA).

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
            for var in leak_env or []:
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
            visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
            if len(visible) < oom_below_gpus:
                raise RuntimeError(
                    f"CUDA out of memory (oom_below_gpus test hook: {len(visible)} GPU(s) visible)"
                )
            if fail_load:
                raise RuntimeError("demo-tiny-llava: fail_load test hook is set")
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
            (self.vision, self.projector, self.lm, self.cfg, self.backend) = _load_tiny_llava(
                model_path, self.device
            )
            self.image_token_id = int(self.cfg["image_token_index"])
            self.max_new_tokens = int(max_new_tokens)
            self.fail_on = set(fail_on or [])
            self.sleep = float(sleep or 0.0)
            self.fixed_answer = fixed_answer
            self.max_prompt_tokens = 1024
            self.kwargs = kwargs

        def _image_features(self, image_path: str):
            import torch
            from PIL import Image

            image = Image.open(image_path).convert("RGB")
            pixel = self.image_processor(images=image, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                out = self.vision(pixel.to(self.device), output_hidden_states=True)
                feats = out.hidden_states[int(self.cfg.get("vision_feature_layer", -2))]
                if self.cfg.get("vision_feature_select_strategy", "default") == "default":
                    feats = feats[:, 1:]  # drop CLS, as LLaVA does
                return self.projector(feats)[0]  # (n_patches, hidden)

        def generate_inner(self, message, dataset=None):
            import torch

            if dataset in self.fail_on:
                raise RuntimeError(f"demo-tiny-llava: fail_on test hook for dataset {dataset}")
            if self.sleep > 0:
                time.sleep(self.sleep)
            if self.fixed_answer is not None:
                return str(self.fixed_answer)
            texts = [m["value"] for m in message if m["type"] == "text"]
            images = [m["value"] for m in message if m["type"] == "image"]
            prompt = "\n".join(texts)
            prefix = "USER: <image>\n" if images else "USER: "
            ids = self.tokenizer(prefix + prompt + "\nASSISTANT:", add_special_tokens=False)[
                "input_ids"
            ]
            ids = [self.tokenizer.bos_token_id] + ids[-self.max_prompt_tokens :]
            ids_t = torch.tensor(ids, device=self.device)
            with torch.no_grad():
                emb = self.lm.get_input_embeddings()(ids_t)
                if images:
                    # LLaVA-style merge: the <image> token is replaced by the patch features
                    pos = (ids_t == self.image_token_id).nonzero()
                    if len(pos):
                        p = int(pos[0, 0])
                        feats = self._image_features(images[0]).to(emb.dtype)
                        emb = torch.cat([emb[:p], feats, emb[p + 1 :]], dim=0)
                emb = emb.unsqueeze(0)
                mask = torch.ones(emb.shape[:2], dtype=torch.long, device=self.device)
                out = self.lm.generate(
                    inputs_embeds=emb,
                    attention_mask=mask,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            # decoder-only generate() with inputs_embeds returns only the new tokens
            text = self.tokenizer.decode(out[0], skip_special_tokens=True)
            # random weights emit arbitrary bytes; control characters would make openpyxl
            # refuse to write the .xlsx prediction file, so keep printable text only
            return "".join(c for c in text if c.isprintable() and c != "\ufffd").strip()

    return DemoTinyLlava


_MODEL_FACTORIES: dict[str, Callable[[], type]] = {
    DEMO_MODEL_NAME: _make_demo_class,
}
_CLASS_CACHE: dict[str, type] = {}


def builtin_model_names() -> list[str]:
    return sorted(_MODEL_FACTORIES)


def builtin_model_class(name: str) -> type:
    """The BaseModel subclass of a built-in model (built lazily: needs vlmeval imported)."""
    if name not in _MODEL_FACTORIES:
        raise KeyError(f"unknown built-in model {name!r}; known: {builtin_model_names()}")
    if name not in _CLASS_CACHE:
        _CLASS_CACHE[name] = _MODEL_FACTORIES[name]()
    return _CLASS_CACHE[name]
