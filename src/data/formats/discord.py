"""Prompt/response JSONL, for dumps such as the study's (never released) Discord data:
one line {"prompt": str, "response": str, "id": optional}; other field names via data.source.fields
(e.g. fields: {prompt: input, response: output})."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import require


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    fields = cfg.fields if cfg else {}
    prompt, response = fields.get("prompt", "prompt"), fields.get("response", "response")
    record = require(record, origin, **{prompt: str, response: str})
    return [Conversation(id=str(record.get("id", origin)),
                         messages=(Message("user", record[prompt]), Message("assistant", record[response])),
                         origin=origin)]
