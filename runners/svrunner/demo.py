"""Built-in demo model and demo datasets for the spectravenv VLMEvalKit runner.

This module runs INSIDE a per-transformers-version environment, as part of the runner
package.  It may import only the standard library and the packages of that environment
(torch, transformers, tokenizers, safetensors, vlmeval); never spectravenv.  The dataset
half (``builtin_dataset_bytes`` and below it) is standard library only: the host imports it.

What it provides (docs/demo.md has the measurements)
- ``DemoMCQ`` (what colour is the shape in the <corner> corner?) and ``DemoShapes`` (which
  shape is in the <corner> corner?): synthetic multiple-choice TSVs in VLMEvalKit's format,
  24 rows each.  Every image holds four shapes, one per quadrant, with four different
  colours (DemoMCQ) or four different shapes (DemoShapes), so the answer depends on the image
  AND on the question.  Answers and asked corners are balanced (6 rows per letter), so a
  model without the image or without the question scores 25 on average.  Written to
  ``<LMUData>/<name>.tsv`` they are picked up by VLMEvalKit's own custom-MCQ path
  (``build_dataset`` of an unknown name -> ``CustomMCQDataset``): no md5 check, no download.
- Controls, same rows with one part of the input destroyed: ``<Dataset>_Blank`` (every image
  replaced by the empty background), ``<Dataset>_Shuffled`` (images permuted across rows: a
  fixed rotation, so no row keeps its own image), ``<Dataset>_NoQuestion`` (the question
  replaced by one that does not say which corner).  They are not in the shipped catalog;
  declare one in a spectravenv.toml as ``[benchmarks.DemoMCQ_Blank]`` with
  ``builtin = "DemoMCQ_Blank"`` (see docs/demo.md).
- ``demo-tiny-llava``: a tiny LLaVA (CLIP vision tower, projector, Llama; hidden size 64, a
  line-level tokenizer) TRAINED on CPU at first use, on scenes drawn like the datasets' but
  never one of their rows, with prompts built exactly as VLMEvalKit's MCQ ``build_prompt``
  and this wrapper build them.  It is trained as transformers' own
  ``LlavaForConditionalGeneration`` where the release has the classic layout (checked:
  4.37, 4.45), with plain torch autograd and Adam, and saved with ``save_pretrained`` under
  ``<assets_dir>/demo-tiny-llava-<recipe digest>/``; elsewhere (5.x) as the same three parts
  under LLaVA's parameter names.  The digest covers this file's bytes
  and the torch / transformers / tokenizers versions, so a changed recipe or another env
  trains its own checkpoint instead of reusing a stale one.

Determinism: training runs single-threaded with ``torch.use_deterministic_algorithms``, from
seeded generators only (the global torch RNG is forked and restored), so one env trains the
same checkpoint every time and predicts the same bytes run to run.  Images are rasterised
and PNG-encoded with the standard library only (no dependence on the Pillow version).  The
checkpoint is built in a temporary folder and renamed into place under a lock file, so
concurrent first uses train once.
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
DEMO_DATA_SEED = 20261127  # the datasets' rows
DEMO_TRAIN_SEED = 4242  # the training scenes (another stream; dataset rows are excluded)
DEMO_MODEL_SEED = 1234  # initial weights and batch order

# ----------------------------------------------------------------------------------------
# Demo datasets: stdlib-only raster + PNG so the bytes do not depend on the Pillow version
# ----------------------------------------------------------------------------------------

IMG_SIZE = 64
BACKGROUND = (250, 250, 250)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (130, 40, 170),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "diamond")
CORNERS = ("top left", "top right", "bottom left", "bottom right")  # quadrant 0..3
OPTION_LETTERS = "ABCD"


class _Kind:
    """One demo dataset: what is asked, its fixed option list, and the nuisance attribute."""

    def __init__(self, name: str, question: str, generic: str, options: tuple[str, ...],
                 nuisance: tuple[str, ...], category: dict[str, str]) -> None:  # fmt: skip
        self.name, self.question, self.generic = name, question, generic
        self.options, self.nuisance, self.category = options, nuisance, category


KINDS: dict[str, _Kind] = {
    "DemoMCQ": _Kind(
        "DemoMCQ",
        "What colour is the shape in the {corner} corner?",
        "What colour is the shape?",
        ("red", "green", "blue", "yellow"),
        SHAPES,
        {"red": "warm", "yellow": "warm", "green": "cool", "blue": "cool"},
    ),
    "DemoShapes": _Kind(
        "DemoShapes",
        "Which shape is in the {corner} corner?",
        "Which shape is it?",
        SHAPES,
        tuple(COLOURS),
        # uneven category sizes on purpose: exercises the stratified limit
        {"circle": "curved", "square": "quadrilateral", "diamond": "quadrilateral",
         "triangle": "triangle"},
    ),
}


def _inside(shape: str, x: float, y: float, cx: float, cy: float, r: float) -> bool:
    """Point-in-shape test in pixel coordinates (pixel centres)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return abs(dx) <= r * 0.8 and abs(dy) <= r * 0.8
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r
    if shape == "triangle":  # apex up, base at cy + r/2
        if dy < -r or dy > r * 0.5:
            return False
        return abs(dx) <= (dy + r) / 1.5 * 0.87  # widens linearly from apex to base
    raise ValueError(shape)


_MASKS: dict[tuple[str, int], list[int]] = {}


def _mask(shape: str, quadrant: int) -> list[int]:
    """Flat pixel indices of ``shape`` drawn in ``quadrant`` (fixed centre and size)."""
    key = (shape, quadrant)
    if key not in _MASKS:
        half = IMG_SIZE // 2
        cx, cy = half / 2 + half * (quadrant % 2), half / 2 + half * (quadrant // 2)
        _MASKS[key] = [
            py * IMG_SIZE + px
            for py in range(IMG_SIZE)
            for px in range(IMG_SIZE)
            if _inside(shape, px + 0.5, py + 0.5, cx, cy, half * 0.36)
        ]
    return _MASKS[key]


Scene = tuple[tuple[str, str], ...]  # per quadrant: (shape, colour name); () = blank


def render_scene_rgb(scene: Scene) -> bytes:
    """Row-major RGB8 pixels of a scene (what the PNG holds, and what training sees)."""
    pixels = bytearray(bytes(BACKGROUND) * (IMG_SIZE * IMG_SIZE))
    for quadrant, (shape, colour) in enumerate(scene):
        rgb = bytes(COLOURS[colour])
        for i in _mask(shape, quadrant):
            pixels[3 * i : 3 * i + 3] = rgb
    return bytes(pixels)


def _png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """Minimal RGB8 PNG encoder (filter 0 on each row, zlib level 9)."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + tag
            + payload
            + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)
        )

    stride = 3 * width
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _draw_scene(kind: _Kind, rng: random.Random, corner: int, answer: int) -> Scene:
    """Four quadrants holding the four options in a random order, option ``answer`` at
    ``corner``; the other attribute (shape or colour) drawn at random."""
    rest = [i for i in range(len(kind.options)) if i != answer]
    rng.shuffle(rest)
    order = [*rest[:corner], answer, *rest[corner:]]
    asked = [kind.options[i] for i in order]
    other = [rng.choice(kind.nuisance) for _ in range(4)]
    if kind.name == "DemoMCQ":
        return tuple(zip(other, asked, strict=False))
    return tuple(zip(asked, other, strict=False))


def _dataset_items(kind: _Kind, n_rows: int = 24) -> list[tuple[Scene, int, int]]:
    """(scene, asked corner, answer index) per row: letters and corners 6 rows each."""
    rng = random.Random(f"{DEMO_DATA_SEED}:{kind.name}")
    answers = [i % 4 for i in range(n_rows)]
    corners = [i % 4 for i in range(n_rows)]
    rng.shuffle(answers)
    rng.shuffle(corners)
    return [(_draw_scene(kind, rng, c, a), c, a) for c, a in zip(corners, answers, strict=False)]


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


CONTROLS = ("Blank", "Shuffled", "NoQuestion")


def _mcq_rows(kind: _Kind, control: str | None = None) -> list[dict[str, Any]]:
    items = _dataset_items(kind)
    scenes = [scene for scene, _, _ in items]
    if control == "Blank":
        scenes = [() for _ in scenes]
    elif control == "Shuffled":
        # a rotation by a seeded offset: every row gets another row's image
        shift = random.Random(f"{DEMO_DATA_SEED}:{kind.name}:shuffle").randrange(1, len(scenes))
        scenes = scenes[shift:] + scenes[:shift]
    rows = []
    for i, ((_, corner, answer), scene) in enumerate(zip(items, scenes, strict=False)):
        question = kind.question.format(corner=CORNERS[corner])
        if control == "NoQuestion":
            question = kind.generic
        row = dict(index=i, image=_b64(_png_bytes(IMG_SIZE, IMG_SIZE, render_scene_rgb(scene))),
                   question=question)  # fmt: skip
        row.update(zip(OPTION_LETTERS, kind.options, strict=False))
        row.update(answer=OPTION_LETTERS[answer], category=kind.category[kind.options[answer]])
        rows.append(row)
    return rows


def _tsv_bytes(rows: list[dict[str, Any]]) -> bytes:
    cols = ["index", "image", "question", "A", "B", "C", "D", "answer", "category"]
    lines = ["\t".join(cols)]
    for row in rows:
        lines.append("\t".join(str(row[c]) for c in cols))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _dataset_factory(kind: _Kind, control: str | None) -> Callable[[], bytes]:
    return lambda: _tsv_bytes(_mcq_rows(kind, control))


BUILTIN_DATASETS: dict[str, Callable[[], bytes]] = {
    **{name: _dataset_factory(kind, None) for name, kind in KINDS.items()},
    **{f"{name}_{c}": _dataset_factory(kind, c) for name, kind in KINDS.items() for c in CONTROLS},
}


def builtin_dataset_bytes(builtin: str) -> bytes:
    if builtin not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {builtin!r}; known: {sorted(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[builtin]()


# sha256 of the built-in TSVs of earlier releases (the untrained demo's one-shape images)
SUPERSEDED_SHA256: dict[str, tuple[str, ...]] = {
    "DemoMCQ": ("bf83d0209fe202d40ce9aeb0d7921b72946ad63ce870693fda42502b72676e3c",),
    "DemoShapes": ("4a466a4d01f142c29f1449e5a3eb80a3e5243519a7c09dfa7fa293116557b108",),
}


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
        if hashlib.sha256(have).hexdigest() in SUPERSEDED_SHA256.get(builtin, ()):
            # an earlier release's built-in file: ours to replace, with the images VLMEvalKit
            # decoded from it (it reuses LMUData/images/<name>/<index>.png when present)
            shutil.rmtree(os.path.join(data_root, "images", name), ignore_errors=True)
            write_atomic(path, want)
            return path
        if have != want:
            raise RuntimeError(
                f"{path} exists but differs from built-in dataset {builtin!r} "
                f"(sha256 {hashlib.sha256(have).hexdigest()[:12]} != {hashlib.sha256(want).hexdigest()[:12]}); "
                "remove it or use another benchmark name"
            )
        return path
    write_atomic(path, want)
    return path


def mcq_prompt(question: str, options: tuple[str, ...]) -> str:
    """VLMEvalKit's ImageMCQDataset.build_prompt text for a row without a hint."""
    prompt = f"Question: {question}\nOptions:\n"
    prompt += "".join(f"{letter}. {item}\n" for letter, item in zip(OPTION_LETTERS, options, strict=False))
    return prompt + "Please select the correct answer from the options above. \n"


def wrapper_text(prompt: str, has_image: bool) -> str:
    """The text the wrapper tokenises around VLMEvalKit's prompt (training uses it too)."""
    return ("USER: <image>\n" if has_image else "USER:\n") + prompt + "\nASSISTANT:"


# ----------------------------------------------------------------------------------------
# Demo model: training and writing the checkpoint
# ----------------------------------------------------------------------------------------

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
HIDDEN = 64
IMAGE_SIZE = 32
PATCH = 16  # one patch per quadrant
TRAIN_SCENES = 512  # per dataset
TRAIN_STEPS = 500
SCENES_PER_STEP = 4  # per dataset, each asked about its four corners
LEARNING_RATE = 2e-3
AUX_WEIGHT = 1.0
TEXT_LAYERS = 2
INIT_STD = 0.1


def _tokenizer_lines() -> list[str]:
    """The vocabulary: every line of every prompt the demo is trained on (plus the letters)."""
    lines = ["USER:", "ASSISTANT:", *OPTION_LETTERS, *COLOURS, *SHAPES]
    for kind in KINDS.values():
        for q in [kind.question.format(corner=c) for c in CORNERS] + [kind.generic]:
            for line in mcq_prompt(q, kind.options).splitlines():
                if line.strip() and line.strip() not in lines:
                    lines.append(line.strip())
    return lines


def _make_tokenizer():
    """A line-level tokenizer: one token per prompt line (question, option, instruction).

    With words as tokens, a prompt is ~45 tokens and the answer position has to find one
    word (the corner) among them; with lines it is 11, which the tiny model learns in a few
    hundred steps.  Unknown lines map to <unk>."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + _tokenizer_lines())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Strip()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s*\n\s*"), behavior="removed")
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def _config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=HIDDEN,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = dict(
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
        # transformers' default 0.02 suits wide models; at width 64 it leaves attention
        # uniform and the image features tiny, and training sat at chance for 300+ steps
        initializer_range=INIT_STD,
    )
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": ids["<image>"],
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": vocab_size,
        "pad_token_id": ids["<pad>"],
        "tie_word_embeddings": False,
        "vision_config": vision,
        "text_config": text,
        "torch_dtype": "float32",
    }


PREPROCESSOR = {
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
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_max_length": 2048,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "additional_special_tokens": ["<image>"],
    "clean_up_tokenization_spaces": False,
}


def _classic_llava(config: dict[str, Any]):
    """transformers' LlavaForConditionalGeneration when it has the classic layout
    (.vision_tower / .multi_modal_projector / .language_model with generate()), else None."""
    import transformers

    cls = getattr(transformers, "LlavaForConditionalGeneration", None)
    if cls is None:
        return None
    model = cls(transformers.LlavaConfig(**config))
    lm = getattr(model, "language_model", None)
    if hasattr(model, "vision_tower") and hasattr(model, "multi_modal_projector") and hasattr(lm, "generate"):
        return model
    return None


def _composite(config: dict[str, Any]):
    """The same three parts for releases without the classic Llava class."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    vcfg = {k: v for k, v in config["vision_config"].items() if k != "model_type"}
    tcfg = {k: v for k, v in config["text_config"].items() if k != "model_type"}
    proj = torch.nn.Sequential()
    proj.add_module("linear_1", torch.nn.Linear(vcfg["hidden_size"], tcfg["hidden_size"]))
    proj.add_module("act", torch.nn.GELU())
    proj.add_module("linear_2", torch.nn.Linear(tcfg["hidden_size"], tcfg["hidden_size"]))
    return CLIPVisionModel(CLIPVisionConfig(**vcfg)), proj, LlamaForCausalLM(LlamaConfig(**tcfg))


def image_features(vision: Any, projector: Any, pixel_values: Any, cfg: dict[str, Any]):
    """LLaVA's image features: a hidden layer of the vision tower, CLS dropped, projected."""
    out = vision(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[int(cfg.get("vision_feature_layer", -2))]
    if cfg.get("vision_feature_select_strategy", "default") == "default":
        feats = feats[:, 1:]
    return projector(feats)


def _training_batches(tokenizer: Any, image_processor: Any, image_pos: dict[str, int]):
    """Per dataset: pixel values of the training scenes, their per-corner answers, and the
    prompt ids for each corner."""
    import numpy as np
    import torch
    from PIL import Image

    data = {}
    for name, kind in KINDS.items():
        held_out = {scene for scene, _, _ in _dataset_items(kind)}
        rng = random.Random(f"{DEMO_TRAIN_SEED}:{name}")
        scenes: list[Scene] = []
        while len(scenes) < TRAIN_SCENES:
            scene = _draw_scene(kind, rng, rng.randrange(4), rng.randrange(4))
            if scene not in held_out:
                scenes.append(scene)
        images = [
            Image.fromarray(np.frombuffer(render_scene_rgb(s), np.uint8).reshape(IMG_SIZE, IMG_SIZE, 3))
            for s in scenes
        ]
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        idx = {v: i for i, v in enumerate(kind.options)}
        answers = torch.tensor(
            [[idx[s[q][0 if name == "DemoShapes" else 1]] for q in range(4)] for s in scenes]
        )
        # per quadrant: the token ids of its shape and colour words (auxiliary targets)
        words = torch.tensor(
            [[tokenizer.convert_tokens_to_ids(list(s[q])) for q in range(4)] for s in scenes]
        )
        prompts = []
        for corner in CORNERS:
            text = wrapper_text(mcq_prompt(kind.question.format(corner=corner), kind.options), True)
            ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
            prompts.append(ids)
        assert len({len(p) for p in prompts}) == 1, "prompts of one dataset must align"
        ids_t = torch.tensor(prompts)
        pos = (ids_t[0] == tokenizer.convert_tokens_to_ids("<image>")).nonzero()
        image_pos[name] = int(pos[0, 0])
        data[name] = (pixels, answers, ids_t, words)
    return data


def _train(vision: Any, projector: Any, lm: Any, cfg: dict[str, Any], tokenizer: Any,
           image_processor: Any) -> dict[str, Any]:  # fmt: skip
    """Teach the model to answer ``<letter></s>``; returns training statistics."""
    import torch

    started = time.time()
    image_pos: dict[str, int] = {}
    data = _training_batches(tokenizer, image_processor, image_pos)
    letters = torch.tensor([tokenizer.convert_tokens_to_ids(c) for c in OPTION_LETTERS])
    eos = int(tokenizer.eos_token_id)
    modules = (vision, projector, lm)
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(DEMO_MODEL_SEED)
    names = sorted(data)
    embed = lm.get_input_embeddings()
    for m in modules:
        m.train()
    stats: dict[str, Any] = {"loss": []}
    ce = torch.nn.functional.cross_entropy
    for step in range(TRAIN_STEPS):
        loss = torch.zeros(())
        correct = 0
        for name in names:
            pixels, answers, ids_t, words = data[name]
            # a few scenes, each asked about all four corners: the same image with different
            # answers is what makes the question matter early in training
            pick = torch.randint(0, pixels.shape[0], (SCENES_PER_STEP,), generator=gen)
            pick = pick.repeat_interleave(4)
            corner = torch.arange(4).repeat(SCENES_PER_STEP)
            target = letters[answers[pick, corner]]
            seq = torch.cat([ids_t[corner], target[:, None]], dim=1)
            emb = embed(seq)
            p = image_pos[name]
            feats = image_features(vision, projector, pixels[pick], cfg)
            emb = torch.cat([emb[:, :p], feats, emb[:, p + 1 :]], dim=1)
            logits = lm(inputs_embeds=emb).logits
            loss = loss + ce(logits[:, -2], target) + ce(logits[:, -1], torch.full_like(target, eos))
            # auxiliary target: each patch (one per quadrant) names what it shows, its shape
            # and its colour word, half the probability each.  Without it the answer
            # position sat at chance for ~400 steps before finding the patches.
            vocab_n = logits.shape[-1]
            aux = torch.nn.functional.one_hot(words[pick], vocab_n).float().mean(dim=2)
            n = aux.shape[1]
            loss = loss + AUX_WEIGHT * ce(logits[:, p : p + n].reshape(-1, vocab_n),
                                          aux.reshape(-1, vocab_n))  # fmt: skip
            correct += int((logits[:, -2].argmax(-1) == target).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == TRAIN_STEPS - 1:
            acc = correct / (4 * SCENES_PER_STEP * len(names))
            stats["loss"].append([step, round(float(loss), 4), round(acc, 3)])
            if os.environ.get("SVRUNNER_DEMO_TRAIN_LOG"):
                print(f"demo train step {step} loss {float(loss):.4f} acc {acc:.3f}",
                      file=sys.stderr, flush=True)  # fmt: skip
    for m in modules:
        m.eval()
    stats["seconds"] = round(time.time() - started, 2)
    return stats


def recipe_digest() -> str:
    """What decides the checkpoint: this file (data, recipe, training code) and the versions
    of the libraries that run the training."""
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256()
    with open(__file__, "rb") as fh:
        h.update(fh.read())
    for mod in (torch, transformers, tokenizers):
        h.update(f"\0{mod.__name__}={mod.__version__}".encode())
    return h.hexdigest()[:16]


def _write_demo_model(target: str) -> None:
    import torch
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    tok = _make_tokenizer()
    vocab = tok.get_vocab()
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    config = _config(tok.get_vocab_size(), ids)
    special_map = {
        k: TOKENIZER_CONFIG[k]
        for k in ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
    }
    dump = lambda obj: (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()  # noqa: E731
    files = {
        "preprocessor_config.json": dump(PREPROCESSOR),
        "tokenizer_config.json": dump(TOKENIZER_CONFIG),
        "special_tokens_map.json": dump(special_map),
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
    }
    for fname, data in files.items():
        with open(os.path.join(target, fname), "wb") as fh:
            fh.write(data)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    image_processor = CLIPImageProcessor.from_pretrained(target)

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        # the runner may build models under no_grad / inference_mode; training needs autograd
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(DEMO_MODEL_SEED)
            model = _classic_llava(config)
            if model is not None:
                parts = (model.vision_tower, model.multi_modal_projector, model.language_model)
            else:
                parts = _composite(config)
            stats = _train(*parts, config, tokenizer, image_processor)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    if model is not None:
        model.save_pretrained(target, safe_serialization=True)
    else:
        from safetensors.torch import save_file

        state = {}
        for prefix, module in zip(("vision_tower.", "multi_modal_projector.", "language_model."), parts, strict=False):
            state.update({prefix + k: v.contiguous() for k, v in module.state_dict().items()})
        save_file(state, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(target, "config.json"), "wb") as fh:
            fh.write(dump(config))
    with open(os.path.join(target, "training.json"), "wb") as fh:
        fh.write(dump(stats))
    for fname in os.listdir(target):
        os.chmod(os.path.join(target, fname), 0o644)
    os.chmod(target, 0o755)  # mkdtemp makes 0700; assets are shared between users/envs
    manifest = {f: sha256_file(os.path.join(target, f)) for f in sorted(os.listdir(target))}
    manifest["_recipe"] = os.path.basename(target)
    with open(os.path.join(target, "MANIFEST.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)


def ensure_demo_model(assets_dir: str) -> str:
    """Return the checkpoint folder, training it (once, under a lock) on first use."""
    from .locking import FileLock

    dirname = f"{DEMO_MODEL_NAME}-{recipe_digest()}"
    final = os.path.join(assets_dir, dirname)
    if os.path.exists(os.path.join(final, "MANIFEST.json")):
        return final
    os.makedirs(assets_dir, exist_ok=True)
    with FileLock(os.path.join(assets_dir, f".{dirname}.lock"), f"training {dirname}").hold(timeout=900):
        if os.path.exists(os.path.join(final, "MANIFEST.json")):
            return final  # trained by another process while this one waited
        tmp = tempfile.mkdtemp(prefix=f".tmp-{dirname}-", dir=assets_dir)
        try:
            _write_demo_model(tmp)
            if os.path.isdir(final):
                shutil.rmtree(final)  # a folder without MANIFEST.json: an interrupted copy
            os.rename(tmp, final)
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

    state = load_file(os.path.join(path, "model.safetensors"))
    vision, proj, lm = _composite(cfg)
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
                return image_features(self.vision, self.projector, pixel.to(self.device), self.cfg)[0]

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
            ids = self.tokenizer(wrapper_text(prompt, bool(images)), add_special_tokens=False)[
                "input_ids"
            ]
            ids = [self.tokenizer.bos_token_id, *ids[-self.max_prompt_tokens:]]
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
            # an untrained or unsure model may emit anything; control characters would make
            # openpyxl refuse to write the .xlsx prediction file, so keep printable text only
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
