"""Qwen2-VL, Qwen2.5-VL (VLMEvalKit's Qwen2VLChat), Qwen3-VL and Qwen3.5 (Qwen3VLChat).

Both wrappers pick the transformers class from the checkpoint (config.json's architectures, or
AutoModelForImageTextToText), resize the images with qwen_vl_utils, and let the processor expand
each `<|image_pad|>` into one token per merged patch. The tiny checkpoints keep the real patch
sizes (14 for Qwen2/2.5, 16 for Qwen3/3.5, 2x2 merge) so the resized images and the processor's
grids agree, and the wrappers' min/max pixels are lowered so an image is a handful of tokens.
A folder name must not contain "omni": both wrappers switch to the Omni classes on it.
"""

from __future__ import annotations

import json

from . import Recipe
from .common import CHATML, fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
HEADS = 2
# Tokens the Qwen processors and modelling code look up by name.
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]  # fmt: skip


def qwen_tokenizer(folder: str) -> tuple[object, dict[str, int]]:
    tok = train_bpe(SPECIAL)
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    fast = fast_tokenizer(tok, "Qwen2TokenizerFast", unk_token=None, bos_token=None, eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:])  # fmt: skip
    save_tokenizer(fast, folder)
    return fast, ids


def finish(folder: str, processor: object, tokenizer: object, ids: dict[str, int]) -> None:
    """The processor, the tokenizer (with its input names kept), the template in both places,
    and a generation config that stops at <|im_end|>."""
    from transformers import GenerationConfig

    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it
    write_chat_template(folder, CHATML)
    GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                     bos_token_id=None, do_sample=False).save_pretrained(folder)  # fmt: skip


def token_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])  # fmt: skip


def text_fields(vocab: int, ids: dict[str, int]) -> dict:
    return dict(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=HEADS, num_key_value_heads=1, max_position_embeddings=4096,
                rope_theta=10000.0, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                bos_token_id=None, tie_word_embeddings=False)  # fmt: skip


# head_dim 16: the three M-RoPE sections (time, height, width) split its 8 frequencies.
MROPE = [2, 3, 3]


def make_qwen2_vl(folder: str, v25: bool = False) -> None:
    import transformers

    seed(0)
    tokenizer, ids = qwen_tokenizer(folder)
    if v25:
        vision = dict(depth=2, hidden_size=HIDDEN, intermediate_size=64, num_heads=HEADS, out_hidden_size=HIDDEN,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[1])  # fmt: skip
        config_cls = transformers.Qwen2_5_VLConfig
        model_cls = transformers.Qwen2_5_VLForConditionalGeneration
        processor_cls = transformers.Qwen2_5_VLProcessor
    else:
        vision = dict(depth=2, embed_dim=HIDDEN, hidden_size=HIDDEN, mlp_ratio=2, num_heads=HEADS, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
        config_cls = transformers.Qwen2VLConfig
        model_cls = transformers.Qwen2VLForConditionalGeneration
        processor_cls = transformers.Qwen2VLProcessor
    config = config_cls(vision_config=vision, rope_scaling={"type": "mrope", "mrope_section": MROPE},
                        **text_fields(len(tokenizer), ids), **token_ids(ids))  # fmt: skip
    model_cls(config).save_pretrained(folder)
    images = transformers.Qwen2VLImageProcessor(
        **QWEN2_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    processor = processor_cls(image_processor=images, tokenizer=tokenizer, chat_template=CHATML)
    finish(folder, processor, tokenizer, ids)


def make_qwen2_5_vl(folder: str) -> None:
    make_qwen2_vl(folder, v25=True)


def qwen3_processor(folder: str, tokenizer: object, ids: dict[str, int]) -> None:
    """Qwen3VLProcessor with its image and video processors at patch 16, merge 2 (as the wrapper's
    qwen_vl_utils call, image_patch_size=16, resizes to multiples of 32)."""
    import transformers

    pixels = dict(min_pixels=QWEN3_PIXELS["min_pixels"], max_pixels=QWEN3_PIXELS["max_pixels"])
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    images = transformers.Qwen2VLImageProcessor(**pixels, **common)
    size = {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]}
    videos = transformers.Qwen3VLVideoProcessor(size=size, **common)
    processor = transformers.Qwen3VLProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                                              chat_template=CHATML)  # fmt: skip
    finish(folder, processor, tokenizer, ids)


def make_qwen3_vl(folder: str) -> None:
    import transformers

    seed(0)
    tokenizer, ids = qwen_tokenizer(folder)
    text = text_fields(len(tokenizer), ids)
    # head_dim 16: 8 frequencies, interleaved T/H/W as Qwen3-VL does ([24, 20, 20] of 64 there).
    text.update(head_dim=16, rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2],
                                           "mrope_interleaved": True})  # fmt: skip
    vision = dict(depth=2, hidden_size=HIDDEN, intermediate_size=64, num_heads=HEADS, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=HIDDEN, num_position_embeddings=64,
                  deepstack_visual_indexes=[0])  # fmt: skip
    config = transformers.Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids(ids))
    transformers.Qwen3VLForConditionalGeneration(config).save_pretrained(folder)
    qwen3_processor(folder, tokenizer, ids)


def qwen3_5_tokenizer(folder: str) -> tuple[object, dict[str, int]]:
    """Qwen3_5Tokenizer itself (AutoTokenizer insists on it for model type qwen3_5), from the
    vocabulary and merges of the locally trained BPE."""
    import transformers

    trained = json.loads(train_bpe(SPECIAL).to_str())
    vocab, merges = trained["model"]["vocab"], [tuple(m) for m in trained["model"]["merges"]]
    fast = transformers.Qwen3_5Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                                         pad_token="<|endoftext|>")  # fmt: skip
    fast.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    save_tokenizer(fast, folder)
    ids = {t: fast.convert_tokens_to_ids(t) for t in SPECIAL}
    return fast, ids


def make_qwen3_5(folder: str) -> None:
    import transformers

    seed(0)
    tokenizer, ids = qwen3_5_tokenizer(folder)
    text = text_fields(len(tokenizer), ids)
    text.pop("rope_theta")
    # One Gated DeltaNet (linear attention) layer and one gated full-attention layer, as the
    # real stack alternates them; a quarter of head_dim 32 rotates: 4 frequencies.
    text.update(head_dim=32, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})  # fmt: skip
    vision = dict(depth=2, hidden_size=HIDDEN, intermediate_size=64, num_heads=HEADS, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=HIDDEN, num_position_embeddings=64)  # fmt: skip
    config = transformers.Qwen3_5Config(text_config=text, vision_config=vision, **token_ids(ids))
    transformers.Qwen3_5ForConditionalGeneration(config).save_pretrained(folder)
    qwen3_processor(folder, tokenizer, ids)


# Small images: at most 16 merged patches (4x4 after the 2x2 merge) per image.
QWEN2_PIXELS = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}
QWEN3_PIXELS = {"min_pixels": 4 * 32 * 32, "max_pixels": 16 * 32 * 32}

QWEN2_VL = ("Qwen2-VL-2B-Instruct", "Qwen2-VL-7B-Instruct", "Qwen2-VL-72B-Instruct", "QVQ-72B-Preview",
            "XinYuan-VL-2B-Instruct")  # fmt: skip
# Names whose entry is Qwen2VLChat itself (VLAA-Thinker, WeThink, VLM-R1 are subclasses of their own).
QWEN2_5_VL = ("Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL-32B-Instruct",
              "Qwen2.5-VL-72B-Instruct", "Qwen2.5-VL-7B-Instruct-ForVideo", "Qwen2.5-VL-72B-Instruct-ForVideo")  # fmt: skip

# Qwen3-VL dense names (the -A22B/-A3B MoE ones build Qwen3VLMoe classes; Omni is another wrapper path).
QWEN3_VL = ("Qwen3-VL-2B-Instruct", "Qwen3-VL-2B-Thinking", "Qwen3-VL-4B-Instruct", "Qwen3-VL-4B-Thinking",
            "Qwen3-VL-8B-Instruct", "Qwen3-VL-8B-Thinking", "Qwen3-VL-32B-Instruct", "Qwen3-VL-32B-Thinking")  # fmt: skip
QWEN3_5 = ("Qwen3.5-27B",)

RECIPES = [
    Recipe(
        name="qwen2-vl",
        family="qwen2vl_series",
        models=QWEN2_VL,
        make=make_qwen2_vl,
        kwargs={"max_new_tokens": 4, **QWEN2_PIXELS},
        min_transformers="4.45",
        note="images only (no video); min/max pixels lowered to keep an image at 4-16 tokens",
    ),
    Recipe(
        name="qwen2.5-vl",
        family="qwen2vl_series",
        models=QWEN2_5_VL,
        make=make_qwen2_5_vl,
        kwargs={"max_new_tokens": 4, **QWEN2_PIXELS},
        min_transformers="4.49",
        note="images only (no video); min/max pixels lowered to keep an image at 4-16 tokens",
    ),
    Recipe(
        name="qwen3-vl",
        family="qwen3vl_series",
        models=QWEN3_VL,
        make=make_qwen3_vl,
        kwargs={"max_new_tokens": 4, **QWEN3_PIXELS},
        min_transformers="4.57",
        note="images only (no video); transformers generate (the catalog passes use_vllm=False)",
    ),
    Recipe(
        name="qwen3.5",
        family="qwen3_5_series",
        models=QWEN3_5,
        make=make_qwen3_5,
        kwargs={"max_new_tokens": 4, **QWEN3_PIXELS},
        min_transformers="5",
        note="images only (no video); dense only (the MoE names use Qwen3_5Moe classes); torch fallback "
        "kernels of the Gated DeltaNet layers",
    ),
]
