"""Metrics on hand-checked cases, and code execution that contains what it runs."""

import pytest

from src.benchmarks.execution import run_program
from src.benchmarks.humaneval import build_program, load_problems, pass_at_k
from src.benchmarks.nq import exact_match, extract_answer, f1_score, normalize_answer
from src.benchmarks.style import marker_rates


def test_squad_normalization_and_em():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Nile.", ["Nile", "Nile River"]) == 1.0
    assert exact_match("Amazon", ["Nile"]) == 0.0
    assert exact_match("Leonardo", ["Leonardo da Vinci", "Leonardo"]) == 1.0


def test_f1_over_every_gold():
    # pred "george washington carver" vs gold "george washington": P=2/3, R=1 -> F1 = 0.8
    assert f1_score("George Washington Carver", ["John Adams", "George Washington"]) == pytest.approx(0.8)
    assert f1_score("blue", ["red"]) == 0.0


def test_extract_answer_from_chatty_output():
    assert extract_answer(" Paris\nQ: what is") == "Paris"
    assert extract_answer("\n\nAnswer: Jane Austen.\nShe wrote it in 1813.") == "Jane Austen"
    assert extract_answer("") == ""


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 3, 2) == 1.0


def test_marker_rates():
    texts = ["Great question!\n\n1. a\n2. b\n\nHope this helps!", "1) x\n2) y", "Plain answer."]
    rates = marker_rates(texts)
    assert rates["opening"] == pytest.approx(1 / 3)
    assert rates["numbered_list"] == pytest.approx(2 / 3)
    assert rates["sign_off"] == pytest.approx(1 / 3)
    assert rates["style_score"] == pytest.approx(4 / 9)
    assert rates["mean_words"] == pytest.approx((9 + 4 + 2) / 3)


@pytest.fixture(scope="module")
def problem():
    return load_problems(None)[0]  # HumanEval/0 has_close_elements


def test_humaneval_has_164_problems():
    problems = load_problems(None)
    assert len(problems) == 164 and problems[0]["task_id"] == "HumanEval/0"


def test_canonical_solution_passes_and_wrong_fails(problem):
    _, program = build_program(problem, problem["canonical_solution"], chat=False)
    assert run_program(program, 10).status == "passed"
    _, program = build_program(problem, "    return False\n", chat=False)
    result = run_program(program, 10)
    assert result.status == "failed" and "AssertionError" in result.detail


def test_chat_reply_redefining_the_function(problem):
    reply = ("Sure:\n```python\ndef has_close_elements(numbers, threshold):\n"
             "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    _, program = build_program(problem, reply, chat=True)
    assert run_program(program, 10).status == "passed"


def test_infinite_loop_times_out_and_scratch_dir_is_cwd(tmp_path):
    assert run_program("while True:\n    pass\n", 1.0).status == "timed out"
    outside = tmp_path / "canary.txt"
    outside.write_text("keep")
    assert run_program("import os\nassert os.path.basename(os.getcwd()).startswith('imitation-gap-exec-')\n",
                       5).status == "passed"
    assert outside.read_text() == "keep"


def test_memory_bomb_fails():
    assert run_program("x = bytearray(4 * 1024 ** 3)\n", 10).status == "failed"
