"""The architecture comparison (src/toyworld/architectures.py) on a made-up grid of two bases of one
size: each base's findings 1 and 2 on its own numbers, and the side-by-side table."""

from dataclasses import replace

from src.toyworld.architectures import comparison_of, render
from tests.toyworld.test_toyworld import _row


def _grid():
    rows = []
    for model, local in (("toy_l", 0.56), ("toy_t5", 0.3)):
        rows += [_row(model, 763_000, "toy_broad", 0, 0.05, 0.0), _row(model, 763_000, "toy_local", 0, 0.05, 0.0),
                 _row(model, 763_000, "toy_broad", 4000, 0.0, 1.0), _row(model, 763_000, "toy_broad", 36000, 0.01, 1.0),
                 _row(model, 763_000, "toy_local", 4000, local - 0.1, 0.9),
                 _row(model, 763_000, "toy_local", 36000, local, 1.0)]
    return rows


def test_each_base_gets_its_own_findings_and_a_row():
    rows = comparison_of(_grid())
    assert [r.model for r in rows] == ["toy_l", "toy_t5"]
    llama, t5 = rows
    assert (llama.cloze, llama.qa_before, llama.best_broad_qa, llama.best_local_qa) == (0.95, 0.05, 0.01, 0.56)
    assert llama.style_first_budget == {"toy_broad": 1.0, "toy_local": 0.9}
    assert [f.holds for f in llama.findings] == [True, True]
    # toy_t5's local QA (0.30) beats its broad (0.01) by 0.29, under the 0.3 asked: finding 2 fails for it alone
    assert [f.name for f in t5.findings] == ["style_at_once", "broad_does_not_unlock_local_does"]
    assert [f.holds for f in t5.findings] == [True, False]
    text = render(rows)
    assert "| toy_l (763,000) | 0.95 | 0.05 | 0.01 | 0.56 | 1.00, 0.90 |" in text
    assert "Local imitation goes furthest with toy_l: best QA 0.56 against toy_t5 0.30." in text
    assert text.count("DOES NOT HOLD") == 1


def test_slow_style_is_that_bases_failure_only():
    slow = [replace(r, metrics={**r.metrics, "toy_style/style_score": 0.2})
            if r.axes.model == "toy_l" and r.tokens.total == 4000 else r for r in _grid()]
    llama, t5 = comparison_of(slow)
    assert llama.findings[0].holds is False and t5.findings[0].holds is True
