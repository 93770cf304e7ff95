"""A random-init T5 on the embedded SmolLM2 tokenizer, small enough for CPU tests of the
encoder-decoder backend (src/models/seq2seq.py)."""

from __future__ import annotations

import torch

from src.data.template import chat_format
from src.models.seq2seq import Seq2SeqHandle


def tiny_t5(tokenizer, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2,
                      num_heads=4, d_kv=16, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    return T5ForConditionalGeneration(config).eval()


def tiny_t5_handle(tokenizer, trained: bool = False, seed: int = 0) -> Seq2SeqHandle:
    return Seq2SeqHandle(tiny_t5(tokenizer, seed), tokenizer, chat_format(tokenizer, "auto"), torch.device("cpu"),
                         trained=trained)
