"""NQ-synthetic (local imitation): NQ-open JSONL lines {"question": str, "answer": [str, ...]}, as the
teacher-written QA pairs are stored. Each pair becomes a one-turn conversation answering with the
first answer, the short closed-book form the NQ benchmark asks for."""

from __future__ import annotations

from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import FormatError, require


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    record = require(record, origin, question=str, answer=list)
    if not record["answer"] or not isinstance(record["answer"][0], str):
        raise FormatError(f"{origin}: 'answer' needs at least one string")
    question = record["question"].strip()
    if not question.endswith("?"):
        question += "?"
    return [Conversation(id=str(record.get("id", origin)),
                         messages=(Message("user", question), Message("assistant", record["answer"][0])),
                         origin=origin)]
