"""Tiny randomly initialised models of every supported family, saved as real model folders.

Each gets a small byte-level BPE tokenizer trained offline, so the folders load through the
same `load_model(path)` path a user's local folder takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

VOCAB = 384
_CORPUS = [
    "France: Paris\nJapan: Tokyo\nItaly: Rome\nEgypt: Cairo\nGermany: Berlin\n",
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 6 7 8 9 10",
    "Question: Is the sky blue?\nAnswer: Yes\nA. B. C. D. hot cold big small",
    "English: cat\nFrench: chat\nEnglish: dog\nFrench: chien\n",
]
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
               pad_token_id=0, tie_word_embeddings=False)

TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(_COMMON, num_key_value_heads=2),
    "mistral": dict(_COMMON, num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(_COMMON, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen3": dict(_COMMON, num_key_value_heads=2, head_dim=8),
    "gemma": dict(_COMMON, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True),
    "gemma2": dict(_COMMON, num_key_value_heads=2, head_dim=8, final_logit_softcapping=5.0,
                   attn_logit_softcapping=50.0, sliding_window=4, tie_word_embeddings=True),
    "gemma3_text": dict(_COMMON, num_key_value_heads=2, head_dim=8, sliding_window=4,
                        final_logit_softcapping=5.0, tie_word_embeddings=True),
    "phi3": dict(_COMMON, num_key_value_heads=2),
    "gpt2": dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=256, bos_token_id=2,
                 eos_token_id=2),
    "gpt_neox": dict(_COMMON, rotary_pct=0.5, use_parallel_residual=True),
    "opt": dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64,
                max_position_embeddings=256, word_embed_proj_dim=16, bos_token_id=2, eos_token_id=2,
                pad_token_id=1),
}
FAMILIES = sorted(TINY_CONFIGS)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ids 0..2 = <pad>, <s>, </s>; adds no BOS by default."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def build_tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    config = AutoConfig.for_model(family, **TINY_CONFIGS[family])
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # the default init gives near-uniform outputs; sharpen them so tests bite
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.35)
    return model


def save_tiny(family: str, folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    build_tiny(family, seed).save_pretrained(folder)
    tokenizer = tiny_tokenizer()
    if family in ("gpt2", "opt"):  # these families use </s> / <|endoftext|> as their only special token
        tokenizer.bos_token = None
    tokenizer.save_pretrained(folder)
    return folder
