"""Property-based fuzzing of every data loader: whatever a file holds (random bytes, random JSON,
records that are almost right), loading either succeeds with every record counted, or stops with a
DataError naming the file. Never a KeyError/TypeError/AttributeError/IndexError traceback.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config import CleanConfig, DataSourceConfig, MixPart
from src.data import sources
from src.data.formats import FORMATS, FormatError
from src.data.sources import DataError, load_source

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def near(**fields):
    """A dict with these keys, each either a plausible value or anything at all, plus noise keys."""
    noise = {k: json_values for k in ("noise", "id") if k not in fields}
    return st.fixed_dictionaries({k: v | json_values for k, v in fields.items()}, optional=noise)


texts = st.text(max_size=30)
# a last line of trouble: torn JSON, invalid UTF-8, an integer too long for Python, nesting too deep
JUNK = [b"", b"{", b"\xff\xfe", b"[1,", b"null", b"1" * 5000, b"[" * 5000 + b"]" * 5000]
turn = near(**{"from": st.sampled_from(["human", "gpt", "user", "system", "robot", "Bard"]), "value": texts})
RECORDS = {
    "sharegpt": near(conversations=st.lists(turn | json_values, max_size=4)),
    "hc3": near(question=texts, chatgpt_answers=st.lists(texts | json_values, max_size=3),
                human_answers=st.lists(texts, max_size=2)),
    "discord": near(prompt=texts, response=texts),
    "messages": near(messages=st.lists(near(role=st.sampled_from(["user", "assistant", "system", "bot"]),
                                            content=texts) | json_values, max_size=4)),
    "nq_synthetic": near(question=texts, answer=st.lists(texts | json_values, max_size=3)),
    "koala_prompts": near(prompt=texts),
}


def write_file(directory: Path, records: list, as_list: bool, junk: bytes) -> Path:
    if as_list:
        data = json.dumps(records).encode()
    else:
        data = b"\n".join(json.dumps(r).encode() for r in records) + b"\n" + junk
    path = directory / "data.json"
    path.write_bytes(data)
    return path


def load(fmt: str, path: Path, strict: bool, clean: CleanConfig):
    """What a run does with this source: load_source, or (prompt-only sets) read and parse."""
    cfg = DataSourceConfig(name="fuzz", format=fmt, path=str(path), strict=strict, max_bad_fraction=0.5,
                           clean=clean)
    if FORMATS[fmt].trainable:
        return load_source(cfg)
    reader = FORMATS[fmt]
    out = []
    for origin, record in reader.read(cfg):
        try:
            if isinstance(record, FormatError):
                raise record
            out += reader.parse(record, origin, cfg)
        except FormatError as err:
            assert str(err).startswith(str(path)), err  # names the file (and line or index)
    return out, None


cleanings = st.builds(CleanConfig, html_to_markdown=st.booleans(), english_only=st.booleans(),
                      dedup_first_user=st.booleans(), trim_trailing_user=st.booleans())


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_structured_records_load_or_fail_with_a_data_error(fmt):
    @FUZZ
    @given(records=st.lists(RECORDS[fmt] | json_values, max_size=6), as_list=st.booleans(),
           junk=st.sampled_from(JUNK), strict=st.booleans(), clean=cleanings)
    def check(records, as_list, junk, strict, clean):
        with tempfile.TemporaryDirectory() as directory:
            path = write_file(Path(directory), records, as_list, junk)
            try:
                conversations, report = load(fmt, path, strict, clean)
            except DataError as err:
                assert str(path) in str(err), err
                return
            if report is not None and fmt != "hc3":  # (HC3 makes one conversation per answer)
                assert report.read == report.kept + sum(report.dropped.values())  # every record counted
            assert all(isinstance(m.content, str) for c in conversations for m in c.messages)

    check()


@FUZZ
@given(data=st.binary(max_size=200), fmt=st.sampled_from(sorted(RECORDS)), strict=st.booleans())
def test_random_bytes_load_or_fail_with_a_data_error(data, fmt, strict):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.jsonl"
        path.write_bytes(data)
        try:
            load(fmt, path, strict, CleanConfig())
        except DataError as err:
            assert str(path) in str(err), err


@FUZZ
@given(caps=st.lists(st.none() | st.integers(0, 3), min_size=2, max_size=2),
       records=st.lists(RECORDS["discord"] | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
                        max_size=5))
def test_mixture_loads_or_fails_with_a_data_error(caps, records):
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        path = write_file(Path(directory), records, as_list=False, junk=b"")
        parts = {"a": DataSourceConfig(name="a", format="discord", path=str(path), max_bad_fraction=1.0),
                 "b": DataSourceConfig(name="b", format="sharegpt", path=str(path), max_bad_fraction=1.0)}
        patch.setattr(sources, "source_config_by_name", parts.__getitem__)
        cfg = DataSourceConfig(name="mix", format="mix", mix=[MixPart("a", caps[0]), MixPart("b", caps[1])])
        conversations, report = load_source(cfg)
        assert report.read == 2 * len(records)
        assert len(conversations) == sum(min(p["kept"], cap if cap is not None else p["kept"])
                                         for p, cap in zip(report.parts.values(), caps, strict=True))


def test_unknown_mixture_part_is_a_config_error():
    from src.config import ConfigError

    cfg = DataSourceConfig(name="mix", format="mix", mix=[MixPart("no_such_source")])
    with pytest.raises(ConfigError, match="no data source config .*no_such_source.yaml"):
        load_source(cfg)


@FUZZ
@given(records=st.lists(RECORDS["koala_prompts"] | RECORDS["sharegpt"] | json_values, max_size=5),
       as_list=st.booleans(), junk=st.sampled_from(JUNK))
def test_collect_prompt_files_load_or_fail_naming_the_file(records, as_list, junk):
    from src.teacher.collect import CollectError, load_prompts

    with tempfile.TemporaryDirectory() as directory:
        path = write_file(Path(directory), records, as_list, junk)
        try:
            prompts = load_prompts(path)
        except CollectError as err:
            assert str(err).startswith(str(path)), err
            return
        assert all(isinstance(p.prompt, str) and p.prompt.strip() for p in prompts)


@FUZZ
@given(records=st.lists(near(id=texts, prompt=texts, reference=texts) | json_values, max_size=5),
       junk=st.sampled_from(JUNK))
def test_judge_items_load_or_fail_naming_the_line(records, junk):
    from src.benchmarks.judge import load_items

    with tempfile.TemporaryDirectory() as directory:
        path = write_file(Path(directory), records, False, junk)
        try:
            items = load_items(str(path))
        except DataError as err:
            assert str(err).startswith(f"{path}:"), err
            return
        assert all(isinstance(i["prompt"], str) for i in items)


@pytest.mark.parametrize(("content", "problem"), [
    (b"[" + b"1" * 5000 + b"]", "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"),
    (b"[" * 5000 + b"]" * 5000, "invalid JSON: nested too deeply"),
])
def test_hostile_json_lists_are_data_errors_naming_the_file(content, problem, tmp_path):
    """What the fuzzer found: json.loads raises ValueError / RecursionError, not JSONDecodeError."""
    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: {problem}")):
        load_source(DataSourceConfig(name="t", format="sharegpt", path=str(path)))
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_bytes(json.dumps(GOOD).encode() + b"\n" + content[1:] + b"\n")
    conversations, report = load_source(DataSourceConfig(name="t", format="sharegpt", path=str(jsonl),
                                                         max_bad_fraction=1.0))
    assert (len(conversations), report.dropped, report.examples["invalid_json"]) == (1, {"invalid_json": 1}, f"{jsonl}:2")


GOOD = {"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
