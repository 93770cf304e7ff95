"""Uncertainty on hand-made outcomes with known answers: the Wilson interval against its closed form,
the bootstrap against a reference bootstrap written out here (same seed), McNemar against the
binomial by hand, and every benchmark's per-item outcomes reproducing its metrics."""

import math

import numpy as np
import pytest

from src.benchmarks import run_benchmark
from src.benchmarks.uncertainty import (
    RESAMPLES,
    ItemOutcomes,
    describe,
    describe_metric,
    mcnemar,
    outcomes,
    paired,
    value,
    wilson,
)
from tests.benchmarks.test_bench_mmlu import SMALL, ScriptedHandle, write_mmlu


def reference_bootstrap(values, seed=0, resamples=RESAMPLES, stat=np.mean):
    """The textbook percentile bootstrap, written independently: all index draws at once."""
    values = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    reps = np.array([stat(values[row]) for row in idx])
    return reps.std(ddof=1), np.percentile(reps, 2.5), np.percentile(reps, 97.5)


def test_wilson_equals_the_closed_form():
    # 7 of 20: the roots of (p - 0.35)^2 = z^2 p (1 - p) / 20, solved by hand as a quadratic
    assert wilson(7, 20) == pytest.approx((0.18119, 0.56715), abs=5e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=5e-4)  # Wald would give [0, 0]
    entry = describe_metric(outcomes(range(20), {"em": [1] * 7 + [0] * 13}), "em")
    assert entry["method"] == "wilson" and entry["n"] == 20
    assert entry["stderr"] == pytest.approx(math.sqrt(0.35 * 0.65 / 20), abs=1e-6)
    assert entry["ci95"] == pytest.approx([0.181, 0.567], abs=1e-3)


def test_items_that_do_not_count_are_left_out():
    # a judge: 2 wins, 1 loss, 1 unparsable -> win rate 2/3 over n = 3
    items = outcomes("abcd", {"win_rate": [1, 0, None, 1]})
    assert value(items, "win_rate") == pytest.approx(2 / 3)
    entry = describe_metric(items, "win_rate")
    assert entry["n"] == 3 and entry["ci95"] == pytest.approx(list(wilson(2, 3)), abs=1e-6)


def test_bootstrap_equals_a_reference_bootstrap():
    f1 = np.random.default_rng(5).uniform(0, 1, size=37).round(3).tolist()
    entry = describe_metric(outcomes(range(37), {"f1": f1}), "f1")
    se, low, high = reference_bootstrap(f1)
    assert entry["method"] == "bootstrap" and entry["seed"] == 0 and entry["resamples"] == RESAMPLES
    assert entry["stderr"] == pytest.approx(se, abs=5e-4)
    assert entry["ci95"] == pytest.approx([low, high], abs=5e-4)
    other = describe_metric(outcomes(range(37), {"f1": f1}), "f1", seed=1)
    assert other["ci95"] != entry["ci95"]  # the seed is what makes it repeatable, and it is recorded


def test_bootstrap_of_a_proportion_matches_the_binomial_stderr():
    values = [1.0] * 120 + [0.0] * 280  # p = 0.3 over 400
    items = outcomes(range(400), {"acc": values}, ["g"] * 400, {"acc_macro": {"stat": "macro", "of": "acc"}})
    entry = describe_metric(items, "acc_macro")  # one group: the macro mean is the proportion, bootstrapped
    assert entry["method"] == "bootstrap"
    assert entry["stderr"] == pytest.approx(math.sqrt(0.3 * 0.7 / 400), abs=2e-3)


def test_macro_accuracy_bootstrap_equals_reference():
    correct = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]
    groups = ["x"] * 4 + ["y"] * 8
    items = outcomes(range(12), {"acc_micro": correct}, groups, {"acc_macro": {"stat": "macro", "of": "acc_micro"},
                                                                 "acc/y": {"stat": "group", "of": "acc_micro",
                                                                           "group": "y"}})
    assert value(items, "acc_macro") == pytest.approx((3 / 4 + 4 / 8) / 2)
    assert value(items, "acc/y") == pytest.approx(4 / 8)
    g, c = np.array(groups), np.array(correct)
    reps = []
    for row in np.random.default_rng(0).integers(0, 12, size=(RESAMPLES, 12)):
        reps.append(np.mean([c[row][g[row] == s].mean() for s in ("x", "y") if (g[row] == s).any()]))
    entry = describe_metric(items, "acc_macro")
    assert entry["ci95"] == pytest.approx([np.percentile(reps, 2.5), np.percentile(reps, 97.5)], abs=5e-4)
    assert describe_metric(items, "acc/y")["ci95"] == pytest.approx(list(wilson(4, 8)), abs=1e-6)


def test_mcnemar_on_a_constructed_pair_of_cells():
    # 30 questions; the trained cell loses 1 the base got right and wins 9 it got wrong
    base = [1] * 15 + [0] * 15
    cell = [0] + [1] * 14 + [1] * 9 + [0] * 6
    result = paired(outcomes(range(30), {"em": base}), outcomes(range(30), {"em": cell}), "em")
    assert result["discordant"] == [1, 9]
    assert result["delta"] == pytest.approx(8 / 30, abs=1e-6)
    # exact: 2 P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024; mid-p: 2 (P(X = 0) + P(X = 1) / 2) = 12 / 1024
    assert result["p"] == pytest.approx(22 / 1024, abs=1e-6)
    assert result["p_mid"] == pytest.approx(12 / 1024, abs=1e-6)
    assert result["ci95"][0] > 0  # the paired interval excludes 0 as the test does
    assert mcnemar(3, 3) == (1.0, 1.0) and mcnemar(0, 4) == (0.125, 0.0625)  # 2/16 and 2 * (1/2)/16


def test_paired_items_are_aligned_by_id():
    base = outcomes(["q1", "q2", "q3", "q4"], {"em": [1, 0, 0, 1]})
    cell = outcomes(["q4", "q3", "q2", "q9"], {"em": [1, 1, 1, 0]})  # q1 and q9 answered by one only
    result = paired(base, cell, "em")
    assert result["n"] == 3 and result["delta"] == pytest.approx(2 / 3, abs=1e-6) and result["discordant"] == [0, 2]


def test_paired_bootstrap_p_value_equals_reference():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 50)
    cell = np.clip(base + rng.normal(0.05, 0.2, 50), 0, 1)
    result = paired(outcomes(range(50), {"f1": base}), outcomes(range(50), {"f1": cell}), "f1")
    idx = np.random.default_rng(0).integers(0, 50, size=(RESAMPLES, 50))
    diffs = cell[idx].mean(axis=1) - base[idx].mean(axis=1)
    delta = cell.mean() - base.mean()
    p = ((np.abs(diffs - diffs.mean()) >= abs(delta)).sum() + 1) / (RESAMPLES + 1)
    assert result["method"] == "paired bootstrap"
    assert result["delta"] == pytest.approx(delta, abs=1e-6)
    assert result["ci95"] == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)], abs=5e-4)
    assert result["p"] == pytest.approx(p, abs=1e-3)


def test_outcomes_round_trip_and_reject_ragged_lists():
    items = outcomes(range(3), {"em": [True, False, None]})
    assert ItemOutcomes.from_dict(items.to_dict()) == items
    assert ItemOutcomes.from_dict(None) is None and ItemOutcomes.from_dict({"values": {}}) is None
    with pytest.raises(ValueError, match="em has 2 values for 3 items"):
        outcomes(range(3), {"em": [1, 0]})


def test_benchmark_items_reproduce_its_metrics(tmp_path):
    write_mmlu(tmp_path, {"x": "A", "y": "ABB"})
    result = run_benchmark("mmlu", {**SMALL, "path": str(tmp_path)}, ScriptedHandle())
    for metric, number in result.metrics.items():
        assert value(result.items, metric) == pytest.approx(number), metric
    assert set(result.uncertainty) == set(result.metrics)
    assert result.uncertainty["acc_micro"]["ci95"] == pytest.approx(list(wilson(2, 4)), abs=1e-6)
    assert result.uncertainty["acc_macro"]["method"] == "bootstrap"
    assert describe(None, result.metrics) == {}  # a benchmark without items: unknown, not invented


def test_judge_style_and_toxicity_items_reproduce_their_metrics():
    from src.benchmarks import judge, style, toxicity

    rows = [{"id": str(i), "outcome": o, "model_words": m, "reference_words": r}
            for i, (o, m, r) in enumerate([("win", 5, 3), ("loss", 1, 4), ("tie", 2, 2), ("unparsable", 0, 3),
                                           ("loss", 9, 2)])]
    items = judge.item_outcomes(rows)
    assert value(items, "win_rate") == pytest.approx(1 / 4) and value(items, "loss_rate") == pytest.approx(2 / 4)
    assert value(items, "adjusted_win_rate") == pytest.approx(1.5 / 4) and value(items, "unparsable") == 0.2
    assert value(items, "longer_preferred") == pytest.approx(2 / 3)  # win 5>3 yes, loss 1<4 yes, loss 9>2 no

    replies = ["Great question!\n\n1. a\n2. b\n\nHope this helps!", "1) x\n2) y", "Plain answer."]
    refs = ["1. a\n2. b", "one two three", "x\n\nIn summary, y"]
    rates = {**style.marker_rates(replies), **style.table2(replies, refs)}
    items = style.item_outcomes([{"id": i} for i in "abc"], replies, refs)
    for metric in ("opening", "numbered_list", "sign_off", "style_score", "mean_words", "list_when_teacher_lists",
                   "summary_when_teacher_summarizes", "unigram_intersection", "length_correlation"):
        assert value(items, metric) == pytest.approx(rates[metric]), metric

    scores = [[0.1, 0.7], [None, 0.2], [None, None]]
    expected = toxicity.toxicity_metrics(scores, 0.5)
    items = toxicity.item_outcomes(scores, 0.5)
    for metric, number in expected.items():
        assert value(items, metric) == pytest.approx(number), metric

    from src.benchmarks import humaneval

    rows = [{"task_id": t, "passed": p} for t, p in [("a", True), ("a", False), ("b", False), ("b", False)]]
    items = humaneval.problem_outcomes(rows, [1, 2])
    assert value(items, "pass@1") == pytest.approx((0.5 + 0.0) / 2) and value(items, "pass@2") == pytest.approx(0.5)
    assert describe_metric(items, "pass@1")["method"] == "bootstrap"  # a mean of 0.5s is no proportion


def test_length_controlled_win_rate_known_answers():
    from src.benchmarks import judge

    def rows(spec):
        return [{"id": str(i), "outcome": o, "model_words": m, "reference_words": 20}
                for i, (o, m) in enumerate(spec)]

    # longer by 10 words in 30 pairs (24 won), shorter by 10 in 10 (2 won): raw 26/40 = 0.65, but at
    # equal length the fitted P(win) is sigmoid((logit 0.8 + logit 0.2) / 2) = 0.5 (x is symmetric)
    spec = [("win", 30)] * 24 + [("loss", 30)] * 6 + [("win", 10)] * 2 + [("loss", 10)] * 8
    items = judge.item_outcomes(rows(spec))
    assert value(items, "win_rate") == pytest.approx(0.65)
    assert value(items, "lc_win_rate") == pytest.approx(0.5, abs=1e-3)
    entry = describe_metric(items, "lc_win_rate")
    assert entry["method"] == "bootstrap" and entry["ci95"][0] < 0.5 < entry["ci95"][1]
    # no length difference at all: the fit is the (adjusted) win rate itself, ties as halves
    same = judge.item_outcomes(rows([("win", 20)] * 25 + [("tie", 20)] * 6 + [("loss", 20)] * 9))
    assert value(same, "lc_win_rate") == pytest.approx((25 + 3) / 40, abs=1e-3)


def test_paired_on_one_group_uses_its_items_only():
    groups = ["x"] * 4 + ["y"] * 6
    derived = {"acc/y": {"stat": "group", "of": "acc", "group": "y"}}
    base = outcomes(range(10), {"acc": [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]}, groups, derived)
    cell = outcomes(range(10), {"acc": [0, 0, 0, 0, 1, 1, 1, 0, 0, 1]}, groups, derived)
    result = paired(base, cell, "acc/y")
    assert result["n"] == 6 and result["delta"] == pytest.approx(3 / 6, abs=1e-6) and result["discordant"] == [0, 3]
    assert result["p"] == pytest.approx(2 / 8)  # 2 P(X <= 0), X ~ Bin(3, 1/2)


def test_a_missing_value_is_never_counted_as_zero():
    import numpy as np

    from src.benchmarks.uncertainty import _pearson_rows, length_controlled_rows

    x = np.array([[1.0, 2.0, 3.0], [1.0, np.nan, 3.0]])
    y = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    r = _pearson_rows(x, y)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1])  # was 0.0 for the row with a gap
    # a win with no length recorded is left out of the fit, not fitted at length 0
    wins = np.array([[1.0, 0.0, 1.0, 0.0]])
    with_gap = length_controlled_rows(np.array([[1.0, 0.0, 1.0, 0.0, 1.0]]),
                                      np.array([[0.5, -0.5, 0.5, -0.5, np.nan]]))
    assert with_gap == pytest.approx(length_controlled_rows(wins, np.array([[0.5, -0.5, 0.5, -0.5]])))
