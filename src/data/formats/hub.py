"""Any dataset the `datasets` library loads (a hub id, or a local folder/file it understands), mapped
onto messages by data.source.fields: {messages: <column>} for chat lists, {conversations: <column>}
for ShareGPT-style turns, or {prompt: <column>, response: <column>} for pairs."""

from __future__ import annotations

from collections.abc import Iterator

from src import resolve_path
from src.config import DataSourceConfig
from src.data.conversation import Conversation
from src.data.formats import discord, messages, sharegpt
from src.data.formats.records import DataError, FormatError


def read(cfg: DataSourceConfig) -> Iterator[tuple[str, object]]:
    import datasets

    local = resolve_path(cfg.path)
    try:
        if local.is_file():  # a local JSON/JSONL/Parquet file through the matching builder
            builder = {".parquet": "parquet", ".csv": "csv"}.get(local.suffix, "json")
            data = datasets.load_dataset(builder, data_files=str(local), split=cfg.split)
        else:
            data = datasets.load_dataset(str(local) if local.exists() else cfg.path, split=cfg.split)
    except Exception as err:  # the library raises many kinds; the user needs the id and the reason
        raise DataError(f"data.source.path: cannot load dataset {cfg.path!r} (split {cfg.split!r}): {err}") from err
    for index, row in enumerate(data):
        yield f"{cfg.path}[{cfg.split}][{index}]", row


def parse(record: object, origin: str, cfg: DataSourceConfig) -> list[Conversation]:
    fields = cfg.fields
    if "messages" in fields:
        return messages.parse(record, origin, cfg)
    if "conversations" in fields:
        column = fields["conversations"]
        return sharegpt.parse({"id": record.get("id", origin), "conversations": record.get(column)}, origin)
    if "prompt" in fields and "response" in fields:
        return discord.parse(record, origin, cfg)
    raise FormatError(f"{origin}: format 'hub' needs data.source.fields with messages, conversations, "
                      "or prompt and response")
