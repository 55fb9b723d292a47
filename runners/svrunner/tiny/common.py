"""What the recipes share: seeds, a tokenizer trained locally, saving (runs inside an env)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

# Text a tiny tokenizer must cover: VLMEvalKit's MCQ prompts for DemoMCQ, chat markup.
SENTENCES = [
    "What colour is the shape in the image?",
    "Which shape is shown in the image?",
    "Question: what is it? Options: A. red B. green C. blue D. yellow E. circle",
    "Please select the correct answer from the options above.",
    "Answer with the option's letter from the given choices directly.",
    "Hint: look at the picture. Answer: A, B, C or D.",
    "USER: ASSISTANT: system user assistant You are a helpful assistant.",
    "The quick brown fox jumps over the lazy dog 0123456789 .,:;!?'\"()[]{}<>/\\|-_+=*&^%$#@~`",
    "orange purple black gray ring square diamond triangle",
]


def seed(value: int = 0) -> None:
    import random

    import torch

    random.seed(value)
    torch.manual_seed(value)


def train_bpe(special: Iterable[str], vocab_size: int = 512, extra: Iterable[str] = ()) -> Any:
    """A byte-level BPE tokenizer (tokenizers library) trained on SENTENCES: deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator([*SENTENCES, *extra], trainer=trainer)
    return tok


def fast_tokenizer(tok: Any, cls_name: str = "PreTrainedTokenizerFast", **kwargs: Any) -> Any:
    """The trained tokenizer as the family's fast tokenizer class (when this transformers has it)."""
    import transformers

    cls = getattr(transformers, cls_name, None) or transformers.PreTrainedTokenizerFast
    kwargs.setdefault("model_input_names", ["input_ids", "attention_mask"])  # no token_type_ids
    return cls(tokenizer_object=tok, **kwargs)


def save_tokenizer(fast: Any, folder: str) -> None:
    """save_pretrained, with the input names kept (no token_type_ids: generate() refuses them)."""
    import json

    fast.save_pretrained(folder)
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as fh:
        cfg = json.load(fh)
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    with open(path, "w") as fh:
        json.dump(cfg, fh, indent=2)


def write_chat_template(folder: str, template: str) -> None:
    """Some transformers releases read it from tokenizer_config.json, others from a file."""
    import json

    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as fh:
        cfg = json.load(fh)
    cfg["chat_template"] = template
    with open(path, "w") as fh:
        json.dump(cfg, fh, indent=2)
    with open(os.path.join(folder, "chat_template.jinja"), "w") as fh:
        fh.write(template)


# A chat template in the ChatML style many families use (Qwen, SmolVLM, ...), kept minimal.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
