"""LLaVA-Next through transformers (LlavaNextForConditionalGeneration), VLMEvalKit's LLaVA_Next."""

from __future__ import annotations

import inspect

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe

HIDDEN = 32
# USER/ASSISTANT turns with the images first, as llava-hf's vicuna checkpoints format them.
VICUNA = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def vision_config() -> dict:
    return dict(model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, image_size=32, patch_size=8, projection_dim=HIDDEN)  # fmt: skip


def text_config(vocab: int, ids: dict[str, int]) -> dict:
    return dict(model_type="llama", vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"])  # fmt: skip


def llama_tokenizer(folder: str) -> tuple[object, dict[str, int]]:
    tok = train_bpe(["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    ids = {t: tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<pad>", "<image>")}
    fast = fast_tokenizer(tok, "PreTrainedTokenizerFast", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                          pad_token="<pad>", additional_special_tokens=["<image>"])  # fmt: skip
    save_tokenizer(fast, folder)
    return fast, ids


def make_llava_next(folder: str) -> None:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    seed(0)
    tokenizer, ids = llama_tokenizer(folder)
    config = LlavaNextConfig(
        vision_config=vision_config(), text_config=text_config(len(tokenizer), ids),
        image_token_index=ids["<image>"], image_grid_pinpoints=[[32, 32], [64, 64]],
        vision_feature_select_strategy="default", vision_feature_layer=-2, pad_token_id=ids["<pad>"],
    )  # fmt: skip
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    images = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                     image_grid_pinpoints=[[32, 32], [64, 64]])  # fmt: skip
    extra = {}
    if "num_additional_image_tokens" in inspect.signature(LlavaNextProcessor.__init__).parameters:
        extra["num_additional_image_tokens"] = 1  # CLIP's CLS token, dropped by the "default" strategy
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", chat_template=VICUNA, **extra)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it


RECIPES = [
    Recipe(
        name="llava-next-vicuna",  # the wrapper picks its prompt template from "vicuna" in the path
        family="llava_series",
        models=("llava_next_vicuna_7b", "llava_next_vicuna_13b"),
        make=make_llava_next,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.39",
    ),
]
