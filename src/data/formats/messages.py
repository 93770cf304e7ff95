"""Chat-messages JSONL: {"messages": [{"role": "system"|"user"|"assistant", "content": str}], "id": optional}
(the OpenAI / TRL layout); the column name can be changed with data.source.fields: {messages: ...}."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.conversation import ROLES, Conversation, Message
from src.data.formats.records import FormatError, require


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    column = (cfg.fields if cfg else {}).get("messages", "messages")
    record = require(record, origin, **{column: list})
    messages = []
    for index, message in enumerate(record[column]):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise FormatError(f"{origin}: message {index} needs 'role' and a string 'content'")
        if message.get("role") not in ROLES:
            raise FormatError(f"{origin}: message {index} has unknown role {message.get('role')!r}", "unknown_role")
        messages.append(Message(message["role"], message["content"]))
    return [Conversation(id=str(record.get("id", origin)), messages=tuple(messages), origin=origin)]
