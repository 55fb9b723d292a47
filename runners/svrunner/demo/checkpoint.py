"""The trained demo checkpoint on disk: trained once per recipe and env, under a lock.

It goes to ``<assets_dir>/demo-tiny-llava-<recipe digest>/``, saved with ``save_pretrained`` (or,
without the classic Llava class, as safetensors under LLaVA's parameter names). The digest covers
the bytes of every module that decides the checkpoint (scenes, datasets, prompts, architecture,
training, and this one) and the torch / transformers / tokenizers versions, so a changed recipe
or another env trains its own checkpoint instead of reusing a stale one. The checkpoint is built
in a temporary folder and renamed into place under a lock file, so concurrent first uses train
once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

from ..files import sha256_file
from ..heartbeat import counted_phase
from ..locking import FileLock
from . import architecture, datasets, png, prompts, scenes, training

DEMO_MODEL_NAME = "demo-tiny-llava"
RECIPE_MODULES = (scenes, png, datasets, prompts, architecture, training)  # and this module


def recipe_digest() -> str:
    """What decides the checkpoint: the recipe's modules (data, prompts, model, training, how it
    is saved) and the versions of the libraries that run the training."""
    import tokenizers
    import torch
    import transformers

    h = hashlib.sha256()
    for path in [m.__file__ for m in RECIPE_MODULES] + [__file__]:
        with open(path, "rb") as fh:
            h.update(f"\0{os.path.basename(path)}\0".encode() + fh.read())
    for mod in (torch, transformers, tokenizers):
        h.update(f"\0{mod.__name__}={mod.__version__}".encode())
    return h.hexdigest()[:16]


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _write_tokenizer_files(target: str, tok: Any) -> None:
    special_map = {
        k: architecture.TOKENIZER_CONFIG[k]
        for k in ("bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens")
    }
    files = {
        "preprocessor_config.json": _json_bytes(architecture.PREPROCESSOR),
        "tokenizer_config.json": _json_bytes(architecture.TOKENIZER_CONFIG),
        "special_tokens_map.json": _json_bytes(special_map),
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
    }
    for fname, data in files.items():
        with open(os.path.join(target, fname), "wb") as fh:
            fh.write(data)


def _trained(config: dict[str, Any], target: str) -> tuple[Any, tuple[Any, Any, Any], dict[str, Any]]:
    """(the classic Llava model or None, its three parts, training statistics)."""
    import torch
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    image_processor = CLIPImageProcessor.from_pretrained(target)
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        # the runner may build models under no_grad / inference_mode; training needs autograd
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            torch.manual_seed(training.DEMO_MODEL_SEED)
            model = architecture.classic_llava(config)
            if model is not None:
                parts = (model.vision_tower, model.multi_modal_projector, model.language_model)
            else:
                parts = architecture.composite(config)
            # A first use trains for a minute inside the worker's model phase: its steps go
            # to the live view through the worker's heartbeat (none outside a worker).
            with counted_phase("train", "training the demo model: step {done} of {total}",
                               training.TRAIN_STEPS) as step:  # fmt: skip
                stats = training.train(*parts, config, tokenizer, image_processor, on_step=step)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return model, parts, stats


def _save(target: str, model: Any, parts: tuple[Any, Any, Any], config: dict[str, Any]) -> None:
    if model is not None:
        model.save_pretrained(target, safe_serialization=True)
        return
    from safetensors.torch import save_file

    state = {}
    for prefix, module in zip(("vision_tower.", "multi_modal_projector.", "language_model."), parts, strict=False):
        state.update({prefix + k: v.contiguous() for k, v in module.state_dict().items()})
    save_file(state, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(target, "config.json"), "wb") as fh:
        fh.write(_json_bytes(config))


def _write_demo_model(target: str) -> None:
    tok = architecture.make_tokenizer()
    vocab = tok.get_vocab()
    config = architecture.config(tok.get_vocab_size(), {t: vocab[t] for t in architecture.SPECIAL_TOKENS})
    _write_tokenizer_files(target, tok)
    model, parts, stats = _trained(config, target)
    _save(target, model, parts, config)
    with open(os.path.join(target, "training.json"), "wb") as fh:
        fh.write(_json_bytes(stats))
    for fname in os.listdir(target):
        os.chmod(os.path.join(target, fname), 0o644)
    os.chmod(target, 0o755)  # mkdtemp makes 0700; assets are shared between users/envs
    manifest = {f: sha256_file(os.path.join(target, f)) for f in sorted(os.listdir(target))}
    manifest["_recipe"] = os.path.basename(target)
    with open(os.path.join(target, "MANIFEST.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)


def ensure_demo_model(assets_dir: str) -> str:
    """Return the checkpoint folder, training it (once, under a lock) on first use."""
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
