"""Every source of the study in its upstream format: exact parses and exact cleaning counts."""

import json

import pytest

from src.config import CleanConfig, DataSourceConfig, MixPart
from src.data.sources import DataError, load_source
from tests.conftest import FIXTURES


def source(fmt, path, **kw):
    return DataSourceConfig(name="t", format=fmt, path=str(path), **kw)


SHAREGPT_CLEAN = CleanConfig(html_to_markdown=True, english_only=True, dedup_first_user=True)


def test_sharegpt_html_dump_cleaned_with_every_step_counted():
    with pytest.raises(DataError, match=r"1 of 6 records are bad \({'empty_turn': 1}\).*first at .*html.json\[5\]"):
        load_source(source("sharegpt", FIXTURES / "sharegpt_html.json", clean=SHAREGPT_CLEAN))
    convs, report = load_source(source("sharegpt", FIXTURES / "sharegpt_html.json", clean=SHAREGPT_CLEAN,
                                       max_bad_fraction=0.2))
    assert [c.id for c in convs] == ["sg_1", "sg_2", "sg_5"]
    assert convs[0].messages[1].content == "Use `reversed()` or slicing:\n\n```\nxs[::-1]\n```"
    assert convs[1].messages[1].content == "1. Red\n2. Blue"
    assert [m.role for m in convs[2].messages] == ["system", "user", "assistant"]  # the cut-off question trimmed
    assert report.read == 6 and report.kept == 3
    assert report.dropped == {"duplicate_first_user_turn": 1, "not_english": 1, "empty_turn": 1}
    assert report.changed == {"html_converted": 5, "trailing_user_turn_trimmed": 1}  # sg_1-4 and sg_6 hold HTML
    assert report.examples["duplicate_first_user_turn"].endswith("sharegpt_html.json[2]")


def test_sharegpt_without_cleaning_keeps_html_and_duplicates():
    convs, report = load_source(source("sharegpt", FIXTURES / "sharegpt_html.json",
                                       clean=CleanConfig(trim_trailing_user=False), max_bad_fraction=1.0))
    assert len(convs) == 6 and convs[0].messages[1].content.startswith("<p>")


def test_hc3_one_example_per_chatgpt_answer_and_subsets():
    convs, report = load_source(source("hc3", FIXTURES / "hc3"))
    assert [(c.id, c.messages[1].content) for c in convs] == [
        ("0_0", "A bond is a debt security."), ("0_1", "It is a loan to an issuer."),
        ("1_0", "Rayleigh scattering of sunlight.")]
    assert report.read == 2
    finance, _ = load_source(source("hc3", FIXTURES / "hc3", subsets=["finance"]))
    assert [c.messages[0].content for c in finance] == ["What is a bond?", "What is a bond?"]
    with pytest.raises(DataError, match="unknown HC3 subset 'physics'"):
        load_source(source("hc3", FIXTURES / "hc3", subsets=["physics"]))


def test_discord_field_mapping_and_bad_line_counted():
    convs, report = load_source(source("discord", FIXTURES / "discord.jsonl", max_bad_fraction=0.5,
                                       fields={"prompt": "input", "response": "output"}))
    assert [(c.messages[0].content, c.messages[1].content) for c in convs] == [
        ("Tell me a joke.", "Why did the chicken cross the road?"), ("What is 2+2?", "4")]
    assert report.dropped == {"malformed_record": 1}
    with pytest.raises(DataError, match=r"discord.jsonl:3: field 'output' missing"):
        load_source(source("discord", FIXTURES / "discord.jsonl", strict=True,
                           fields={"prompt": "input", "response": "output"}))


def test_nq_synthetic_pairs_become_short_answers():
    convs, _ = load_source(source("nq_synthetic", "data/nq/nq_open_shots.jsonl"))
    assert len(convs) == 5
    assert convs[0].messages[0].content == "who wrote the novel moby dick?"
    assert convs[0].messages[1].content == "Herman Melville"


def test_koala_prompts_are_not_trainable():
    with pytest.raises(DataError, match="holds prompts only"):
        load_source(source("koala_prompts", "data/demo/prompts.jsonl"))


def test_messages_jsonl_with_unknown_role_counted():
    convs, report = load_source(source("messages", FIXTURES / "messages.jsonl", max_bad_fraction=0.5))
    assert len(convs) == 1 and convs[0].messages[1].content == "Hello!"
    assert report.dropped == {"unknown_role": 1}


def test_hub_dataset_through_datasets_with_field_mapping(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"q": f"Q{i}", "a": f"A{i}"}) + "\n" for i in range(4)))
    convs, report = load_source(source("hub", path, fields={"prompt": "q", "response": "a"}))
    assert [(c.messages[0].content, c.messages[1].content) for c in convs] == [(f"Q{i}", f"A{i}") for i in range(4)]
    with pytest.raises(DataError, match="cannot load dataset"):
        load_source(source("hub", "no-such-org/no-such-dataset", fields={"messages": "messages"}))


def test_mixture_caps_parts_and_counts_each(monkeypatch):
    parts = {"a": source("sharegpt", FIXTURES / "sharegpt_small.json"), "b": source("hc3", FIXTURES / "hc3")}
    monkeypatch.setattr("src.data.sources.source_config_by_name", lambda name: parts[name])
    mix = DataSourceConfig(name="mix", format="mix", mix=[MixPart("a", max_examples=5), MixPart("b")])
    convs, report = load_source(mix)
    assert len(convs) == 5 + 3
    assert report.dropped == {"a/over_cap": 7}
    assert report.parts["a"]["taken"] == 5 and report.parts["b"]["kept"] == 3


def test_english_heuristic_on_hand_picked_queries():
    from src.data.clean import looks_english

    assert looks_english("How do I reverse a list in Python?", 0.9)
    assert looks_english("Sort this: 3 1 2", 0.9)  # short: script alone decides
    assert not looks_english("Как дела? Расскажи о погоде.", 0.9)
    assert not looks_english("¿Cómo puedo ordenar una lista de números en Python sin usar ninguna función?", 0.9)
    assert not looks_english("Wie kann ich eine Liste in Python umdrehen, ohne eine Schleife zu benutzen?", 0.9)


def test_code_block_language_is_kept():
    from src.data.clean import html_to_markdown

    html = '<p>Try:</p><pre><code class="language-python">print(1)\n</code></pre>'
    assert html_to_markdown(html) == "Try:\n\n```python\nprint(1)\n```"


def test_invalid_utf8_inside_a_json_list_costs_one_record(tmp_path):
    good = json.dumps({"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    bad = good.replace('"a"}]', '"\\u00e9 X"}]').encode().replace(b"X", b"\xff")
    path = tmp_path / "d.json"
    path.write_bytes(b"[\n" + good.encode() + b",\n" + bad + b",\n" + good.encode() + b"\n]")
    convs, report = load_source(source("sharegpt", path, max_bad_fraction=0.5))
    assert len(convs) == 2 and report.dropped == {"invalid_utf8": 1}
    assert report.examples["invalid_utf8"].endswith("d.json[1]")
