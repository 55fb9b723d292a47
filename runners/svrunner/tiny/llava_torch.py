"""LLaVA-1.5 through haotian-liu's `llava` package (PyPI llava-torch), VLMEvalKit's LLaVA.

The wrapper calls `llava.model.builder.load_pretrained_model(model_path, None, model_name)` with
`model_name` the folder's last component: it must contain "llava" (the LLaVA branch) and none of
"lora", "mpt", "mistral" (other branches); the recipe name sees to that. The builder loads a
LlavaLlamaForCausalLM whose config names its CLIP vision tower by `mm_vision_tower`, an absolute
path that must exist when the config is read: a tiny CLIPVisionModel and CLIPImageProcessor are
saved in a sub-folder of the checkpoint and the config names that sub-folder by its absolute
path (the selftest makes each checkpoint in its final folder). The tokenizer is a slow LlamaTokenizer (the builder asks for
use_fast=False) on a SentencePiece model trained here.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from . import Recipe
from .common import SENTENCES, seed

NAME = "llava-v1.5-tiny"  # the builder's model_name: "llava" in it, no "lora"/"mpt"/"mistral"
HIDDEN = 32
TOWER = "clip-vit-tiny"  # sub-folder of the checkpoint holding the vision tower


def llama_sentencepiece(folder: str) -> Any:
    """A slow LlamaTokenizer on a SentencePiece BPE model trained on common.SENTENCES: Llama's
    layout (<unk> 0, <s> 1, </s> 2, byte fallback), adding <s> in front as Llama's does."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES), model_writer=buf, model_type="bpe", vocab_size=400,
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    model_file = os.path.join(folder, "tokenizer.model")
    with open(model_file, "wb") as fh:
        fh.write(buf.getvalue())
    tokenizer = LlamaTokenizer(model_file, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token=None,
                               add_bos_token=True, add_eos_token=False, legacy=False)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_llava(folder: str) -> None:
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    seed(0)
    tower = os.path.join(folder, TOWER)
    vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=HIDDEN)  # fmt: skip
    CLIPVisionModel(vision).save_pretrained(tower)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tower)

    tokenizer = llama_sentencepiece(folder)
    config = LlavaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
        # As llava-v1.5's config.json: a 2-layer MLP projector on CLIP's penultimate layer's patches.
        mm_vision_tower=tower, mm_hidden_size=HIDDEN, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", mm_use_im_start_end=False, mm_use_im_patch_token=False,
        mm_patch_merge_type="flat", image_aspect_ratio="pad", tokenizer_model_max_length=2048,
        tokenizer_padding_side="right", use_mm_proj=True,
    )  # fmt: skip
    model = LlavaLlamaForCausalLM(config)  # the tower is built lazily (delay_load): not in the weights
    model.save_pretrained(folder)
    # The tower by its absolute path (the selftest makes the checkpoint in its final folder).
    path = os.path.join(folder, "config.json")
    with open(path) as fh:
        saved = json.load(fh)
    saved["mm_vision_tower"] = os.path.join(os.path.abspath(folder), TOWER)
    with open(path, "w") as fh:
        json.dump(saved, fh, indent=2)


RECIPES = [
    Recipe(
        name=NAME,
        family="llava_series",
        models=("llava_v1.5_7b", "llava_v1.5_13b", "llava_v1_7b", "sharegpt4v_7b", "sharegpt4v_13b"),
        make=make_llava,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.31",
        note="the 'pad' image path of LLaVA-1.5 (no anyres / LLaVA-1.6 through the llava package); "
        "a slow LlamaTokenizer on a locally trained SentencePiece model",
    ),
]
