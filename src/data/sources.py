"""Data-source loaders, one per upstream format, in a registry keyed by format name.

A loader yields (origin, record-or-error) pairs; `load_source` normalizes them into Conversations,
counting every record it drops and why. With `strict`, the first bad record is an error naming its
file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from src import resolve_path
from src.config import DataSourceConfig
from src.data.conversation import Conversation, LoadReport, Message


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


# ShareGPT dumps use several role names; map them onto ours.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def _read_records(path: Path) -> Iterator[tuple[str, object]]:
    """Yield (origin, parsed JSON or an Exception) for a JSON list or a JSONL file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read data source: {err.strerror or err}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
        for index, item in enumerate(items):
            yield f"{path}[{index}]", item
        return
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        origin = f"{path}:{lineno}"
        try:
            yield origin, json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield origin, DataError(f"{origin}: invalid UTF-8 ({err.reason})")
        except json.JSONDecodeError as err:
            yield origin, DataError(f"{origin}: invalid JSON: {err.msg}")


def parse_sharegpt(record: object, origin: str) -> Conversation:
    """{"id", "conversations": [{"from": "human"|"gpt"|..., "value": str}]} -> Conversation."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise DataError(f"{origin}: not a ShareGPT record (needs a 'conversations' list)")
    messages = []
    for turn_index, turn in enumerate(record["conversations"]):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{origin}: turn {turn_index} needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(f"{origin}: turn {turn_index} has unknown role {turn['from']!r}")
        if not isinstance(turn["value"], str):
            raise DataError(f"{origin}: turn {turn_index} value is not a string")
        messages.append(Message(role, turn["value"]))
    return Conversation(id=str(record.get("id", origin)), messages=tuple(messages), origin=origin)


FORMATS: dict[str, Callable[[object, str], Conversation]] = {"sharegpt": parse_sharegpt}


def check_conversation(conv: Conversation) -> str | None:
    """Why a conversation cannot be trained on, or None when it can."""
    if not conv.messages:
        return "empty_conversation"
    if any(not m.content.strip() for m in conv.messages):
        return "empty_turn"
    if not any(m.role == "assistant" for m in conv.messages):
        return "no_assistant_turn"
    first = next(m.role for m in conv.messages if m.role != "system")
    if first != "user":
        return "assistant_before_user"
    return None


def _drop_or_raise(report: LoadReport, reason: str, origin: str, message: str, strict: bool) -> None:
    if strict:
        raise DataError(message)
    report.drop(reason, origin)


def load_source(cfg: DataSourceConfig) -> tuple[list[Conversation], LoadReport]:
    if cfg.format not in FORMATS:
        raise DataError(f"data.source.format: unknown format {cfg.format!r} (known: {', '.join(FORMATS)})")
    path = resolve_path(cfg.path)
    if not path.exists():
        raise DataError(f"data.source.path: {path} does not exist (data source '{cfg.name}')")
    parse = FORMATS[cfg.format]
    report = LoadReport(source=cfg.name)
    conversations: list[Conversation] = []
    for origin, record in _read_records(path):
        report.read += 1
        if isinstance(record, Exception):
            reason = "invalid_utf8" if "UTF-8" in str(record) else "invalid_json"
            _drop_or_raise(report, reason, origin, str(record), cfg.strict)
            continue
        try:
            conv = parse(record, origin)
        except DataError as err:
            reason = "unknown_role" if "unknown role" in str(err) else "malformed_record"
            _drop_or_raise(report, reason, origin, str(err), cfg.strict)
            continue
        problem = check_conversation(conv)
        if problem:
            _drop_or_raise(report, problem, origin, f"{origin}: {problem.replace('_', ' ')}", cfg.strict)
            continue
        conversations.append(conv)
    report.kept = len(conversations)
    if report.read and report.bad / report.read > cfg.max_bad_fraction:
        raise DataError(
            f"{path}: {report.bad} of {report.read} records are bad ({report.dropped}), more than "
            f"data.source.max_bad_fraction={cfg.max_bad_fraction}; first at {next(iter(report.examples.values()))}"
        )
    return conversations, report
