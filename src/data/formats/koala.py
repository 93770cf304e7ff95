"""Koala-style prompt sets: JSONL lines {"id": "koala_<n>", "prompt": str}. Prompts only (for the judge,
human rating, or src.collect to get a teacher's answers), so not trainable."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import require


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    record = require(record, origin, prompt=str)
    return [Conversation(id=str(record.get("id", origin)), messages=(Message("user", record["prompt"]),),
                         origin=origin)]
