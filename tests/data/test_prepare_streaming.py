"""Prepare at scale: the JSON list read a block at a time gives each record's exact bytes (and one
clear error for a cut or unreadable file), parsing and cleaning in the workers keep every count and
every byte, and the source's remembered hash follows any change of the file."""

import json
import os
import random
import subprocess
import sys

import pytest

from src import PROJECT_ROOT
from src.config import CleanConfig, DataConfig, DataSourceConfig
from src.data import prepare as prepare_module
from src.data.formats import records
from src.data.formats.records import DataError
from src.data.prepare import prepare
from src.data.sources import load_source
from src.data.template import TokenizerTemplate
from tests.data.test_prepare_parallel import ENV, _cache, _entry_bytes


def _value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice([1, -2.5e3, 123456789, 'a\\"b\u00e9\U0001F600', True, None, "", "x" * 20])
    if roll < 0.6:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}\u00e9": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def test_json_list_read_in_tiny_blocks_gives_every_record_and_errors_on_any_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BLOCK", 7)  # every record, string, number and escape straddles a block
    rng = random.Random(0)
    path = tmp_path / "d.json"
    for _ in range(1500):
        items = [_value(rng) for _ in range(rng.randint(0, 5))]
        space = rng.choice(["", " ", "\n", " \n\t "])
        text = "[" + space + ("," + space).join(json.dumps(i, ensure_ascii=rng.random() < 0.5) for i in items)
        text += space + "]" + space
        path.write_bytes(text.encode())
        assert [json.loads(raw) for _, raw in records.read_raw_path(path)] == items, text
        cut = text.encode().rstrip()[:-rng.randint(1, len(text.encode().rstrip()) - 1)]
        path.write_bytes(cut)
        with pytest.raises(DataError, match=f"^{path}:\\d+: invalid JSON"):
            list(records.read_path(path))


def test_a_cut_json_list_names_the_line_where_it_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BLOCK", 64)
    good = {"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    text = "[\n" + ",\n".join(json.dumps(good | {"id": str(i)}) for i in range(50)) + "\n]"
    path = tmp_path / "d.json"
    cuts = {text.index('"id": "30"') + 12: 32, text.index('"id": "31"') + 3: 33, len(text) - 2: 51}
    for cut, line in cuts.items():  # inside records 30 and 31, and just before the closing "]"
        path.write_text(text[:cut])
        with pytest.raises(json.JSONDecodeError) as whole:
            json.loads(text[:cut])
        with pytest.raises(DataError) as streamed:
            load_source(DataSourceConfig(name="t", path=str(path)))
        assert whole.value.lineno == line
        assert str(streamed.value) == f"{path}:{line}: invalid JSON: {whole.value.msg}"  # as for the whole file


def test_an_unreadable_source_is_one_line_naming_the_file(tmp_path):
    folder = tmp_path / "sharegpt.json"
    folder.mkdir()  # a path that exists and cannot be read as a file
    proc = subprocess.run([sys.executable, "-m", "src.data", "prepare", "--source", "sharegpt", "--path", str(folder),
                           "--model", "tiny", "--amounts", "100", "--cache-dir", _cache(tmp_path / "c")],
                          cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {folder}: cannot read data source: Is a directory"


def _messy_source(path, n: int = 400) -> None:
    """ShareGPT records with everything cleaning counts: HTML, duplicates, other languages, trailing
    questions, empty turns, unknown roles, records that are not records."""
    rng = random.Random(3)
    out = []
    for i in range(n):
        question = rng.choice(["how do I sort a list in python", "what is the capital of france",
                               f"explain the {i} th example of this", "¿cómo estás? ¿qué tal el día de hoy, amigo?",
                               "Как дела у тебя сегодня"])
        reply = " ".join(rng.choice(["the", "list", "sorted", "value", "is", "a"]) for _ in range(rng.randint(3, 80)))
        if rng.random() < 0.3:
            reply = f"<p>{reply}</p><ol><li>one</li><li>two</li></ol><pre><code class=\"language-python\">x = 1</code></pre>"
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]
        roll = rng.random()
        if roll < 0.05:
            turns.append({"from": "human", "value": "and then?"})
        elif roll < 0.08:
            turns[1]["value"] = "<p></p>"
        elif roll < 0.1:
            turns[0]["from"] = "robot"
        out.append({"id": f"m{i}", "conversations": turns} if rng.random() > 0.02 else ["not", "a", "record"])
    path.write_text(json.dumps(out))


def test_workers_clean_with_the_same_counts_and_bytes(tokenizer, tmp_path, monkeypatch):
    from src.data import sources

    monkeypatch.setattr(sources, "BATCH_RECORDS", 7)  # many batches in flight
    path = tmp_path / "messy.json"
    _messy_source(path)
    clean = CleanConfig(html_to_markdown=True, trim_trailing_user=True, english_only=True, dedup_first_user=True)
    source = DataSourceConfig(name="messy", format="sharegpt", path=str(path), clean=clean, max_bad_fraction=0.5)
    _, expected = load_source(source)
    assert {"duplicate_first_user_turn", "not_english", "malformed_record", "unknown_role", "empty_turn"} <= set(
        expected.dropped) and expected.changed["html_converted"] > 10
    fmt = TokenizerTemplate(tokenizer)
    cfg = DataConfig(source=source, amount=None)
    runs = {}
    for workers, chunk in ((1, 64), (2, 1), (2, 5)):
        cache = tmp_path / f"w{workers}c{chunk}"
        data = prepare(cfg, tokenizer, fmt, 128, 2048, str(cache), workers=workers, chunk=chunk)
        assert data.load_report == expected.as_dict()  # every step's count, exact, whoever cleaned
        runs[workers, chunk] = _entry_bytes(cache)
    assert all(files == runs[1, 64] for files in runs.values())


def test_the_remembered_hash_follows_any_change_of_the_file(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "SETTLED_NS", 0)  # remember a file written just now
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "tea?"},
                                                              {"from": "gpt", "value": "yes"}]}]))
    source = DataSourceConfig(name="t", path=str(path))
    memo = tmp_path / "memo"
    first = prepare_module.source_fingerprint(source, memo)
    (note,) = memo.iterdir()
    remembered = json.loads(note.read_text())
    assert remembered["sha256"] == first["sha256"] == prepare_module.source_fingerprint(source)["sha256"]
    note.write_text(json.dumps(remembered | {"sha256": "0" * 64}))  # a hit reads the memo, not the file
    assert prepare_module.source_fingerprint(source, memo) == {"sha256": "0" * 64}
    stat = path.stat()
    path.write_text(path.read_text().replace("tea", "tee"))  # the same size, the old mtime put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    again = prepare_module.source_fingerprint(source, memo)
    assert again == prepare_module.source_fingerprint(source) != first  # ctime moved: hashed again


def test_a_file_changed_just_now_is_not_remembered(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[]")
    prepare_module.source_fingerprint(DataSourceConfig(name="t", path=str(path)), tmp_path / "memo")
    assert not (tmp_path / "memo").exists()
