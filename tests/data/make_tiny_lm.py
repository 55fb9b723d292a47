"""Write a tiny random LlamaForCausalLM checkpoint that vLLM's CPU backend serves (stdlib + the
env's transformers/tokenizers/torch; run under an engine env's Python, offline).

Head size 32: vLLM's CPU attention takes head sizes 32, 64, 80 and up (16 is refused at the
first request). A word-level tokenizer and a chat template of its own, so no hub is needed.
usage: python make_tiny_lm.py TARGET_DIR
"""

import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

target = sys.argv[1]
words = ["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(60)] + ["hello", "USER:", "ASSISTANT:"]
tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
template = ("{{ bos_token }}{% for m in messages %}USER: {{ m['content'] if m['content'] is string "
            "else m['content'][0]['text'] }} {% endfor %}ASSISTANT:")
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                               pad_token="<pad>", chat_template=template)
fast.save_pretrained(target)
config = LlamaConfig(vocab_size=len(words), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                     bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(target)
print(f"tiny LM written to {target}")
