"""Families served by the newer envs through plain transformers classes (runs inside an env).

Kosmos-2, LFM2-VL, GLM-4.1V, Chameleon, Llama-4, Granite Vision and Falcon2-VLM: each a tiny
random checkpoint of its real transformers classes, a byte-level BPE tokenizer trained here with
the family's special tokens, and a chat template of our own that yields the markup the family's
processor expects.

Some wrappers hard-code their generation length (GLM-4.1V 8192 new tokens, Llama-4 8192,
Chameleon 2048): a random model seldom says end-of-sequence, so those checkpoints carry a
`generation_config.json` with `max_time` (see `cap_generation`), which generate() honours next to
the wrapper's max_new_tokens.
"""

from __future__ import annotations

import json
import os
from typing import Any

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
MAX_TIME = 3.0  # seconds of decoding per question where the wrapper asks for thousands of tokens


def small_text(**extra: Any) -> dict[str, Any]:
    """The shrunken sizes most decoder configs share."""
    return dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=2, **extra)  # fmt: skip


def cap_generation(model: Any, folder: str, **extra: Any) -> None:
    """Write the checkpoint's generation config with a decoding time limit (MaxTimeCriteria):
    the wrapper's own max_new_tokens still applies, and whichever comes first ends decoding."""
    from transformers import GenerationConfig

    cfg = GenerationConfig.from_model_config(model.config)
    cfg.max_time = MAX_TIME
    for key, value in extra.items():
        setattr(cfg, key, value)
    cfg.save_pretrained(folder)


def _tokenizer(special: list[str], cls_name: str = "PreTrainedTokenizerFast", **kwargs: Any) -> tuple[Any, dict[str, int]]:
    """common.train_bpe with the family's special tokens, as its fast tokenizer class; their ids."""
    tok = train_bpe(special)
    ids = {t: tok.token_to_id(t) for t in special}
    return fast_tokenizer(tok, cls_name, **kwargs), ids


def _patch_json(path: str, **updates: Any) -> None:
    with open(path) as fh:
        data = json.load(fh)
    data.update(updates)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)


# --------------------------------------------------------------------------------------------
# Kosmos-2 (Kosmos2ForConditionalGeneration, Kosmos2Processor), VLMEvalKit's Kosmos2


def make_kosmos2(folder: str) -> None:
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
    )

    seed(0)
    # XLM-R's layout: <s> 0, <pad> 1, </s> 2, <unk> 3; the processor adds Kosmos-2's tag and
    # 1024 patch-index tokens itself, and puts the 64 image places right after <unk>.
    tokenizer, ids = _tokenizer(["<s>", "<pad>", "</s>", "<unk>"], "XLMRobertaTokenizerFast", bos_token="<s>",
                                eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                sep_token="</s>", mask_token="<unk>")  # fmt: skip
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = Kosmos2Processor(images, tokenizer)  # adds the 1035 tokens to the tokenizer
    config = Kosmos2Config(
        text_config=dict(vocab_size=len(processor.tokenizer), embed_dim=HIDDEN, layers=2, ffn_dim=64,
                         attention_heads=2, max_position_embeddings=512, pad_token_id=ids["<pad>"],
                         bos_token_id=ids["<s>"], eos_token_id=ids["</s>"]),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        latent_query_num=64,  # the processor's num_image_tokens
    )  # fmt: skip
    Kosmos2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    save_tokenizer(processor.tokenizer, folder)



# --------------------------------------------------------------------------------------------
# LFM2-VL (Lfm2VlForConditionalGeneration: SigLIP2 NaFlex tower, LFM2 conv/attention decoder)

# Our own ChatML-style template: the processor expands each "<image>" into its tile markup.
LFM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LFM2_TILES = 4  # up to 4 tiles of 32 pixels and a thumbnail: DemoMCQ's 64-pixel images are split


def make_lfm2_vl(folder: str) -> None:
    from transformers import (
        Lfm2VlConfig,
        Lfm2VlForConditionalGeneration,
        Lfm2VlImageProcessorFast,
        Lfm2VlProcessor,
    )

    seed(0)
    tiles = [f"<|img_row_{r}_col_{c}|>" for r in range(1, LFM2_TILES + 1) for c in range(1, LFM2_TILES + 1)]
    special = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>",
               "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>", *tiles]  # fmt: skip
    tokenizer, ids = _tokenizer(special, bos_token="<|startoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>",
                                extra_special_tokens={"image_token": "<image>", "image_start_token": "<|image_start|>",
                                                      "image_end_token": "<|image_end|>",
                                                      "image_thumbnail": "<|img_thumbnail|>"})  # fmt: skip
    config = Lfm2VlConfig(
        vision_config=dict(model_type="siglip2_vision_model", hidden_size=HIDDEN, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, num_patches=64, patch_size=8,
                           vision_use_head=False),
        # One short-convolution block and one attention block: both LFM2 layer kinds.
        text_config=dict(model_type="lfm2", vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, block_multiple_of=16,
                         layer_types=["conv", "full_attention"], max_position_embeddings=4096,
                         pad_token_id=ids["<|pad|>"], bos_token_id=ids["<|startoftext|>"], eos_token_id=ids["<|im_end|>"]),
        image_token_id=ids["<image>"], projector_hidden_size=64, downsample_factor=2,
    )  # fmt: skip
    model = Lfm2VlForConditionalGeneration(config)
    model.save_pretrained(folder)
    # Lfm2VlConfig.model_type is "lfm2-vl" in transformers 4.57 but its Auto classes know only
    # "lfm2_vl": saved as is, the config would not load through AutoModelForImageTextToText.
    _patch_json(os.path.join(folder, "config.json"), model_type="lfm2_vl")
    images = Lfm2VlImageProcessorFast(encoder_patch_size=8, tile_size=32, downsample_factor=2, min_image_tokens=2,
                                      max_image_tokens=4, min_tiles=2, max_tiles=LFM2_TILES, use_thumbnail=True,
                                      do_image_splitting=True, max_pixels_tolerance=2.0)  # fmt: skip
    processor = Lfm2VlProcessor(images, tokenizer, chat_template=LFM2_TEMPLATE)
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, LFM2_TEMPLATE)



# --------------------------------------------------------------------------------------------
# GLM-4.1V (Glm4vForConditionalGeneration, Glm4vProcessor), VLMEvalKit's GLMThinking

# Our own GLM-style template: "[gMASK]<sop>", role tags, each image as begin/placeholder/end.
GLM_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
GLM_SPECIAL = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
               "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
               "<|end_of_video|>", "<|image|>", "<|video|>", "<think>", "</think>", "<answer>", "</answer>",
               "<|begin_of_box|>", "<|end_of_box|>"]  # fmt: skip


def make_glm4v(folder: str) -> None:
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessorFast,
        Glm4vProcessor,
        Glm4vVideoProcessor,
    )

    seed(0)
    tokenizer, ids = _tokenizer(GLM_SPECIAL, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    hidden = 2 * HIDDEN  # head_dim 32: a rotary half of 16 split 2/3/3 over (t, h, w) by M-RoPE
    config = Glm4vConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16384,
                         partial_rotary_factor=0.5, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]},
                         pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=HIDDEN, num_heads=2, image_size=64, patch_size=8, spatial_merge_size=2,
                           temporal_patch_size=2, out_hidden_size=hidden, intermediate_size=64),
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
    )  # fmt: skip
    model = Glm4vForConditionalGeneration(config)
    model.save_pretrained(folder)
    # GLM-4.1V stops at end-of-text or at the next turn's role tag.
    stops = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    cap_generation(model, folder, eos_token_id=stops, pad_token_id=ids["<|endoftext|>"])
    # 16-pixel units (8-pixel patches merged 2x2), 2 frames per image: 32x32 to 64x64 pixels.
    size = {"shortest_edge": 2 * 32 * 32, "longest_edge": 2 * 64 * 64}
    images = Glm4vImageProcessorFast(size=size, patch_size=8, temporal_patch_size=2, merge_size=2)
    videos = Glm4vVideoProcessor(size=size, max_image_size={"longest_edge": 2 * 64 * 64}, patch_size=8,
                                 temporal_patch_size=2, merge_size=2)  # fmt: skip
    processor = Glm4vProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                               chat_template=GLM_TEMPLATE)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, GLM_TEMPLATE)



# --------------------------------------------------------------------------------------------
# Chameleon (ChameleonForConditionalGeneration: a VQ-VAE turns the image into vocabulary tokens)

CHAMELEON_CODES = 32  # VQ-VAE codebook size; each code i is the token "IMGIMG<i in letters A-J>Z"
CHAMELEON_SEQ = 16  # tokens per image: 32 pixels, downsampled 8x by the encoder (4x4)


def _chameleon_code_token(i: int) -> str:
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(i)) + "Z"


def make_chameleon(folder: str) -> None:
    from transformers import (
        ChameleonConfig,
        ChameleonForConditionalGeneration,
        ChameleonImageProcessor,
        ChameleonProcessor,
    )

    seed(0)
    # Chameleon's layout: <s> 0, <pad> 1, </s> 2, then its reserved / image markers.
    special = ["<s>", "<pad>", "</s>", "<unk>", "<reserved08706>", "<image>", "<racm3:break>", "<eoss>"]
    codes = [_chameleon_code_token(i) for i in range(CHAMELEON_CODES)]
    tok = train_bpe([*special, *codes])
    tokenizer = fast_tokenizer(tok, "LlamaTokenizerFast", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                               unk_token="<unk>", sep_token="<reserved08706>")  # fmt: skip
    ids = {t: tok.token_to_id(t) for t in special}
    config = ChameleonConfig(
        vocab_size=len(tokenizer), max_position_embeddings=4096, bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"], vocabulary_map=tokenizer.get_vocab(), image_token_id=ids["<image>"],
        vq_config=dict(embed_dim=8, num_embeddings=CHAMELEON_CODES, latent_channels=8, resolution=32, base_channels=32,
                       channel_multiplier=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[4]),
        **small_text(),
    )  # fmt: skip
    model = ChameleonForConditionalGeneration(config)
    model.save_pretrained(folder)
    cap_generation(model, folder)  # the wrapper asks for 2048 new tokens
    images = ChameleonImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = ChameleonProcessor(images, tokenizer, image_seq_length=CHAMELEON_SEQ)
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)



# --------------------------------------------------------------------------------------------
# Llama-4 (Llama4ForConditionalGeneration: dense + MoE decoder layers, RoPE + NoPE, tiled images)

# Our own header-style template; the processor expands each "<|image|>" into its tiles' patches.
LLAMA4_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|header_start|>{{ message['role'] }}<|header_end|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>\n\n{% endif %}"
)
LLAMA4_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad|>", "<|header_start|>",
                  "<|header_end|>", "<|eom|>", "<|eot|>", "<|image_start|>", "<|image_end|>", "<|image|>",
                  "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>"]  # fmt: skip


def make_llama4(folder: str) -> None:
    from transformers import (
        Llama4Config,
        Llama4ForConditionalGeneration,
        Llama4ImageProcessorFast,
        Llama4Processor,
    )

    seed(0)
    tokenizer, ids = _tokenizer(LLAMA4_SPECIAL, bos_token="<|begin_of_text|>", eos_token="<|eot|>",
                                pad_token="<|finetune_right_pad|>")  # fmt: skip
    stops = [ids["<|end_of_text|>"], ids["<|eom|>"], ids["<|eot|>"]]
    config = Llama4Config(
        # 32-pixel tiles of 8-pixel patches (16 per tile), pixel-shuffled 2x2: 4 tokens per tile.
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, pixel_shuffle_ratio=0.5,
                           vision_output_dim=HIDDEN, projector_input_dim=HIDDEN, projector_output_dim=HIDDEN),
        # Four layers, as Llama-4 lays them out: dense and 2-expert MoE alternating; layers 1-3 with
        # RoPE and chunked attention, layer 4 global without RoPE (transformers 4.51 hard-codes every
        # 4th layer as NoPE in the attention and reads `no_rope_layers` in the cache: the default keeps
        # both in step). The real chunk size: a smaller one breaks 4.51's chunked-attention masks.
        text_config=dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                         intermediate_size_mlp=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, num_local_experts=2, num_experts_per_tok=1, interleave_moe_layer_step=2,
                         attention_chunk_size=8192, max_position_embeddings=16384,
                         bos_token_id=ids["<|begin_of_text|>"], eos_token_id=stops,
                         pad_token_id=ids["<|finetune_right_pad|>"]),
        boi_token_index=ids["<|image_start|>"], eoi_token_index=ids["<|image_end|>"],
        image_token_index=ids["<|patch|>"],
    )  # fmt: skip
    model = Llama4ForConditionalGeneration(config)
    model.save_pretrained(folder)
    cap_generation(model, folder, eos_token_id=stops, pad_token_id=ids["<|finetune_right_pad|>"])
    images = Llama4ImageProcessorFast(size={"height": 32, "width": 32}, max_patches=4)
    processor = Llama4Processor(image_processor=images, tokenizer=tokenizer, patch_size=8, pixel_shuffle_ratio=0.5,
                                chat_template=LLAMA4_TEMPLATE)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, LLAMA4_TEMPLATE)



# --------------------------------------------------------------------------------------------
# LLaVA-Next architectures: Granite Vision (SigLIP + Granite, several vision layers) and
# Falcon2-VLM (CLIP + Falcon), through LlavaNextForConditionalGeneration and LlavaNextProcessor

PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # anyres grids of 32-pixel tiles

# Our own Granite-style template: role tags on their own lines, images first in the user turn.
GRANITE_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _llava_next_processor(folder: str, tokenizer: Any, strategy: str, additional: int, template: str | None) -> None:
    import inspect

    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    images = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                     image_grid_pinpoints=PINPOINTS)  # fmt: skip
    extra: dict[str, Any] = {}
    if "num_additional_image_tokens" in inspect.signature(LlavaNextProcessor.__init__).parameters:
        extra["num_additional_image_tokens"] = additional
    if template:
        extra["chat_template"] = template
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy=strategy, **extra)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    if template:
        write_chat_template(folder, template)


def make_granite_vision(folder: str) -> None:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    seed(0)
    special = ["<|end_of_text|>", "<|system|>", "<|user|>", "<|assistant|>", "<image>"]
    tokenizer, ids = _tokenizer(special, bos_token="<|end_of_text|>", eos_token="<|end_of_text|>",
                                pad_token="<|end_of_text|>", additional_special_tokens=["<image>"])  # fmt: skip
    eot = ids["<|end_of_text|>"]
    config = LlavaNextConfig(
        # SigLIP has no CLS token: the "full" strategy keeps every patch.
        vision_config=dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        # Granite's scaled embeddings, residuals, attention and logits, as granite-3.x sets them.
        text_config=dict(model_type="granite", vocab_size=len(tokenizer), max_position_embeddings=4096,
                         embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.015625,
                         logits_scaling=8.0, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
                         tie_word_embeddings=True, **small_text()),
        vision_feature_layer=[-3, -2, -1],  # several tower layers, concatenated (granite-vision's -24/-20/-12/-1)
        vision_feature_select_strategy="full", image_token_index=ids["<image>"], image_grid_pinpoints=PINPOINTS,
        pad_token_id=eot, tie_word_embeddings=True,
    )  # fmt: skip
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    _llava_next_processor(folder, tokenizer, "full", 0, GRANITE_TEMPLATE)


def make_falcon2_vlm(folder: str) -> None:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    seed(0)
    special = ["<|endoftext|>", "<image>", "<pad>"]
    tokenizer, ids = _tokenizer(special, eos_token="<|endoftext|>", pad_token="<pad>",
                                additional_special_tokens=["<image>"])  # fmt: skip
    eot = ids["<|endoftext|>"]
    config = LlavaNextConfig(
        # A CLIP tower as llava_hf's (kept here: the checkpoint cache key hashes this module only).
        vision_config=dict(model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
                           projection_dim=HIDDEN),
        # Falcon-11B's decoder: the new architecture, grouped KV heads, parallel attention and MLP.
        text_config=dict(model_type="falcon", vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=2,
                         num_attention_heads=2, num_kv_heads=1, new_decoder_architecture=True, parallel_attn=True,
                         num_ln_in_parallel_attn=1, bias=False, alibi=False, ffn_hidden_size=64,
                         max_position_embeddings=4096, bos_token_id=eot, eos_token_id=eot, pad_token_id=ids["<pad>"]),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_token_index=ids["<image>"],
        image_grid_pinpoints=PINPOINTS, pad_token_id=ids["<pad>"],
    )  # fmt: skip
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    # The wrapper writes its own "User:<image>\n... Falcon:" prompt: no chat template.
    _llava_next_processor(folder, tokenizer, "default", 1, None)


RECIPES = [
    Recipe(
        name="kosmos-2",
        family="kosmos_series",
        models=("Kosmos2",),
        make=make_kosmos2,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.35",
    ),
    Recipe(
        name="lfm2-vl",
        family="lfm2vl_series",
        models=("LFM2-VL-450M", "LFM2-VL-1.6B", "LFM2-VL-3B", "LFM2.5-VL-1.6B"),
        make=make_lfm2_vl,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.57",
    ),
    Recipe(
        name="GLM-4.1V-tiny",  # the wrapper loads Glm4vForConditionalGeneration only with "GLM-4.1V" in the path
        family="cogvlm_series",
        models=("GLM4_1VThinking-9b",),
        make=make_glm4v,
        min_transformers="4.57",
        note="the wrapper hard-codes max_new_tokens=8192 and takes no generation keyword: the checkpoint's "
        "generation_config caps decoding time instead; it catches every error and answers 'Failed to obtain "
        "answer.', so read the answers (GLM-4.5V's MoE class is not covered)",
    ),
    Recipe(
        name="chameleon",
        family="chameleon_series",
        models=("chameleon_7b", "chameleon_30b"),
        make=make_chameleon,
        min_transformers="4.44",
        note="the wrapper hard-codes max_new_tokens=2048 and takes no generation keyword: the checkpoint's "
        "generation_config caps decoding time instead",
    ),
    Recipe(
        name="llama-4",
        family="llama_series",
        models=("Llama-4-Scout-17B-16E-Instruct",),
        make=make_llama4,
        min_transformers="4.51",
        note="the transformers path only (the catalog passes use_vllm=False); the wrapper hard-codes "
        "max_new_tokens=8192 there: the checkpoint's generation_config caps decoding time instead",
    ),
    Recipe(
        name="granite-vision",
        family="granite_vision_series",
        models=("granite_vision_3.2_2b", "granite_vision_3.1_2b_preview", "granite_vision_3.3_2b"),
        make=make_granite_vision,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.49",
    ),
    Recipe(
        name="falcon2-vlm",
        family="ungrouped",
        models=("Falcon2-VLM-11B",),
        make=make_falcon2_vlm,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.42",
    ),
]
