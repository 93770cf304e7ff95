"""HC3 (English): JSONL lines {"id", "question", "human_answers": [...], "chatgpt_answers": [...], "source"}
in files all / reddit_eli5 / open_qa / wiki_csai / medicine / finance (`<path>/<subset>.jsonl`).

Only ChatGPT's answers are imitation data: one conversation per (question, ChatGPT answer)."""

from __future__ import annotations

from collections.abc import Iterator

from src import resolve_path
from src.config import DataSourceConfig
from src.data.conversation import Conversation, Message
from src.data.formats.records import DataError, read_path, read_raw_path, require

SUBSETS = ("all", "reddit_eli5", "open_qa", "wiki_csai", "medicine", "finance")


def files(cfg: DataSourceConfig) -> list:
    root = resolve_path(cfg.path)
    if root.is_file():
        return [root]
    paths = []
    for subset in cfg.subsets or ["all"]:
        if subset not in SUBSETS:
            raise DataError(f"data.source.subsets: unknown HC3 subset {subset!r} (known: {', '.join(SUBSETS)})")
        path = root / f"{subset}.jsonl"
        if not path.exists():
            raise DataError(f"data.source.path: {path} does not exist (HC3 subset '{subset}')")
        paths.append(path)
    return paths


def read(cfg: DataSourceConfig) -> Iterator[tuple[str, object]]:
    for path in files(cfg):
        yield from read_path(path)


def read_raw(cfg: DataSourceConfig) -> Iterator[tuple[str, object]]:
    for path in files(cfg):
        yield from read_raw_path(path)


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[Conversation]:
    record = require(record, origin, question=str, chatgpt_answers=list)
    qid = str(record.get("id", origin))
    return [Conversation(id=f"{qid}_{k}", messages=(Message("user", record["question"]), Message("assistant", answer)),
                         origin=origin)
            for k, answer in enumerate(record["chatgpt_answers"]) if isinstance(answer, str)]
