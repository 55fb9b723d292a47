"""LLaVA-OneVision through transformers (LlavaOnevisionForConditionalGeneration), VLMEvalKit's
LLaVA_OneVision_HF, which serves llava-hf's OneVision checkpoints and NCSOFT's VARCO-VISION-HF.

Not covered: Video-LLaVA-HF (VideoLLaVA_HF) reads only a video from its message (it opens the
first video with PyAV and has no image path), so a DemoMCQ image row cannot reach it.
"""

from __future__ import annotations

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
IM_START, IM_END, EOT, IMAGE, VIDEO = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>", "<video>"
# SigLIP tiles of 16 px in 4 px patches: 16 tokens a tile. A DemoMCQ image (64 px) is cut into
# a 4x4 grid of tiles, which is more than anyres_max_9 keeps: the downsampling branch runs.
TILE, PATCH = 16, 4
PINPOINTS = [[16, 16], [16, 32], [32, 16], [32, 32], [32, 64], [64, 32], [48, 48], [64, 64]]


def chatml(system: str = "") -> str:
    """ChatML turns (Qwen2 LLMs); the OneVision wrapper writes <image> into the text itself, so
    image and video parts only add their tokens. Written for these recipes."""
    head = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + system + "<|im_end|>\n' }}{% endif %}"
            if system else "")  # fmt: skip
    return (
        head + "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% elif part['type'] == 'video' %}{{ '<video>\n' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def _make_onevision(folder: str, template: str) -> None:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    seed(0)
    names = [EOT, IM_START, IM_END, IMAGE, VIDEO]
    tok = train_bpe(names, extra=["system user assistant"])
    ids = {t: tok.token_to_id(t) for t in names}
    tokenizer = fast_tokenizer(tok, "Qwen2TokenizerFast", eos_token=IM_END, pad_token=EOT, unk_token=None,
                               bos_token=None, additional_special_tokens=[IM_START, IM_END, IMAGE, VIDEO])  # fmt: skip
    save_tokenizer(tokenizer, folder)
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=TILE, patch_size=PATCH),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=8192, tie_word_embeddings=True,
                         bos_token_id=ids[EOT], eos_token_id=ids[IM_END], pad_token_id=ids[EOT]),
        image_token_index=ids[IMAGE], video_token_index=ids[VIDEO], vision_feature_select_strategy="full",
        vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=PINPOINTS,
    )  # fmt: skip
    model = LlavaOnevisionForConditionalGeneration(config)
    # The wrapper asks for 2048 new tokens and takes no generation kwargs; a random model never
    # says <|im_end|>. So every token ends an answer here: one new token per question (the
    # prompt, the vision tower, anyres packing and one decoding step all still run).
    model.generation_config.eos_token_id = [ids[IM_END], *(i for i in range(len(tokenizer)) if i != ids[IM_END])]
    model.generation_config.pad_token_id = ids[EOT]
    model.save_pretrained(folder)
    size = {"height": TILE, "width": TILE}
    images = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS)
    videos = LlavaOnevisionVideoProcessor(size=size)
    processor = LlavaOnevisionProcessor(image_processor=images, tokenizer=tokenizer, video_processor=videos,
                                        num_image_tokens=(TILE // PATCH) ** 2, vision_feature_select_strategy="full",
                                        chat_template=template)  # fmt: skip
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)  # the processor rewrote it
    write_chat_template(folder, template)


def make_onevision(folder: str) -> None:
    _make_onevision(folder, chatml())


def make_varco(folder: str) -> None:  # VARCO-VISION-HF: the same classes, a system turn first
    _make_onevision(folder, chatml("You are a helpful assistant."))


RECIPES = [
    Recipe(
        name="llava-onevision-qwen2-ov-hf",
        family="llava_series",
        models=(
            "llava-onevision-qwen2-0.5b-ov-hf",
            "llava-onevision-qwen2-0.5b-si-hf",
            "llava-onevision-qwen2-7b-ov-hf",
            "llava-onevision-qwen2-7b-si-hf",
        ),
        make=make_onevision,
        min_transformers="4.45",
        note="one new token per question: every token is an end token (the wrapper asks for 2048)",
    ),
    Recipe(
        name="varco-vision-hf",
        family="varco_vision_series",
        models=("varco-vision-hf",),
        make=make_varco,
        min_transformers="4.45",
        note="one new token per question: every token is an end token (the wrapper asks for 2048)",
    ),
]
