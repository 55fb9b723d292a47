"""Llama 3.2 Vision through transformers (MllamaForConditionalGeneration), VLMEvalKit's llama_vision."""

from __future__ import annotations

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
BOS, EOT, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
HEADER_START, HEADER_END, PYTHON, IMAGE = "<|start_header_id|>", "<|end_header_id|>", "<|python_tag|>", "<|image|>"

# Llama 3 turns, each part in its order (VLMEvalKit puts the image before the question), with
# the <|image|> the processor counts and the cross-attention masks follow; written for this recipe.
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|image|>' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def make_mllama(folder: str) -> None:
    from transformers import (
        GenerationConfig,
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
    )

    seed(0)
    # As in Llama 3.2 Vision, <|image|> comes right after the text vocabulary: it has an
    # embedding row (the text model keeps 8 beyond vocab_size) but no lm_head row.
    names = [BOS, EOS, EOT, PAD, HEADER_START, HEADER_END, PYTHON]
    tok = train_bpe(names, extra=["user assistant system"])
    text_vocab = tok.get_vocab_size()
    tok.add_special_tokens([IMAGE])
    ids = {t: tok.token_to_id(t) for t in [*names, IMAGE]}
    tokenizer = fast_tokenizer(tok, "PreTrainedTokenizerFast", bos_token=BOS, eos_token=EOT, pad_token=PAD,
                               additional_special_tokens=[HEADER_START, HEADER_END, PYTHON, IMAGE])  # fmt: skip
    tokenizer.chat_template = LLAMA3
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, LLAMA3)

    layers = [0, 1]  # the vision layers whose outputs join the last one: 3 x HIDDEN features
    config = MllamaConfig(
        image_token_index=ids[IMAGE],
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8, max_num_tiles=4,
                           intermediate_layers_indices=layers, vision_output_dim=HIDDEN * (len(layers) + 1)),
        text_config=dict(vocab_size=text_vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                         cross_attention_layers=[1], num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=1024),
                         bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD]),
    )  # fmt: skip
    model = MllamaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=[ids[EOS], ids[EOT]],
                                               pad_token_id=ids[PAD])  # fmt: skip
    model.save_pretrained(folder)
    # Tiles of 32 px, up to 4 of them (the aspect ratios the vision config supports by default).
    images = MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=images, tokenizer=tokenizer)
    processor.chat_template = LLAMA3  # its __init__ takes the tokenizer's, then ProcessorMixin drops it
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it
    write_chat_template(folder, LLAMA3)


RECIPES = [
    Recipe(
        # "Instruct" in the path: the wrapper's sampling defaults for instruct checkpoints. No
        # "cot": that would make it generate 2048 tokens per question (LLaVA-CoT's budget).
        name="Llama-3.2-Vision-Instruct-tiny",
        family="llama_series",
        models=("Llama-3.2-11B-Vision-Instruct", "Llama-3.2-90B-Vision-Instruct", "LLaVA-CoT"),
        make=make_mllama,
        kwargs={"max_new_tokens": 4},  # the wrapper sets its own for MCQ (128): kept for other callers
        min_transformers="4.45",
        note="LLaVA-CoT's 2048-token budget (chosen from 'cot' in the path) is not exercised",
    ),
]
