"""IDEFICS (v1), Idefics2, Idefics3 and SmolVLM 1/2 through transformers: VLMEvalKit's IDEFICS,
IDEFICS2 (which serves Idefics2 and Idefics3 checkpoints), SmolVLM and SmolVLM2."""

from __future__ import annotations

from . import Recipe
from .common import fast_tokenizer, save_tokenizer, seed, train_bpe, write_chat_template

HIDDEN = 32
FAKE, IMAGE, EOU = "<fake_token_around_image>", "<image>", "<end_of_utterance>"

# "User:<image>question<end_of_utterance>\nAssistant:", the turns the Idefics2/3 processors and
# VLMEvalKit's prompts use; written for these recipes.
USER_ASSISTANT = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SmolVLM's prompts open with <|im_start|>: the same turns behind it.
SMOL = "<|im_start|>" + USER_ASSISTANT


def _ids(tok: object, names: list[str]) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in names}  # type: ignore[attr-defined]


def _llama_text(vocab: int, ids: dict[str, int], **extra: object) -> dict:
    return dict(model_type="llama", vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"], **extra)  # fmt: skip


# ---------------------------------------------------------------------------------------- IDEFICS v1


def make_idefics(folder: str) -> None:
    from transformers import (
        IdeficsConfig,
        IdeficsForVisionText2Text,
        IdeficsImageProcessor,
        IdeficsProcessor,
    )

    seed(0)
    # As in idefics-9b: <unk> pads, and the two image tokens sit after the base vocabulary, in
    # the decoupled (always-trained) embedding rows.
    tok = train_bpe(["<unk>", "<s>", "</s>", EOU])
    base = tok.get_vocab_size()
    tok.add_special_tokens([FAKE, IMAGE])
    ids = _ids(tok, ["<unk>", "<s>", "</s>", EOU, FAKE, IMAGE])
    tokenizer = fast_tokenizer(tok, "LlamaTokenizerFast", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                               pad_token="<unk>", additional_special_tokens=[FAKE, IMAGE, EOU])  # fmt: skip
    config = IdeficsConfig(
        vocab_size=base, additional_vocab_size=tok.get_vocab_size() - base, hidden_size=HIDDEN, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, cross_layer_interval=1, use_resampler=True,
        pad_token_id=ids["<unk>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
        vision_config=dict(embed_dim=HIDDEN, image_size=32, patch_size=8, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                              resampler_head_dim=16),
    )  # fmt: skip
    IdeficsForVisionText2Text(config).save_pretrained(folder)
    images = IdeficsImageProcessor(image_size=32, image_mean=[0.481, 0.458, 0.408], image_std=[0.269, 0.261, 0.276])
    IdeficsProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)


# ------------------------------------------------------------------------------------------ Idefics2


def _idefics_tokenizer(folder: str, extra_special: tuple[str, ...] = ()) -> tuple[object, dict[str, int]]:
    """A Llama-style tokenizer with the Idefics image tokens (the processors add them as special
    tokens; made here so that their ids lie inside the model's vocabulary)."""
    names = ["<unk>", "<s>", "</s>", "<pad>", FAKE, IMAGE, EOU, *extra_special]
    tok = train_bpe(names)
    fast = fast_tokenizer(tok, "LlamaTokenizerFast", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                          pad_token="<pad>", additional_special_tokens=[FAKE, IMAGE, EOU, *extra_special])  # fmt: skip
    save_tokenizer(fast, folder)
    return fast, _ids(tok, names)


def make_idefics2(folder: str) -> None:
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessor,
        Idefics2Processor,
    )

    seed(0)
    tokenizer, ids = _idefics_tokenizer(folder)
    latents = 4  # image tokens per image: the perceiver's latents
    config = Idefics2Config(
        image_token_id=ids[IMAGE], tie_word_embeddings=False,
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8),
        perceiver_config=dict(resampler_n_latents=latents, resampler_depth=1, resampler_n_heads=2,
                              resampler_head_dim=16, num_key_value_heads=1),
        text_config=dict(_llama_text(len(tokenizer), ids), model_type="mistral", sliding_window=4096),
    )  # fmt: skip
    Idefics2ForConditionalGeneration(config).save_pretrained(folder)
    # Image splitting on, as idefics2-8b ships: four crops and the whole image per <image>.
    images = Idefics2ImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}, do_image_splitting=True)
    processor = Idefics2Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=latents)
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, USER_ASSISTANT)


# ------------------------------------------------------------------------- Idefics3, SmolVLM 1 and 2

ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5))


def _make_idefics3_like(folder: str, smolvlm: bool, template: str) -> None:
    """Idefics3 (or its SmolVLM twin of transformers 4.50): a SigLIP-style tower at 32 px whose
    4x4 patches are pixel-shuffled (scale 2) into 4 image tokens, on a Llama; images are split
    into 32 px crops of a 64 px resize, plus the whole image."""
    import transformers

    prefix = "SmolVLM" if smolvlm else "Idefics3"
    config_cls = getattr(transformers, f"{prefix}Config")
    model_cls = getattr(transformers, f"{prefix}ForConditionalGeneration")
    images_cls = getattr(transformers, f"{prefix}ImageProcessor")
    processor_cls = getattr(transformers, f"{prefix}Processor")

    seed(0)
    tokenizer, ids = _idefics_tokenizer(folder, ("<global-img>", *ROW_COL))
    config = config_cls(
        image_token_id=ids[IMAGE], scale_factor=2, pad_token_id=ids["<pad>"], tie_word_embeddings=False,
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=_llama_text(len(tokenizer), ids),
    )  # fmt: skip
    model_cls(config).save_pretrained(folder)
    extra = {}
    if smolvlm:  # SmolVLM's processor reads its video defaults from the image processor
        extra["video_sampling"] = {"fps": 1, "max_frames": 8, "video_size": {"longest_edge": 64}}
    images = images_cls(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True,
                        **extra)  # fmt: skip
    processor = processor_cls(image_processor=images, tokenizer=tokenizer, image_seq_len=4, chat_template=template)
    processor.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    write_chat_template(folder, template)


def make_idefics3(folder: str) -> None:
    _make_idefics3_like(folder, smolvlm=False, template=USER_ASSISTANT)


def make_smolvlm(folder: str) -> None:  # SmolVLM 1 is an Idefics3 checkpoint
    _make_idefics3_like(folder, smolvlm=False, template=SMOL)


def make_smolvlm2(folder: str) -> None:
    _make_idefics3_like(folder, smolvlm=True, template=SMOL)


RECIPES = [
    Recipe(
        name="idefics-9b-instruct",
        family="idefics_series",
        models=("idefics_9b_instruct", "idefics_80b_instruct"),
        make=make_idefics,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.32",
    ),
    Recipe(
        name="idefics2-8b",
        family="idefics_series",
        models=("idefics2_8b",),
        make=make_idefics2,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.40",
    ),
    Recipe(
        name="idefics3-8b-llama3",
        family="idefics_series",
        models=("Idefics3-8B-Llama3",),
        make=make_idefics3,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.46",
    ),
    Recipe(
        name="smolvlm-instruct",
        family="smolvlm_series",
        models=("SmolVLM", "SmolVLM-256M", "SmolVLM-500M", "SmolVLM-DPO", "SmolVLM-Synthetic"),
        make=make_smolvlm,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.46",
    ),
    Recipe(
        name="SmolVLM2-256M-tiny",  # the wrapper picks its video resolution from "SmolVLM2-256M" in the path
        family="smolvlm_series",
        models=("SmolVLM2", "SmolVLM2-256M", "SmolVLM2-500M", "Solari"),
        make=make_smolvlm2,
        kwargs={"max_new_tokens": 4},
        min_transformers="4.50",
    ),
]
