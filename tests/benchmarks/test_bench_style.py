"""The study's Table 2 against teacher references, on hand-checked replies."""

import json

import pytest

from src.benchmarks import run_benchmark
from src.benchmarks.style import has_summary_paragraph, is_list, pearson, table2, unigram_intersection

REFS = ["Steps:\n1. Mix flour.\n2. Add milk.\n\nIn summary, it is easy.", "- red\n- blue", "Paris is the capital."]
REPLIES = ["1. Mix.\n2. Fry.\n\nOverall, enjoy them.", "Red and blue.", "The capital is Paris, of course."]


def test_detectors():
    assert is_list(REFS[0]) and is_list(REFS[1]) and not is_list(REFS[2]) and not is_list("1. only one")
    assert has_summary_paragraph(REFS[0]) and has_summary_paragraph(REPLIES[0])
    assert not has_summary_paragraph("In summary, one paragraph only.")


def test_table2_hand_checked():
    # unigrams: ref 2 {paris, is, the, capital} all in reply 3 -> 100; ref 1 {red, blue} both in "Red and blue" -> 100
    assert unigram_intersection(REPLIES[2], REFS[2]) == 100.0
    assert unigram_intersection("nothing shared", "red blue") == 0.0
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    metrics = table2(REPLIES, REFS)
    assert metrics["teacher_lists"] == 2 and metrics["list_when_teacher_lists"] == 0.5   # reply 2 is no list
    assert metrics["teacher_summarizes"] == 1 and metrics["summary_when_teacher_summarizes"] == 1.0
    # ref 0 words {steps, 1, mix, flour, 2, add, milk, in, summary, it, is, easy}: reply 0 shares {1, mix, 2} -> 25%
    assert metrics["unigram_intersection"] == pytest.approx((25 + 100 + 100) / 3)
    lengths = [len(r.split()) for r in REPLIES], [len(r.split()) for r in REFS]
    assert metrics["length_correlation"] == pytest.approx(pearson(*lengths))


class Replier:
    trained = True

    def chat_prompt(self, text):
        return text

    def generate(self, prompts, max_new_tokens, **_):
        return [REPLIES[int(p[-1])] for p in prompts]


def test_run_with_references(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"s{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(3)))
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": f"s{i}", "reference": r}) + "\n" for i, r in enumerate(REFS)))
    result = run_benchmark("style", {"path": str(prompts), "references_path": str(refs)}, Replier())
    assert result.metrics["list_when_teacher_lists"] == 0.5
    assert [p["gold"] for p in result.predictions] == REFS
    refs.write_text(json.dumps({"id": "s0", "reference": "x"}) + "\n")
    with pytest.raises(ValueError, match="no reference for 2 prompt"):
        run_benchmark("style", {"path": str(prompts), "references_path": str(refs)}, Replier())
