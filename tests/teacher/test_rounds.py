"""Choosing the teacher's prompts in rounds (ask, fine-tune, re-score the rest): the slices, k-center
around earlier picks, the loop with a stand-in trainer, and `collect --rounds` end to end on `tiny`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.teacher.collect import main
from src.teacher.rounds import RoundsSettings, collect_in_rounds, round_budgets, round_path, rounds_path
from src.teacher.select import SelectionError, pick_k_center, select
from tests.conftest import CACHE


@pytest.mark.parametrize("budget, rounds, slices", [(150, 3, [50, 50, 50]), (10, 3, [4, 3, 3]), (7, 2, [4, 3]),
                                                    (5, 1, [5]), (3, 3, [1, 1, 1])])
def test_round_budgets_split_the_budget_evenly(budget, rounds, slices):
    assert round_budgets(budget, rounds) == slices


@pytest.mark.parametrize("budget, rounds, message", [(3, 4, "more than --budget"), (3, 0, "at least 1")])
def test_round_budgets_refuse_a_round_with_nothing_to_choose(budget, rounds, message):
    with pytest.raises(SelectionError, match=message):
        round_budgets(budget, rounds)


def test_k_center_around_earlier_picks_on_a_line():
    """Earlier rounds' points count as picked: the farthest from them comes first, and no pick is drawn."""
    points = np.array([[0.0], [1.0], [5.0], [10.0]])
    chosen, gaps = pick_k_center(points, 4, seed=0, centers=np.array([[0.0]]))
    assert chosen == [3, 2, 1, 0] and gaps == [10.0, 5.0, 1.0, 0.0]
    chosen, gaps = pick_k_center(points, 2, seed=0, centers=np.array([[10.0], [0.0]]))
    assert chosen == [2, 1] and gaps == [5.0, 1.0]


@pytest.fixture(scope="module")
def tiny_handle():
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False, seed=0)


POOL = [(f"q{i}", text) for i, text in enumerate([
    "What is the capital of France?", "Name a prime number.", "Hi", "Tell me a very long story about a cat.",
    "Why is the sky blue?", "Write a haiku about rain.", "2 + 2 =", "List three colours."])]


def test_rounds_choose_disjoint_slices_and_rescore_with_each_rounds_student(tmp_path, tiny_handle):
    out = tmp_path / "chosen.json"
    opened, asked, trained = [], [], []

    def open_student(name):
        opened.append(name)
        return tiny_handle  # the stand-in "fine-tuned" student is the same model: the bookkeeping is tested

    def ask(ids, record):
        asked.append(list(ids))
        out.write_text(json.dumps([{"id": i} for i in ids]))

    def train(r):
        trained.append(r)
        return tmp_path / f"round{r}_checkpoint"

    plan = RoundsSettings(selector="uncertainty", budget=5, rounds=3, seed=0, student="tiny", round_train=[],
                          max_new_tokens=4)
    record = collect_in_rounds(POOL, plan, out, open_student, ask, train)
    per_round = record["per_round"]
    assert [len(r["chosen"]) for r in per_round] == [2, 2, 1] and [r["pool_size"] for r in per_round] == [8, 6, 4]
    assert len(set(record["chosen"])) == 5 and record["chosen"] == [i for r in per_round for i in r["chosen"]]
    assert [len(a) for a in asked] == [2, 4, 5] and asked[-1] == record["chosen"]  # each round asks all so far
    assert trained == [1, 2]  # no fine-tune after the last round
    assert opened == ["tiny", str(tmp_path / "round1_checkpoint"), str(tmp_path / "round2_checkpoint")]
    assert [r["student"] for r in per_round] == opened
    # round 1 is the one-shot choice; round 2 is the same student's next-highest entropies on the rest
    one_shot = select(POOL, "uncertainty", 4, handle=tiny_handle, student="tiny", max_new_tokens=4)
    assert per_round[0]["chosen"] == one_shot.chosen[:2] and per_round[1]["chosen"] == one_shot.chosen[2:4]
    assert json.loads(rounds_path(out).read_text()) == record
    assert all(round_path(out, r).exists() for r in (1, 2, 3))

    opened.clear()
    again = collect_in_rounds(POOL, plan, out, open_student, ask, train)
    assert opened == [] and again["chosen"] == record["chosen"]  # a rerun scores nothing again


def test_rounds_refuse_random(tmp_path):
    plan = RoundsSettings(selector="random", budget=2, rounds=2, seed=0, student="tiny", round_train=[])
    with pytest.raises(SelectionError, match="random does not read the student"):
        collect_in_rounds(POOL, plan, tmp_path / "x.json", None, None, None)


def _rounds_args(pool: Path, out: Path, store: Path, *extra: str) -> list[str]:
    return ["--prompts", str(pool), "--out", str(out), "--local", "tiny", "--cache-dir", CACHE, "--max-tokens", "8",
            "--keep-truncated", "--select", "diversity", "--budget", "4", "--rounds", "2", "--student", "tiny",
            "--round-train", "experiment=smoke", "--round-train", "tracker.mode=disabled",
            "--round-train", f"store_dir={store}", *extra]


def test_collect_in_rounds_fine_tunes_between_rounds_and_resumes(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in POOL))
    out, store = tmp_path / "chosen.json", tmp_path / "cells"
    main(_rounds_args(pool, out, store))
    capsys.readouterr()
    record = json.loads(rounds_path(out).read_text())
    assert [len(r["chosen"]) for r in record["per_round"]] == [2, 2]
    assert [r["id"] for r in json.loads(out.read_text())] == record["chosen"]  # the answers, in pick order
    checkpoint = Path(record["per_round"][1]["student"])
    assert checkpoint.name == "checkpoint" and (checkpoint / "config.json").exists()  # round 2's student
    results = json.loads((tmp_path / "chosen.rounds" / "round1" / "results.json").read_text())
    assert results["benchmarks"] == {} and results["data"]["load"]["kept"] == 2  # trained on round 1's answers
    assert checkpoint.parent.name == results["run_id"]
    assert json.loads((tmp_path / "chosen.collect.json").read_text())["selection"] == record

    main(_rounds_args(pool, out, store))  # resumed: nothing scored, asked or trained again
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["asked"] == 0 and summary["resumed"] == 4
    status = json.loads((tmp_path / "chosen.rounds" / "round1" / "status.json").read_text())
    assert status["state"] == "skipped"


@pytest.mark.parametrize("extra, message", [
    (["--select", "random", "--budget", "2", "--rounds", "2"], "needs --select uncertainty or diversity"),
    (["--select", "uncertainty", "--budget", "2", "--rounds", "2", "--student", "no_such_model"],
     "no conf/model/no_such_model.yaml"),
    (["--select", "uncertainty", "--budget", "2", "--rounds", "3", "--student", "tiny"], "more than --budget"),
    (["--rounds", "2"], "--rounds needs --select uncertainty or diversity"),
])
def test_collect_rounds_errors_name_the_flag(tmp_path, capsys, extra, message):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in POOL))
    with pytest.raises(SystemExit) as exit_info:
        main(["--prompts", str(pool), "--out", str(tmp_path / "x.json"), "--base-url", "http://127.0.0.1:9/v1",
              "--model", "echo", "--api-key-env", "", *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_collect_rounds_refuse_a_checkpoint_directory_as_student(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in POOL))
    with pytest.raises(SystemExit):
        main(["--prompts", str(pool), "--out", str(tmp_path / "x.json"), "--base-url", "http://127.0.0.1:9/v1",
              "--model", "echo", "--api-key-env", "", "--select", "diversity", "--budget", "2", "--rounds", "2",
              "--student", str(tmp_path)])
    assert "give a conf/model name, not the directory" in capsys.readouterr().err


def test_a_round_trains_on_the_answers_as_collected(tmp_path):
    """The fine-tune cell reads the answers unchanged: no HTML conversion (a reply may hold a tag), no
    English filter (the selector chose those prompts), strict parsing; its source name is the file's stem
    made safe for Hydra plus the content digest, and the user's overrides cannot undo data.amount=all."""
    from src.teacher.rounds import finetune_overrides
    from tests.conftest import run_config

    out = tmp_path / "my answers.v2.json"
    out.write_text(json.dumps([{"id": "a", "conversations": [
        {"from": "human", "value": "¿Qué es <div>?"}, {"from": "gpt", "value": "Un elemento: <div>hola</div>"}]}]))
    overrides = finetune_overrides("tiny", out, 1, ["experiment=smoke", "data.amount=1K"], cache_dir=CACHE)
    cfg = run_config(overrides)
    assert cfg.data.source.name.startswith("my_answers_v2_round1_") and cfg.data.amount is None  # all
    assert cfg.data.source.clean.html_to_markdown is False and cfg.data.source.clean.english_only is False
    assert cfg.data.source.strict is True and cfg.train.save_checkpoint is True
