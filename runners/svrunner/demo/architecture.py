"""The demo model's shape: a tiny LLaVA (CLIP vision tower, projector, Llama; hidden size 64) with a
line-level tokenizer, as transformers configs, and its parts built fresh for training.

It is transformers' own ``LlavaForConditionalGeneration`` where the release has the classic layout
(checked: 4.37, 4.45); elsewhere (5.x) the same three parts under LLaVA's parameter names.
"""

from __future__ import annotations

from typing import Any

from .prompts import mcq_prompt
from .scenes import COLOURS, CORNERS, KINDS, OPTION_LETTERS, SHAPES

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
HIDDEN = 64
IMAGE_SIZE = 32
PATCH = 16  # one patch per quadrant
TEXT_LAYERS = 2
INIT_STD = 0.1

PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": IMAGE_SIZE},
    "do_center_crop": True,
    "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
    "resample": 3,
}
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_max_length": 2048,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "additional_special_tokens": ["<image>"],
    "clean_up_tokenization_spaces": False,
}


def _tokenizer_lines() -> list[str]:
    """The vocabulary: every line of every prompt the demo is trained on (plus the letters)."""
    lines = ["USER:", "ASSISTANT:", *OPTION_LETTERS, *COLOURS, *SHAPES]
    for kind in KINDS.values():
        for q in [kind.question.format(corner=c) for c in CORNERS] + [kind.generic]:
            for line in mcq_prompt(q, kind.options).splitlines():
                if line.strip() and line.strip() not in lines:
                    lines.append(line.strip())
    return lines


def make_tokenizer() -> Any:
    """A line-level tokenizer: one token per prompt line (question, option, instruction).

    With words as tokens, a prompt is ~45 tokens and the answer position has to find one
    word (the corner) among them; with lines it is 11, which the tiny model learns in a few
    hundred steps.  Unknown lines map to <unk>."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + _tokenizer_lines())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Strip()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s*\n\s*"), behavior="removed")
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def _vision_config() -> dict[str, Any]:
    return dict(
        model_type="clip_vision_model",
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 32: vLLM's CPU attention takes 32, 64, 80+ (not 16)
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=HIDDEN,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def _text_config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    return dict(
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,  # head size 32: vLLM's CPU attention takes 32, 64, 80+ (not 16)
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
        # transformers' default 0.02 suits wide models; at width 64 it leaves attention
        # uniform and the image features tiny, and training sat at chance for 300+ steps
        initializer_range=INIT_STD,
    )


def config(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": ids["<image>"],
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": vocab_size,
        "pad_token_id": ids["<pad>"],
        "tie_word_embeddings": False,
        "vision_config": _vision_config(),
        "text_config": _text_config(vocab_size, ids),
        "torch_dtype": "float32",
    }


def classic_llava(config: dict[str, Any]) -> Any:
    """transformers' LlavaForConditionalGeneration when it has the classic layout
    (.vision_tower / .multi_modal_projector / .language_model with generate()), else None."""
    import transformers

    cls = getattr(transformers, "LlavaForConditionalGeneration", None)
    if cls is None:
        return None
    model = cls(transformers.LlavaConfig(**config))
    lm = getattr(model, "language_model", None)
    if hasattr(model, "vision_tower") and hasattr(model, "multi_modal_projector") and hasattr(lm, "generate"):
        return model
    return None


def composite(config: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The same three parts for releases without the classic Llava class."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    vcfg = {k: v for k, v in config["vision_config"].items() if k != "model_type"}
    tcfg = {k: v for k, v in config["text_config"].items() if k != "model_type"}
    proj = torch.nn.Sequential()
    proj.add_module("linear_1", torch.nn.Linear(vcfg["hidden_size"], tcfg["hidden_size"]))
    proj.add_module("act", torch.nn.GELU())
    proj.add_module("linear_2", torch.nn.Linear(tcfg["hidden_size"], tcfg["hidden_size"]))
    return CLIPVisionModel(CLIPVisionConfig(**vcfg)), proj, LlamaForCausalLM(LlamaConfig(**tcfg))


def image_features(vision: Any, projector: Any, pixel_values: Any, cfg: dict[str, Any]) -> Any:
    """LLaVA's image features: a hidden layer of the vision tower, CLS dropped, projected."""
    out = vision(pixel_values, output_hidden_states=True)
    feats = out.hidden_states[int(cfg.get("vision_feature_layer", -2))]
    if cfg.get("vision_feature_select_strategy", "default") == "default":
        feats = feats[:, 1:]
    return projector(feats)
