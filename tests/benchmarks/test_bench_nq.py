"""NQ answer extraction from chatty replies: known outputs, known extractions."""

import pytest

from src.benchmarks.nq import exact_match, extract_answer


@pytest.mark.parametrize("output, expected", [
    (" Paris\nQ: what is", "Paris"),
    ("\n\nAnswer: Jane Austen.\nShe wrote it in 1813.", "Jane Austen"),
    ("Sure! The answer is George Washington.", "George Washington"),
    ("Certainly, the correct answer is: **1969**.", "1969"),
    ("Great question! The answer is \"Mount Everest\".\nIt is 8,849 m tall.", "Mount Everest"),
    ("A: **Leonardo da Vinci**", "Leonardo da Vinci"),
    ("Of course. Answer: the Nile", "the Nile"),
    ("Canberra", "Canberra"),
    ("", ""),
    ("   \n  ", ""),
])
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


def test_chatty_reply_scores_after_extraction():
    assert exact_match(extract_answer("Sure! The answer is the Nile."), ["Nile"]) == 1.0
    assert exact_match("Sure! The answer is the Nile.", ["Nile"]) == 0.0  # why extraction matters


def test_benchmark_files_are_read_by_the_nq_open_reader(tmp_path):
    from src.benchmarks.nq import load_nq
    from src.data.formats.nq import read_nq
    from src.data.formats.records import DataError

    shots = "data/nq/nq_open_shots.jsonl"
    assert load_nq(shots) == [{"question": r.question, "answer": list(r.answers)} for r in read_nq(shots)]
    assert [r.origin.rsplit(":", 1)[1] for r in read_nq(shots)] == ["1", "2", "3", "4", "5"]
    path = tmp_path / "nq.jsonl"
    path.write_text('{"question": "who wrote emma", "answer": ["Jane Austen", "Austen"]}\n{"question": 1}\n')
    with pytest.raises(DataError, match=r"nq.jsonl:2: field 'question' missing or not a str"):
        load_nq(str(path))
