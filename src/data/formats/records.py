"""Reading JSON records from a JSON list or a JSONL file, keeping each record's origin."""

from __future__ import annotations

import codecs
import json
import re
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
    yield from read_path(_existing(path_text))


def read_raw_records(path_text: str) -> Iterator[tuple[str, bytes | FormatError]]:
    """read_records, each record left as its JSON text (bytes) for `decode` to parse elsewhere (in a
    worker process: prepare parses and cleans there)."""
    yield from read_raw_path(_existing(path_text))


def _existing(path_text: str) -> Path:
    path = resolve_path(path_text)
    if not path.exists():
        raise DataError(f"data.source.path: {path} does not exist")
    return path


def read_path(path: Path) -> Iterator[tuple[str, object]]:
    for origin, raw in read_raw_path(path):
        yield origin, decode(origin, raw)


def decode(origin: str, raw: object) -> object:
    """One record from read_raw_path parsed (a FormatError for invalid UTF-8 or JSON); any other
    value (a record a reader already parsed, or a FormatError) is returned as it is."""
    if not isinstance(raw, bytes):
        return raw
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        return FormatError(f"{origin}: invalid UTF-8 ({err.reason})", "invalid_utf8")
    except JSON_ERRORS as err:
        return FormatError(f"{origin}: invalid JSON: {json_problem(err)}", "invalid_json")


def read_raw_path(path: Path) -> Iterator[tuple[str, bytes | FormatError]]:
    """(origin, a record's JSON text) for a JSON list (origin file[index]) or a JSONL file (origin
    file:line), read a block at a time: a file larger than memory streams, and a record is parsed
    only where `decode` is called. A JSON list that is not valid JSON (cut short, say) is a DataError
    naming the file and line, raised when the reading reaches it."""
    try:
        with open(path, "rb") as handle:
            if _first_byte(handle) == b"[":
                handle.seek(0)
                yield from _json_list(path, handle)
                return
            handle.seek(0)
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield f"{path}:{lineno}", line
    except OSError as err:
        raise DataError(f"{path}: cannot read data source: {err.strerror or err}") from err


def _first_byte(handle) -> bytes:
    """The first byte that is not whitespace (b"" for an empty file); the handle is left after it."""
    while block := handle.read(1 << 16):
        stripped = block.lstrip()
        if stripped:
            return stripped[:1]
    return b""


BLOCK = 1 << 22  # bytes read at a time from a JSON list
_SPACE = re.compile(r"[ \t\n\r]*")


def _json_list(path: Path, handle) -> Iterator[tuple[str, bytes]]:
    """The elements of a JSON list, each as its exact bytes, found by parsing the text a block at a
    time (json's raw_decode, in C). The text is decoded with surrogateescape, so an invalid UTF-8
    byte inside a string survives the scan and comes back as the same byte: `decode` then flags that
    one record, not the whole file."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    state = {"text": "", "line": 1, "eof": False}  # the buffer, the line its first character is on

    def more(pos: int) -> int:
        """Drop the buffer before `pos`, read more (at least doubling what is held); the new position."""
        if state["eof"]:
            return -1
        text = state["text"]
        block = handle.read(max(BLOCK, len(text) - pos))
        state["line"] += text.count("\n", 0, pos)
        state["text"] = text[pos:] + utf8.decode(block, final=not block)
        state["eof"] = not block
        return 0

    def fail(pos: int, problem: str):
        line = state["line"] + state["text"].count("\n", 0, pos)
        raise DataError(f"{path}:{line}: invalid JSON: {problem}")

    def skip(pos: int) -> tuple[int, str]:
        """The position of the next character that is not JSON whitespace, and that character ("" at the end)."""
        while True:
            pos = _SPACE.match(state["text"], pos).end()
            if pos < len(state["text"]):
                return pos, state["text"][pos]
            if (pos := more(pos)) < 0:
                return len(state["text"]), ""

    pos, char = skip(0)  # at the "[" the caller found
    pos, char = skip(pos + 1)
    index = 0
    while char != "]":
        if not char:
            fail(pos, "Expecting value")
        while True:
            try:
                _, end = decoder.raw_decode(state["text"], pos)
            except json.JSONDecodeError as err:
                ran_out = err.msg.startswith("Unterminated string") or err.pos >= len(state["text"]) - 16
                if ran_out and not state["eof"]:  # the element goes on in the next block
                    pos = more(pos)
                    continue
                fail(err.pos, err.msg)
            except JSON_ERRORS as err:
                raise DataError(f"{path}: invalid JSON: {json_problem(err)}") from err
            if state["eof"] or end < len(state["text"]) - 32 or state["text"][end - 1] in '}]"':
                break
            pos = more(pos)  # a number ("-25" of "-2500.0") may go on in the next block: parse it again whole
        yield f"{path}[{index}]", state["text"][pos:end].encode("utf-8", "surrogateescape")
        index += 1
        pos, char = skip(end)
        if char == ",":
            pos, char = skip(pos + 1)
            if char == "]":
                fail(pos, "Illegal trailing comma before end of array")
        elif char != "]":
            fail(pos, "Expecting ',' delimiter")  # json's words, as for the whole file
    pos, char = skip(pos + 1)
    if char:
        fail(pos, "Extra data")


def require(record: object, origin: str, **fields: type) -> dict:
    """The record as a dict holding each field with the given type, or a FormatError naming it."""
    if not isinstance(record, dict):
        raise FormatError(f"{origin}: expected a JSON object, got {type(record).__name__}")
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind):
            raise FormatError(f"{origin}: field '{name}' missing or not a {kind.__name__}")
    return record
