import json

import pytest

from src.config import DataSourceConfig
from src.data.sources import DataError, load_source
from tests.conftest import FIXTURES


def source(path, **kw):
    return DataSourceConfig(name="t", path=str(path), **kw)


def test_sharegpt_roles_normalized():
    convs, report = load_source(source(FIXTURES / "sharegpt_small.json"))
    assert report.read == report.kept == 12 and report.dropped == {}
    roles = {m.role for c in convs for m in c.messages}
    assert roles == {"system", "user", "assistant"}
    assert convs[1].messages[0].role == "system"


def write_jsonl(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines))
    return path


GOOD = {"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "chatgpt", "value": "a"}]}


def test_bad_records_are_counted_not_silently_dropped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        GOOD, b"{not json", b"\xff\xfe bad utf8",
        {"id": "r", "conversations": [{"from": "robot", "value": "x"}]},
        {"id": "e", "conversations": []},
        {"id": "n", "conversations": [{"from": "human", "value": "only a question"}]},
        {"id": "w", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}]},
        GOOD,
    ])
    convs, report = load_source(source(path, max_bad_fraction=1.0))
    assert len(convs) == 2 and report.read == 8 and report.kept == 2
    assert report.dropped == {"invalid_json": 1, "invalid_utf8": 1, "unknown_role": 1, "empty_conversation": 1,
                              "no_assistant_turn": 1, "empty_turn": 1}
    assert report.examples["unknown_role"] == f"{path}:4"


def test_strict_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, b"{oops"])
    with pytest.raises(DataError, match=f"{path}:3: invalid JSON"):
        load_source(source(path, strict=True))


def test_too_many_bad_records_fail(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, b"{oops", b"{oops"])
    with pytest.raises(DataError, match="2 of 3 records are bad"):
        load_source(source(path, max_bad_fraction=0.5))


def test_missing_file_names_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(source(tmp_path / "nope.json"))
