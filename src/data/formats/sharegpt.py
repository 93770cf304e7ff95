"""ShareGPT: {"id", "conversations": [{"from": "human"|"gpt"|..., "value": str}]} (JSON list or JSONL).

Dumps use several role names (human/user, gpt/chatgpt/bing/bard/assistant, system); raw dumps hold
HTML, which the cleaning step converts to markdown (clean.html_to_markdown)."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import FormatError, require

ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "assistant": "assistant",
    "system": "system",
}


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    record = require(record, origin, conversations=list)
    messages = []
    for index, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise FormatError(f"{origin}: turn {index} needs 'from' and 'value'")
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise FormatError(f"{origin}: turn {index} has unknown role {turn['from']!r}", "unknown_role")
        if not isinstance(turn["value"], str):
            raise FormatError(f"{origin}: turn {index} value is not a string")
        messages.append(Message(role, turn["value"]))
    return [Conversation(id=str(record.get("id", origin)), messages=tuple(messages), origin=origin)]
