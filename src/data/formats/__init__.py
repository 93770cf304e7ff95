"""Upstream data formats, one module each, in a registry keyed by the data source's `format`.

A format reads records (with their origin, file:line, for error messages) and parses one record into
zero or more Conversations; a record it cannot parse raises FormatError with a reason. `read_raw`, where
a format has it, yields each record's JSON text unparsed (records.decode parses it), so that prepare
parses and cleans in its worker processes rather than in the one that reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from src.config import DataSourceConfig
from src.data.conversation import Conversation
from src.data.formats import discord, hc3, hub, koala, messages, nq, sharegpt, text
from src.data.formats.records import FormatError, read_raw_records, read_records

__all__ = ["FORMATS", "Format", "FormatError"]


@dataclass(frozen=True)
class Format:
    read: Callable[[DataSourceConfig], Iterator[tuple[str, object]]]
    parse: Callable[[object, str, DataSourceConfig], list[Conversation]]  # plain_text: list[str]
    trainable: bool = True  # False: prompts only (judge and human-rating sets)
    html: bool = False  # raw dumps of this format hold HTML
    plain_text: bool = False  # documents, not conversations: only for data.pretrain_mix (src/data/pretrain_mix.py)
    read_raw: Callable[[DataSourceConfig], Iterator[tuple[str, object]]] | None = None  # None: `read`


def _raw_file(cfg: DataSourceConfig):
    return read_raw_records(cfg.path)


def _file(cfg: DataSourceConfig):
    return read_records(cfg.path)


FORMATS: dict[str, Format] = {
    "sharegpt": Format(_file, sharegpt.parse, html=True, read_raw=_raw_file),
    "hc3": Format(hc3.read, hc3.parse, read_raw=hc3.read_raw),
    "discord": Format(_file, discord.parse, read_raw=_raw_file),
    "nq_synthetic": Format(_file, nq.parse, read_raw=_raw_file),
    "koala_prompts": Format(_file, koala.parse, trainable=False, read_raw=_raw_file),
    "messages": Format(_file, messages.parse, read_raw=_raw_file),
    "hub": Format(hub.read, hub.parse),
    "text": Format(text.read, text.parse, trainable=False, plain_text=True),
}
