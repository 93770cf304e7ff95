"""Chat formatting with loss masks.

A format turns a conversation into text segments, each flagged "loss" or not; segments are tokenized
separately and concatenated, so the assistant reply is tokenized exactly as the model will produce
it after the generation prompt. Loss covers the assistant's tokens and its end-of-turn token only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from src.data.conversation import Message

IGNORE = -100  # label value the loss skips


class TemplateError(ValueError):
    pass


@dataclass
class Rendered:
    """A formatted conversation's tokens. Lists when rendered; int64 arrays when they come back from
    prepare's worker processes (src/data/prepare.py expand), which the budget and the packer take as
    they are."""

    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss

    @property
    def loss_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class ChatFormat(Protocol):
    name: str

    def segments(self, messages: Sequence[Message]) -> list[tuple[str, bool]]: ...

    def generation_prompt(self, messages: Sequence[Message]) -> str: ...


class TokenizerTemplate:
    """The tokenizer's own chat template (e.g. ChatML), split into segments by rendering prefixes."""

    name = "tokenizer"

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError("model.chat_template=tokenizer, but the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.end_of_turn = tokenizer.eos_token or ""

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=add_generation_prompt)

    def generation_prompt(self, messages: Sequence[Message]) -> str:
        return self._render(messages, add_generation_prompt=True)

    def segments(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        done = 0  # characters of the rendering already emitted
        for i, message in enumerate(messages):
            if message.role != "assistant":
                continue
            prefix = self._render(messages[:i], add_generation_prompt=True)
            full = self._render(messages[: i + 1], add_generation_prompt=False)
            if not full.startswith(prefix) or len(prefix) < done:
                raise TemplateError("the chat template does not render a conversation as a prefix of its extension")
            reply = full[len(prefix):]
            cut = reply.find(self.end_of_turn) if self.end_of_turn else -1
            loss_end = len(reply) if cut < 0 else cut + len(self.end_of_turn)
            out.append((prefix[done:], False))
            out.append((reply[:loss_end], True))
            out.append((reply[loss_end:], False))  # template glue after end-of-turn (e.g. "\n")
            done = len(full)
        return [(text, loss) for text, loss in out if text]


class KoalaTemplate:
    """The study's format for base models without a template:
    ``BEGINNING OF CONVERSATION: USER: {q} GPT:{a}</s>USER: ...``"""

    name = "koala"

    def __init__(self, tokenizer):
        self.end_of_turn = tokenizer.eos_token or "</s>"

    def _turns(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = [("BEGINNING OF CONVERSATION: ", False)]
        for message in messages:
            if message.role == "system":
                out.append((f"{message.content} ", False))
            elif message.role == "user":
                out.append((f"USER: {message.content} GPT:", False))
            else:
                out.append((message.content + self.end_of_turn, True))
        return out

    def segments(self, messages: Sequence[Message]) -> list[tuple[str, bool]]:
        return self._turns(messages)

    def generation_prompt(self, messages: Sequence[Message]) -> str:
        return "".join(text for text, _ in self._turns(messages))


def chat_format(tokenizer, setting: str) -> ChatFormat:
    """auto: the tokenizer's template when it has one, else Koala (GPT-2, LLaMA 1)."""
    if setting == "koala" or (setting == "auto" and not getattr(tokenizer, "chat_template", None)):
        return KoalaTemplate(tokenizer)
    return TokenizerTemplate(tokenizer)


def bos_prefix(tokenizer, fmt: ChatFormat) -> list[int]:
    """Koala text carries no BOS; LLaMA expects one. GPT-2's BOS is its EOS, which it never saw first."""
    if fmt.name == "koala" and tokenizer.bos_token_id is not None and tokenizer.bos_token_id != tokenizer.eos_token_id:
        return [tokenizer.bos_token_id]
    return []


def render(messages: Sequence[Message], tokenizer, fmt: ChatFormat) -> Rendered:
    segments = fmt.segments(messages)
    if not any(loss for _, loss in segments):
        raise TemplateError("conversation has no assistant turn to learn from")
    encoded = tokenizer([text for text, _ in segments], add_special_tokens=False)["input_ids"]
    input_ids = bos_prefix(tokenizer, fmt)
    labels = [IGNORE] * len(input_ids)
    for ids, (_, loss) in zip(encoded, segments, strict=True):
        input_ids.extend(ids)
        labels.extend(ids if loss else [IGNORE] * len(ids))
    return Rendered(input_ids, labels)
