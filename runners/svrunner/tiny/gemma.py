"""Gemma 3 (VLMEvalKit's Gemma3), Gemma 4 (Gemma4) and PaliGemma 1/2 (PaliGemma).

Gemma 3 and 4 go through the processor's own chat template (`apply_chat_template(tokenize=True)`),
which loads the images and expands `<start_of_image>` (Gemma 3) or the image token (Gemma 4) into
the soft-token run the projector yields; PaliGemma's processor prepends `<image>` x
image_seq_length and `<bos>` to the plain prompt. Every tokenizer is a byte-level BPE trained
locally with the families' special tokens; the named ones (image_token, boi_token, ...) are
given as extra special tokens, as the processors look them up by name.
"""

from __future__ import annotations

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
BASE = ["<pad>", "<eos>", "<bos>", "<unk>"]


def gemma_text(vocab: int, ids: dict[str, int], **extra: object) -> dict:
    return dict(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, max_position_embeddings=4096, pad_token_id=ids["<pad>"],
                eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"], **extra)  # fmt: skip


def siglip(image_size: int, patch_size: int) -> dict:
    return dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, image_size=image_size, patch_size=patch_size, vision_use_head=False)  # fmt: skip


def gemma_tokenizer(
    folder: str, special: list[str], named: dict[str, str], cls_name: str = "GemmaTokenizerFast"
):
    tok = train_bpe([*BASE, *special])
    ids = {t: tok.token_to_id(t) for t in [*BASE, *special]}
    fast = fast_tokenizer(tok, cls_name, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                          extra_special_tokens=named)  # fmt: skip
    save_tokenizer(fast, folder)
    return fast, ids


def save_generation_config(folder: str, ids: dict[str, int], stop: list[str]) -> None:
    from transformers import GenerationConfig

    GenerationConfig(bos_token_id=ids["<bos>"], pad_token_id=ids["<pad>"], eos_token_id=[ids[t] for t in stop],
                     do_sample=False).save_pretrained(folder)  # fmt: skip


# ------------------------------------------------------------------------------------------
# Gemma 3: SigLIP tower, average-pooled to mm_tokens_per_image soft tokens, Gemma 3 text.
# ------------------------------------------------------------------------------------------

# Gemma-style turns: the system text opens the first user turn, images are <start_of_image>
# (the processor expands each into <start_of_image> + soft tokens + <end_of_image>).
GEMMA_TURNS = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if message['content'] is string %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{% set ns.system = ns.system + part['text'] + '\n\n' %}{% endif %}{% endfor %}{% endif %}"
    "{% else %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' + ns.system }}"
    "{% set ns.system = '' %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ IMAGE }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

GEMMA3_SPECIAL = [
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA3_NAMED = {
    "image_token": "<image_soft_token>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
}


def make_gemma3(folder: str) -> None:
    import transformers

    seed(0)
    tokenizer, ids = gemma_tokenizer(folder, GEMMA3_SPECIAL, GEMMA3_NAMED)
    # 32 px images, 8 px patches: a 4x4 patch grid pooled to 2x2 = 4 soft tokens.
    text = gemma_text(len(tokenizer), ids, query_pre_attn_scalar=16, sliding_window=512, sliding_window_pattern=2,
                      rope_local_base_freq=10000.0, rope_theta=10000.0)  # fmt: skip
    config = transformers.Gemma3Config(text_config=text, vision_config=siglip(32, 8), mm_tokens_per_image=4,
                                       boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                                       image_token_index=ids["<image_soft_token>"])  # fmt: skip
    transformers.Gemma3ForConditionalGeneration(config).save_pretrained(folder)
    images = transformers.Gemma3ImageProcessor(
        size={"height": 32, "width": 32}, do_pan_and_scan=False
    )
    template = GEMMA_TURNS.replace("{{ IMAGE }}", "<start_of_image>")
    processor = transformers.Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=template,
                                             image_seq_length=4)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it
    write_chat_template(folder, template)
    save_generation_config(folder, ids, ["<eos>", "<end_of_turn>"])


# ------------------------------------------------------------------------------------------
# PaliGemma 1 (Gemma text) and 2 (Gemma 2 text): SigLIP tower, linear projector, the prompt
# prefixed by the processor (no chat template).
# ------------------------------------------------------------------------------------------


def make_paligemma(folder: str, gemma2: bool = False) -> None:
    import transformers

    seed(0)
    tokenizer, ids = gemma_tokenizer(folder, [], {})
    images = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    images.image_seq_length = 16  # 32 px / 8 px patches: 4x4, all kept
    # The processor adds <image> and the 1152 <locNNNN>/<segNNN> tokens to the tokenizer: the
    # model's vocabulary is counted after it.
    processor = transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    vocab = len(processor.tokenizer)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    if gemma2:
        text = gemma_text(
            vocab, ids, model_type="gemma2", query_pre_attn_scalar=16, sliding_window=512
        )
    else:
        text = gemma_text(vocab, ids, model_type="gemma")
    vision = siglip(32, 8)
    vision["projection_dim"] = HIDDEN
    config = transformers.PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                                          projection_dim=HIDDEN, hidden_size=HIDDEN, vocab_size=vocab,
                                          pad_token_id=ids["<pad>"])  # fmt: skip
    transformers.PaliGemmaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    save_generation_config(folder, ids, ["<eos>"])


def make_paligemma2(folder: str) -> None:
    make_paligemma(folder, gemma2=True)


# ------------------------------------------------------------------------------------------
# Gemma 4: its own vision encoder (patches pooled 3x3 into soft tokens), Gemma 4 text with
# per-layer inputs, sliding + full attention layers; the processor also holds an audio
# feature extractor and a video processor.
# ------------------------------------------------------------------------------------------

GEMMA4_SPECIAL = ["<start_of_turn>", "<end_of_turn>", "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>",
                  "<|audio|>", "<|video|>"]  # fmt: skip
GEMMA4_NAMED = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}  # fmt: skip


def make_gemma4(folder: str) -> None:
    import transformers

    seed(0)
    tokenizer, ids = gemma_tokenizer(
        folder, GEMMA4_SPECIAL, GEMMA4_NAMED, cls_name="PreTrainedTokenizerFast"
    )
    text = gemma_text(len(tokenizer), ids, layer_types=["sliding_attention", "full_attention"], sliding_window=512,
                      hidden_size_per_layer_input=8, vocab_size_per_layer_input=len(tokenizer), global_head_dim=16,
                      rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                       "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                                          "rope_theta": 10000.0}})  # fmt: skip
    vision = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, patch_size=16, pooling_kernel_size=3,
                  position_embedding_size=64)  # fmt: skip
    config = transformers.Gemma4Config(text_config=text, vision_config=vision, audio_config=None,
                                       boi_token_id=ids["<|image>"], eoi_token_id=ids["<image|>"],
                                       image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
                                       boa_token_id=ids["<|audio>"], eoa_token_index=ids["<audio|>"],
                                       audio_token_id=ids["<|audio|>"])  # fmt: skip
    transformers.Gemma4ForConditionalGeneration(config).save_pretrained(folder)
    # 70 soft tokens at most (the smallest budget the processor accepts): 630 patches of 16 px.
    images = transformers.Gemma4ImageProcessor(
        patch_size=16, max_soft_tokens=70, pooling_kernel_size=3
    )
    videos = transformers.Gemma4VideoProcessor(
        patch_size=16, max_soft_tokens=70, pooling_kernel_size=3
    )
    audio = transformers.Gemma4AudioFeatureExtractor()
    template = GEMMA_TURNS.replace("{{ IMAGE }}", "<|image|>")
    processor = transformers.Gemma4Processor(feature_extractor=audio, image_processor=images, tokenizer=tokenizer,
                                             video_processor=videos, chat_template=template, image_seq_length=70)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it
    write_chat_template(folder, template)
    save_generation_config(folder, ids, ["<eos>", "<end_of_turn>"])


RECIPES = [
    Recipe(
        name="gemma3",
        family="gemma_series",
        models=("Gemma3-4B", "Gemma3-12B", "Gemma3-27B"),
        make=make_gemma3,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.50",
        note="no pan-and-scan crops",
    ),
    Recipe(
        name="gemma4",
        family="gemma_series",
        models=("Gemma4-E2B-it", "Gemma4-E4B-it", "Gemma4-31B-it"),
        make=make_gemma4,
        kwargs={"max_new_tokens": 4},
        min_transformers="5",
        note="images only (no audio tower, no video); dense (the -A4B MoE name is not stood in for)",
    ),
    Recipe(
        name="paligemma",
        family="gemma_series",
        models=("paligemma-3b-mix-448",),
        make=make_paligemma,
        min_transformers="4.41",
        note="the wrapper fixes max_new_tokens=512 (nothing to lower)",
    ),
    Recipe(
        name="paligemma2",
        family="gemma_series",
        models=(
            "paligemma2-3b-mix-224",
            "paligemma2-3b-mix-448",
            "paligemma2-3b-pt-224",
            "paligemma2-3b-pt-448",
            "paligemma2-10b-mix-224",
            "paligemma2-10b-mix-448",
            "paligemma2-10b-pt-224",
            "paligemma2-10b-pt-448",
            "paligemma2-28b-mix-224",
            "paligemma2-28b-mix-448",
            "paligemma2-28b-pt-224",
            "paligemma2-28b-pt-448",
        ),
        make=make_paligemma2,
        min_transformers="4.47",
        note="the wrapper fixes max_new_tokens=512 (nothing to lower)",
    ),
]
