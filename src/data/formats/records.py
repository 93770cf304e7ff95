"""Reading JSON records from a JSON list or a JSONL file, keeping each record's origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from src import resolve_path


class FormatError(ValueError):
    """A record that does not fit its format; `reason` names the kind for the drop counts."""

    def __init__(self, message: str, reason: str = "malformed_record"):
        super().__init__(message)
        self.reason = reason


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


# json.loads raises more than JSONDecodeError on hostile text: a ValueError for an integer of more
# than 4,300 digits, a RecursionError for arrays nested thousands deep. All of them are invalid JSON here.
JSON_ERRORS = (ValueError, RecursionError)


def json_problem(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return err.msg
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]


def read_records(path_text: str) -> Iterator[tuple[str, object]]:
    """Yield (origin, parsed JSON or a FormatError) for a JSON list or a JSONL file."""
    path = resolve_path(path_text)
    if not path.exists():
        raise DataError(f"data.source.path: {path} does not exist")
    yield from read_path(path)


def read_path(path: Path) -> Iterator[tuple[str, object]]:
    """A JSON list is parsed whole (its text freed once parsed); JSONL is read a line at a time, so a
    large file is never held twice."""
    try:
        with open(path, "rb") as handle:
            if _first_byte(handle) == b"[":
                handle.seek(0)
                yield from _json_list(path, handle.read())
                return
            handle.seek(0)
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path}:{lineno}"
                try:
                    yield origin, json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as err:
                    yield origin, FormatError(f"{origin}: invalid UTF-8 ({err.reason})", "invalid_utf8")
                except JSON_ERRORS as err:
                    yield origin, FormatError(f"{origin}: invalid JSON: {json_problem(err)}", "invalid_json")
    except OSError as err:
        raise DataError(f"{path}: cannot read data source: {err.strerror or err}") from err


def _first_byte(handle) -> bytes:
    """The first byte that is not whitespace (b"" for an empty file); the handle is left after it."""
    while block := handle.read(1 << 16):
        stripped = block.lstrip()
        if stripped:
            return stripped[:1]
    return b""


def _json_list(path: Path, raw: bytes) -> Iterator[tuple[str, object]]:
    """A JSON list, parsed whole. A stray invalid UTF-8 byte costs the records that hold it (decoded
    as U+FFFD, then flagged), not the whole file."""
    first_bad_line = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        first_bad_line = raw[: err.start].count(b"\n") + 1
        text = raw.decode("utf-8", errors="replace")
    del raw  # the text is what is parsed: one copy of the file at a time
    try:
        items = json.loads(text)
    except JSON_ERRORS as err:
        where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(path)
        raise DataError(f"{where}: invalid JSON: {json_problem(err)}") from err
    del text
    for index, item in enumerate(items):
        origin = f"{path}[{index}]"
        if first_bad_line is not None and "\ufffd" in json.dumps(item, ensure_ascii=False):
            yield origin, FormatError(f"{origin}: invalid UTF-8 (the file's first bad byte is on line "
                                      f"{first_bad_line})", "invalid_utf8")
        else:
            yield origin, item


def require(record: object, origin: str, **fields: type) -> dict:
    """The record as a dict holding each field with the given type, or a FormatError naming it."""
    if not isinstance(record, dict):
        raise FormatError(f"{origin}: expected a JSON object, got {type(record).__name__}")
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind):
            raise FormatError(f"{origin}: field '{name}' missing or not a {kind.__name__}")
    return record
