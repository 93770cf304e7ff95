"""Plain text (pre-training documents, for data.pretrain_mix): a JSONL (or JSON list) file of
{"text": str} records, the column renamable with data.source.fields: {text: ...}, or a folder whose
.txt files (sorted by path, searched recursively) are one document each. No conversations and no
roles: every token of a document carries loss (src/data/pretrain_mix.py)."""

from __future__ import annotations

from collections.abc import Iterator

from src import resolve_path
from src.config import DataSourceConfig
from src.data.formats.records import DataError, FormatError, read_path, require


def read(cfg: DataSourceConfig) -> Iterator[tuple[str, object]]:
    path = resolve_path(cfg.path)
    if not path.exists():
        raise DataError(f"data.source.path: {path} does not exist")
    if path.is_file():
        yield from read_path(path)
        return
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{path}: a text data source folder needs .txt files (one document each); found none")
    for file in files:
        try:
            yield str(file), {"text": file.read_bytes().decode("utf-8")}
        except UnicodeDecodeError as err:
            yield str(file), FormatError(f"{file}: invalid UTF-8 ({err.reason})", "invalid_utf8")
        except OSError as err:
            raise DataError(f"{file}: cannot read data source: {err.strerror or err}") from err


def parse(record: object, origin: str, cfg: DataSourceConfig | None = None) -> list[str]:
    """The document's text (a record from a folder carries it under "text" whatever the mapping)."""
    column = (cfg.fields if cfg else {}).get("text", "text")
    if isinstance(record, dict) and column not in record and set(record) == {"text"}:
        column = "text"
    record = require(record, origin, **{column: str})
    text = record[column]
    if not text.strip():
        raise FormatError(f"{origin}: empty text", "empty_text")
    return [text]
