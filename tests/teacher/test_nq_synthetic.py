"""NQ-synthetic: prompt with 5 random seeds, parse, validate, dedup; exact counts against a scripted server."""

from __future__ import annotations

import json

from src import PROJECT_ROOT
from src.config import DataSourceConfig
from src.data.sources import load_source
from src.teacher.clients import HttpTeacher, Sampling
from src.teacher.nq_synthetic import QA, build, dedup_key, load_seeds, main, parse_pairs
from tests.helpers.teacher_servers import FaultServer

SEEDS = PROJECT_ROOT / "data" / "nq_synthetic" / "seeds.jsonl"

# One scripted reply: 2 new pairs, one duplicate of another, one seed, one of an excluded set, one
# with an over-long answer, one whose answer is in its question, and chatter that is not a pair.
REPLY = """Sure! Here are new ones:

Q: what is the capital of peru?
A: Lima

1. Question: who wrote the novel war and peace
   Answer: Leo Tolstoy

Q: What is the capital of "Peru"
A: Lima.

Q: what is the capital of portugal?
A: Lisbon

Q: what is the chemical symbol for silver
A: Ag

Q: who sailed across the atlantic in 1492 and landed in the americas
A: it was the explorer christopher columbus working for spain

Q: what color is the green lantern
A: green

I hope these help."""


def teacher(url: str) -> HttpTeacher:
    return HttpTeacher(url, "scripted", api_key_env=None, timeout=10, max_retries=1, backoff=0.01, concurrency=2)


def test_parse_pairs_accepts_common_layouts():
    assert parse_pairs(REPLY)[:2] == [("what is the capital of peru?", "Lima"),
                                     ("who wrote the novel war and peace", "Leo Tolstoy")]
    assert len(parse_pairs(REPLY)) == 7


def test_build_counts_every_pair_and_shows_five_seeds(tmp_path):
    seeds = load_seeds(SEEDS)
    exclude = frozenset({"what is the chemical symbol for silver"})
    with FaultServer(responder=lambda prompt: REPLY) as server:
        pairs, stats = build(seeds, teacher(server.url), n=100, sampling=Sampling(max_tokens=64, temperature=1.0),
                             max_requests=3, round_size=2, exclude=exclude)
        prompts = list(server.prompts)
    assert pairs == [QA("what is the capital of peru", ("Lima",)), QA("who wrote the novel war and peace", ("Leo Tolstoy",))]
    assert (stats.requests, stats.pairs_parsed, stats.kept) == (3, 21, 2)
    assert stats.invalid == {"answer_length": 3, "answer_in_question": 3}
    assert (stats.duplicate_of_seed, stats.in_excluded, stats.duplicate) == (3, 3, 1 + 2 * 3)
    assert len(prompts) == 3 and all(p.count("\nA: ") == 5 for p in prompts)
    seed_questions = {f"Q: {s.question}?" for s in seeds}
    assert all(sum(line in seed_questions for line in p.splitlines()) == 5 for p in prompts)


def test_the_prompts_of_a_round_are_never_the_same_while_orders_are_left():
    """Five seeds have 120 orders: a round of 100 requests drawn at random would repeat one (it did, for
    this seed, before), and the repeat gets the same reply under the round's one sampling seed."""
    import random

    from src.teacher.nq_synthetic import build_prompt, distinct_shots

    seeds = load_seeds(SEEDS)[:5]
    plain = random.Random(0)
    assert len({build_prompt(plain.sample(seeds, 5), 5) for _ in range(100)}) < 100  # what chance alone gives
    rounds = distinct_shots(random.Random(0), seeds, 100)
    assert len({build_prompt(shots, 5) for shots in rounds}) == 100
    assert all(sorted(qa.question for qa in shots) == sorted(qa.question for qa in seeds) for shots in rounds)
    more = distinct_shots(random.Random(0), seeds, 130)  # more requests than orders: all 120, then repeats
    assert len({tuple(qa.question for qa in shots) for shots in more}) == 120 and len(more) == 130


def test_cli_writes_loadable_sets_and_records_the_prompt(tmp_path):
    with FaultServer(responder=lambda prompt: REPLY) as server:
        main(["--seeds", str(SEEDS), "--n", "2", "--out-dir", str(tmp_path), "--base-url", server.url,
              "--model", "scripted", "--api-key-env", "", "--temperature", "0.7", "--round-size", "1"])
        assert sum(server.requests.values()) == 1  # 2 pairs came from the first reply: no second request
    lines = [json.loads(line) for line in (tmp_path / "nq_synthetic.jsonl").read_text().splitlines()]
    assert lines == [{"question": "what is the capital of peru", "answer": ["Lima"]},
                     {"question": "who wrote the novel war and peace", "answer": ["Leo Tolstoy"]}]
    conversations, report = load_source(DataSourceConfig(name="nq_synthetic", path=str(tmp_path / "nq_synthetic.json"),
                                                         strict=True))
    assert report.kept == 2 and conversations[0].messages[1].content == "Lima"
    meta = json.loads((tmp_path / "build.json").read_text())
    assert meta["temperature"] == 0.7 and "{examples}" in meta["prompt_template"] and meta["stats"]["kept"] == 2


def test_shipped_demo_set_is_valid_and_disjoint_from_the_evaluation_set():
    folder = PROJECT_ROOT / "data" / "nq_synthetic"
    built = load_seeds(folder / "nq_synthetic.jsonl", minimum=1)
    evaluation = {dedup_key(qa.question) for qa in load_seeds(PROJECT_ROOT / "data" / "nq" / "nq_open_demo.jsonl")}
    seeds = {dedup_key(qa.question) for qa in load_seeds(SEEDS)}
    questions = [dedup_key(qa.question) for qa in built]
    assert len(questions) == len(set(questions)) >= 20
    assert not (set(questions) & (evaluation | seeds))
    meta = json.loads((folder / "build.json").read_text())
    assert meta["stats"]["kept"] == len(built)


def test_seed_files_are_read_as_nq_open_and_bad_lines_name_file_and_line(tmp_path):
    import pytest

    from src.data.formats.nq import read_nq
    from src.teacher.collect import CollectError

    assert load_seeds(SEEDS) == [QA(r.question, r.answers) for r in read_nq(SEEDS)]  # seeds are normalized already
    good = '{"question": "Who wrote Emma?", "answer": ["Jane Austen"]}\n'
    for body, problem in (("{torn\n", "invalid JSON"), ('{"question": "q"}\n', "field 'answer' missing"),
                          ('{"question": "q", "answer": []}\n', "'answer' needs at least one string")):
        path = tmp_path / "seeds.jsonl"
        path.write_text(good + "\n" + body)
        with pytest.raises(CollectError, match=f"seeds.jsonl:3: {problem}"):
            load_seeds(path, minimum=0)
    path.write_text(good)
    assert load_seeds(path, minimum=1) == [QA("who wrote emma", ("Jane Austen",))]
    with pytest.raises(CollectError, match="1 seed pairs; at least 5 are needed"):
        load_seeds(path)
