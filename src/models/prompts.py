"""How prompts become tokens, shared by every backend (HF and vLLM score the same tokens): one-turn
chat prompts rendered by the chat format, encoding with BOS only where the format wants one, the
context/continuation split of log-likelihood requests, and cutting generations at stop strings."""

from __future__ import annotations

from collections.abc import Sequence

from src.data.template import ChatFormat, bos_prefix


def chat_prompt(fmt: ChatFormat, user_text: str) -> str:
    """A one-turn chat, rendered up to where the assistant's reply starts."""
    from src.data.conversation import Message

    return fmt.generation_prompt([Message("user", user_text)])


def encode_prompt(tokenizer, fmt: ChatFormat, text: str, chat: bool) -> list[int]:
    """Token ids as the model sees a prompt: chat prompts are already rendered (BOS only where the
    format wants one); plain prompts get the tokenizer's own special tokens."""
    prefix = bos_prefix(tokenizer, fmt) if chat else []
    return prefix + tokenizer(text, add_special_tokens=not chat)["input_ids"]


def split_requests(encode, requests: Sequence[tuple[str, str]], chat: bool) -> tuple[list[list[int]], list[int]]:
    """(token ids of context + continuation, where the continuation starts) per request. As in
    lm-evaluation-harness, both are tokenized together and the context's own tokens mark the split, so
    " A" after "Answer:" is the token the model would really see."""
    sequences, starts = [], []
    for context, continuation in requests:
        whole = encode(context + continuation, chat)
        n_context = len(encode(context, chat))
        if n_context == 0 or n_context >= len(whole):
            raise ValueError(f"loglikelihood needs a non-empty context and continuation: {context[-40:]!r}")
        sequences.append(whole)
        starts.append(n_context)
    return sequences, starts



def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if pos >= 0:
            cut = min(cut, pos)
    return text[:cut]

