"""Training the demo model on CPU: scenes drawn like the datasets' but never one of their rows,
prompts built exactly as VLMEvalKit's MCQ ``build_prompt`` and the wrapper build them, plain torch
autograd and Adam.

Determinism: the caller runs this single-threaded with ``torch.use_deterministic_algorithms``,
from seeded generators only, so one env trains the same checkpoint every time. The order of every
floating-point operation below is part of the recipe: regrouping a sum changes the weights.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from .architecture import image_features
from .prompts import mcq_prompt, wrapper_text
from .scenes import (
    CORNERS,
    IMG_SIZE,
    KINDS,
    OPTION_LETTERS,
    Kind,
    Scene,
    dataset_items,
    draw_scene,
    render_scene_rgb,
)

DEMO_TRAIN_SEED = 4242  # the training scenes (another stream; dataset rows are excluded)
DEMO_MODEL_SEED = 1234  # initial weights and batch order
TRAIN_SCENES = 512  # per dataset
TRAIN_STEPS = 500
SCENES_PER_STEP = 4  # per dataset, each asked about its four corners
LEARNING_RATE = 2e-3
AUX_WEIGHT = 1.0


def _training_scenes(name: str, kind: Kind) -> list[Scene]:
    held_out = {scene for scene, _, _ in dataset_items(kind)}
    rng = random.Random(f"{DEMO_TRAIN_SEED}:{name}")
    scenes: list[Scene] = []
    while len(scenes) < TRAIN_SCENES:
        scene = draw_scene(kind, rng, rng.randrange(4), rng.randrange(4))
        if scene not in held_out:
            scenes.append(scene)
    return scenes


def _corner_prompts(kind: Kind, tokenizer: Any) -> list[list[int]]:
    """The prompt ids asking about each corner."""
    prompts = []
    for corner in CORNERS:
        text = wrapper_text(mcq_prompt(kind.question.format(corner=corner), kind.options), True)
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(ids)
    assert len({len(p) for p in prompts}) == 1, "prompts of one dataset must align"
    return prompts


def _dataset_batch(name: str, kind: Kind, tokenizer: Any, image_processor: Any) -> tuple[Any, ...]:
    """Pixel values of the training scenes, their per-corner answers, the prompt ids for each
    corner, and per quadrant the token ids of its shape and colour words (auxiliary targets)."""
    import numpy as np
    import torch
    from PIL import Image

    scenes = _training_scenes(name, kind)
    images = [
        Image.fromarray(np.frombuffer(render_scene_rgb(s), np.uint8).reshape(IMG_SIZE, IMG_SIZE, 3))
        for s in scenes
    ]
    pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
    idx = {v: i for i, v in enumerate(kind.options)}
    answers = torch.tensor([[idx[s[q][0 if name == "DemoShapes" else 1]] for q in range(4)] for s in scenes])
    words = torch.tensor([[tokenizer.convert_tokens_to_ids(list(s[q])) for q in range(4)] for s in scenes])
    return pixels, answers, torch.tensor(_corner_prompts(kind, tokenizer)), words


def training_batches(tokenizer: Any, image_processor: Any, image_pos: dict[str, int]) -> dict[str, tuple[Any, ...]]:
    """Per dataset: its batch (see _dataset_batch); `image_pos` gets where <image> stands."""
    data = {}
    for name, kind in KINDS.items():
        data[name] = _dataset_batch(name, kind, tokenizer, image_processor)
        pos = (data[name][2][0] == tokenizer.convert_tokens_to_ids("<image>")).nonzero()
        image_pos[name] = int(pos[0, 0])
    return data


def _add_dataset_loss(loss: Any, batch: tuple[Any, ...], p: int, parts: tuple[Any, Any, Any], cfg: dict[str, Any],
                      letters: Any, eos: int, gen: Any) -> tuple[Any, int]:  # fmt: skip
    """`loss` plus one dataset's terms (in the recipe's order), and how many answers were right."""
    import torch

    vision, projector, lm = parts
    ce = torch.nn.functional.cross_entropy
    pixels, answers, ids_t, words = batch
    # a few scenes, each asked about all four corners: the same image with different
    # answers is what makes the question matter early in training
    pick = torch.randint(0, pixels.shape[0], (SCENES_PER_STEP,), generator=gen)
    pick = pick.repeat_interleave(4)
    corner = torch.arange(4).repeat(SCENES_PER_STEP)
    target = letters[answers[pick, corner]]
    seq = torch.cat([ids_t[corner], target[:, None]], dim=1)
    emb = lm.get_input_embeddings()(seq)
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
    loss = loss + AUX_WEIGHT * ce(logits[:, p : p + n].reshape(-1, vocab_n), aux.reshape(-1, vocab_n))
    return loss, int((logits[:, -2].argmax(-1) == target).sum())


def train(vision: Any, projector: Any, lm: Any, cfg: dict[str, Any], tokenizer: Any,
          image_processor: Any, on_step: Callable[[int], Any] = lambda done: None) -> dict[str, Any]:  # fmt: skip
    """Teach the model to answer ``<letter></s>``; returns training statistics. `on_step` hears
    the number of steps done after each (the worker's heartbeat: the live view shows them)."""
    import torch

    started = time.time()
    image_pos: dict[str, int] = {}
    data = training_batches(tokenizer, image_processor, image_pos)
    letters = torch.tensor([tokenizer.convert_tokens_to_ids(c) for c in OPTION_LETTERS])
    modules = (vision, projector, lm)
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(DEMO_MODEL_SEED)
    for m in modules:
        m.train()
    stats: dict[str, Any] = {"loss": []}
    for step in range(TRAIN_STEPS):
        loss, correct = torch.zeros(()), 0
        for name in sorted(data):
            loss, right = _add_dataset_loss(loss, data[name], image_pos[name], modules, cfg, letters,
                                            int(tokenizer.eos_token_id), gen)  # fmt: skip
            correct += right
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == TRAIN_STEPS - 1:
            _record(stats, step, loss, correct / (4 * SCENES_PER_STEP * len(data)))
        on_step(step + 1)
    for m in modules:
        m.eval()
    stats["seconds"] = round(time.time() - started, 2)
    return stats


def _record(stats: dict[str, Any], step: int, loss: Any, acc: float) -> None:
    stats["loss"].append([step, round(float(loss), 4), round(acc, 3)])
    if os.environ.get("SVRUNNER_DEMO_TRAIN_LOG"):
        print(f"demo train step {step} loss {float(loss):.4f} acc {acc:.3f}", file=sys.stderr, flush=True)
