"""NQ-open: JSONL lines {"question": str, "answer": [str, ...]}, the format of the NQ benchmark's
questions and shots, of NQ-synthetic's seeds and output, and of the `nq_synthetic` data source (the
teacher-written QA pairs). The one reader of it: `parse_record` checks one record, `read_nq` reads a
file (a bad line is a DataError naming file and line), and `parse` makes a record the data source's
one-turn conversation, answering with the first answer, the short closed-book form the NQ benchmark
asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src import resolve_path
from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import DataError, FormatError, read_path, require


@dataclass(frozen=True)
class NQRecord:
    question: str  # as written: no normalization, no question mark added
    answers: tuple[str, ...]  # at least one; the first is the short answer
    origin: str  # file:line


def parse_record(record: object, origin: str) -> NQRecord:
    """One NQ-open record, or a FormatError naming its origin and what is wrong."""
    record = require(record, origin, question=str, answer=list)
    answers = record["answer"]
    if not answers or not isinstance(answers[0], str):
        raise FormatError(f"{origin}: 'answer' needs at least one string")
    if not all(isinstance(a, str) for a in answers):
        raise FormatError(f"{origin}: 'answer' holds a value that is not a string")
    return NQRecord(record["question"], tuple(answers), origin)


def read_nq(path: str | Path) -> list[NQRecord]:
    """Every record of an NQ-open file (absolute, or relative to the project root), in file order;
    a line that is not valid JSON or not an NQ-open record raises DataError naming file and line."""
    full = resolve_path(str(path))
    if not full.exists():
        raise DataError(f"{full}: NQ-open file does not exist")
    records = []
    for origin, record in read_path(full):
        try:
            if isinstance(record, FormatError):
                raise record
            records.append(parse_record(record, origin))
        except FormatError as err:
            raise DataError(str(err)) from err
    return records


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    nq = parse_record(record, origin)
    question = nq.question.strip()
    if not question.endswith("?"):
        question += "?"
    return [Conversation(id=str(record.get("id", origin)),
                         messages=(Message("user", question), Message("assistant", nq.answers[0])),
                         origin=origin)]
