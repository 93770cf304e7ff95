"""The encoder-decoder toy base (`architecture: t5`): its T5 config and its pretraining objective.

The objective is a prefix LM, not T5's span corruption. Each document is cut at a point drawn from
the spec's seed (again each epoch, so every word is a target in some epoch): the encoder reads
`<s>` + the prefix, the decoder writes the rest + `</s>`. Why:
- it is the downstream use exactly: a toy chat puts the prompt (Koala format, which the tokenizer
  starts with `<s>`) in the encoder and the reply comes out of the decoder, as does the cloze probe
  ("<s> Naru lives in" -> the decoder's first word);
- span corruption needs sentinel tokens, which the shared word-level vocabulary does not have; adding
  them would change `vocabulary()`, which every toy model's cache key hashes (the Llama toys' keys
  must not move);
- its decoder learns to write whole continuations (half a document on average), where span
  corruption's decoder writes short spans between sentinels: a reply is a continuation.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Protocol

import torch

IGNORE = -100  # what cross-entropy skips: label padding


class ToySpec(Protocol):
    """The fields of `src.toyworld.pretrain.ToySpec` read here (a Protocol, so this module does not
    import pretrain, which imports it)."""

    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    seq_len: int
    batch_size: int
    seed: int


def t5_config(spec: ToySpec, tokenizer):
    """Sizes from the spec: `layers` is each stack's depth (encoder and decoder alike), `hidden_size`
    is d_model, `intermediate_size` d_ff, and each head gets hidden_size / heads dimensions.
    gated-gelu (T5 v1.1's feed-forward) because the Llama toys' MLP is gated too (SwiGLU): the
    comparison then changes the architecture, not the kind of feed-forward layer. Embeddings are
    tied as in the Llama toys, so the two spend the same on the vocabulary."""
    from transformers import T5Config

    return T5Config(vocab_size=len(tokenizer), d_model=spec.hidden_size, d_ff=spec.intermediate_size,
                    num_layers=spec.layers, num_decoder_layers=spec.layers, num_heads=spec.heads,
                    d_kv=spec.hidden_size // spec.heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                    tie_word_embeddings=True, is_encoder_decoder=True,
                    # T5's convention: the decoder starts from the pad token
                    pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id)


def split_points(docs: list[list[int]], seed: int, epoch: int) -> list[int]:
    """Where each document (in the order given) is cut this epoch: 1 .. len-1 tokens of prefix, so
    both sides hold at least one word (a one-word document keeps it in the prefix)."""
    rng = random.Random(f"prefix-lm-{seed}-{epoch}")
    return [rng.randint(1, max(1, len(doc) - 1)) for doc in docs]


def prefix_lm_batch(docs: list[list[int]], splits: list[int], bos: int, eos: int, pad: int) -> dict[str, torch.Tensor]:
    """Encoder input `<s>` + doc[:k] (right-padded, masked), labels doc[k:] + `</s>` (padding ignored);
    T5ForConditionalGeneration makes the decoder's input from the labels (shifted right after pad)."""
    prefixes = [[bos, *doc[:k]] for doc, k in zip(docs, splits, strict=True)]
    targets = [[*doc[k:], eos] for doc, k in zip(docs, splits, strict=True)]
    width, length = max(map(len, prefixes)), max(map(len, targets))
    return {"input_ids": torch.tensor([p + [pad] * (width - len(p)) for p in prefixes]),
            "attention_mask": torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prefixes]),
            "labels": torch.tensor([t + [IGNORE] * (length - len(t)) for t in targets])}


def prefix_lm_batches(docs: list[list[int]], order: list[int], spec: ToySpec, epoch: int,
                      tokenizer) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch: the documents (plain word ids, cut to seq_len) in `order`, batch_size at a time."""
    ordered = [docs[i][: spec.seq_len] for i in order]
    splits = split_points(ordered, spec.seed, epoch)
    for i in range(0, len(ordered), spec.batch_size):
        yield prefix_lm_batch(ordered[i:i + spec.batch_size], splits[i:i + spec.batch_size],
                              tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
