"""Choosing which prompts to pay the teacher for: each selector on hand-made pools with a known answer,
the student's scores against a direct computation, and `collect --select` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src.teacher.collect import main
from src.teacher.select import (
    SelectionError,
    pick_highest,
    pick_k_center,
    pick_random,
    prompt_embeddings,
    reply_entropy,
    select,
    selection_path,
)
from tests.conftest import CACHE
from tests.helpers.teacher_servers import FaultServer


def test_random_is_a_seeded_permutation_and_nested():
    assert pick_random(10, 4, seed=0) == pick_random(10, 4, seed=0)
    assert pick_random(10, 10, seed=0)[:4] == pick_random(10, 4, seed=0)  # a smaller budget is a prefix
    assert sorted(pick_random(10, 10, seed=3)) == list(range(10))
    assert pick_random(10, 10, seed=0) != pick_random(10, 10, seed=1)


def test_uncertainty_picks_the_highest_scores_ties_in_pool_order():
    assert pick_highest([0.1, 0.9, 0.5, 0.9, 0.7], 3) == [1, 3, 4]


def test_k_center_covers_every_cluster_before_any_second_pick():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    points = np.concatenate([c + rng.normal(scale=1.0, size=(5, 2)) for c in centers])  # 4 clusters of 5
    for seed in range(5):
        picked, gaps = pick_k_center(points, 4, seed)
        assert sorted(i // 5 for i in picked) == [0, 1, 2, 3]  # one from each cluster
        assert gaps[0] is None and all(g > 90 for g in gaps[1:])
        longer, longer_gaps = pick_k_center(points, 8, seed)
        assert longer[:4] == picked  # nested
        assert all(a >= b for a, b in zip(longer_gaps[1:], longer_gaps[2:], strict=False))  # farthest first
        assert max(longer_gaps[4:]) < 10  # then within clusters


def test_k_center_on_a_line_has_the_known_order():
    points = np.array([[0.0], [1.0], [2.0], [10.0]])
    picked, gaps = pick_k_center(points, 4, seed=0)
    first = picked[0]
    # from any start, the next pick is the far end of the line, then the point that halves the gap
    expected = {0: [0, 3, 2, 1], 1: [1, 3, 0, 2], 2: [2, 3, 0, 1], 3: [3, 0, 1, 2]}[first]
    assert picked == expected


def test_k_center_never_picks_a_point_twice_among_duplicates():
    points = np.array([[0.0], [0.0], [0.0], [5.0]])  # once 0 and 3 are in, every distance left is 0
    picked, gaps = pick_k_center(points, 4, seed=0)
    assert sorted(picked) == [0, 1, 2, 3]
    assert gaps[2:] == [0.0, 0.0]


def test_a_saved_selection_scored_on_other_reply_lengths_is_not_reused(tmp_path, tiny_handle):
    pairs = [(f"p{i}", text) for i, text in enumerate(PROMPTS)]
    path = tmp_path / "out.selection.json"
    opened = []

    def open_student():
        opened.append(1)
        return tiny_handle

    from src.teacher.select import load_or_select
    first, reused = load_or_select(pairs, "uncertainty", 2, 0, "tiny", path, open_student, max_new_tokens=4)
    assert not reused and first.student_max_tokens == 4
    _, reused = load_or_select(pairs, "uncertainty", 2, 0, "tiny", path, open_student, max_new_tokens=4)
    assert reused and len(opened) == 1
    again, reused = load_or_select(pairs, "uncertainty", 2, 0, "tiny", path, open_student, max_new_tokens=6)
    assert not reused and again.student_max_tokens == 6 and len(opened) == 2


@pytest.fixture(scope="module")
def tiny_handle():
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    return load_handle(model_config_by_name("tiny"), CACHE, torch.device("cpu"), trained=False, seed=0)


PROMPTS = ["What is the capital of France?", "Name a prime number.", "Hi", "Tell me a very long story about a cat."]


def test_reply_entropy_equals_a_direct_computation(tiny_handle):
    h = tiny_handle
    got = reply_entropy(h, PROMPTS, max_new_tokens=6, batch_size=3)
    replies = h.generate([h.chat_prompt(p) for p in PROMPTS], 6, chat=True)
    for prompt, reply, score in zip(PROMPTS, replies, got, strict=True):
        context = h.chat_prompt(prompt)
        n_context = len(h.encode(context, chat=True))
        whole = h.encode(context + reply, chat=True)
        with torch.no_grad():
            logits = h.model(torch.tensor([whole])).logits[0].float()
        probs = torch.softmax(logits[n_context - 1: max(len(whole) - 1, n_context)], dim=-1)
        expected = float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).mean())
        assert score == pytest.approx(expected, rel=1e-4)
        assert 0 < score <= np.log(h.model.config.vocab_size) + 1e-4


def test_batched_embeddings_equal_one_prompt_at_a_time(tiny_handle):
    h = tiny_handle
    batched = prompt_embeddings(h, PROMPTS, batch_size=4)
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([h.encode(h.chat_prompt(prompt), chat=True)])
        with torch.no_grad():
            alone = h.model.base_model(input_ids=ids).last_hidden_state[0].mean(0).double().numpy()
        np.testing.assert_allclose(batched[i], alone, atol=1e-5)


def test_select_records_its_choice_and_is_deterministic(tiny_handle):
    pairs = [(f"p{i}", text) for i, text in enumerate(PROMPTS)]
    by_entropy = select(pairs, "uncertainty", 2, handle=tiny_handle, student="tiny", max_new_tokens=4)
    scores = [by_entropy.scores[pid] for pid, _ in pairs]
    assert by_entropy.chosen == [pairs[i][0] for i in pick_highest(scores, 2)]
    spread = [select(pairs, "diversity", 3, seed=1, handle=tiny_handle, student="tiny").chosen for _ in range(2)]
    assert spread[0] == spread[1] and len(set(spread[0])) == 3
    assert select(pairs, "random", 4, seed=2).student is None
    with pytest.raises(SelectionError, match="larger than the pool"):
        select(pairs, "random", 5)
    with pytest.raises(SelectionError, match="needs a student"):
        select(pairs, "diversity", 2)
    with pytest.raises(SelectionError, match="not known"):
        select(pairs, "loudest", 2)


def _args(prompts, out, *extra):
    return ["--prompts", str(prompts), "--out", str(out), "--model", "echo", "--api-key-env", "",
            "--retries", "0", *extra]


def test_collect_asks_only_the_selection_and_resumes_it(tmp_path, capsys):
    prompts = tmp_path / "pool.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(8))
                       + json.dumps({"id": "dup", "prompt": "Question 0"}) + "\n")  # dropped before choosing
    out = tmp_path / "chosen.json"
    with FaultServer() as server:
        main(_args(prompts, out, "--base-url", server.url, "--select", "random", "--budget", "3",
                   "--select-seed", "4"))
        asked = list(server.prompts)
    chosen = [f"q{i}" for i in pick_random(8, 3, seed=4)]
    assert [r["id"] for r in json.loads(out.read_text())] == chosen  # in pick order: budgets nest
    assert sorted(asked) == sorted(f"question {c[1:]}" for c in chosen)
    record = json.loads((tmp_path / "chosen.collect.json").read_text())
    assert record["selection"]["chosen"] == chosen and record["selection"]["pool_size"] == 8
    saved = selection_path(out).read_text()
    with FaultServer() as server:  # a rerun reuses the saved choice and asks nothing again
        main(_args(prompts, out, "--base-url", server.url, "--select", "random", "--budget", "3",
                   "--select-seed", "4"))
        assert server.prompts == []
    assert selection_path(out).read_text() == saved


@pytest.mark.parametrize("extra, message", [
    (["--budget", "3"], "only apply with --select"),
    (["--select", "random"], "needs --budget"),
    (["--select", "uncertainty", "--budget", "2"], "needs --student"),
    (["--select", "random", "--budget", "99"], "larger than the pool"),
])
def test_collect_select_errors_name_the_flag(tmp_path, capsys, extra, message):
    prompts = tmp_path / "pool.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(4)))
    with pytest.raises(SystemExit) as exit_info:
        main(_args(prompts, tmp_path / "x.json", "--base-url", "http://127.0.0.1:9/v1", *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
