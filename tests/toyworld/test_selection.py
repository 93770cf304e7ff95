"""The toy world's selection study: selectors against random at equal queries, paired by seed, on
constructed cell rows with known answers."""

from __future__ import annotations

import csv

import pytest

from src.toyworld.selection import compare, gap_closed, write_report


def _rows(uncertainty_qa: dict[int, list[float]], random_qa: dict[int, list[float]]) -> list[dict]:
    rows = []
    for seed in range(3):
        rows.append({"seed": seed, "selector": "base", "queries": 0, "tokens": 0, "qa": 0.2, "cloze": 1.0,
                     "run_id": f"b{seed}"})
        for n in uncertainty_qa:
            for selector, table in (("random", random_qa), ("uncertainty", uncertainty_qa)):
                rows.append({"seed": seed, "selector": selector, "queries": n, "tokens": 30 * n,
                             "qa": table[n][seed], "cloze": 0.9, "run_id": f"{selector}{seed}{n}"})
    return rows


def test_a_selector_ahead_on_every_seed_beats_random_with_the_t_interval():
    rows = _rows({50: [0.5, 0.6, 0.7], 150: [0.6, 0.5, 0.7]}, {50: [0.4, 0.5, 0.6], 150: [0.6, 0.6, 0.6]})
    at50, at150 = compare(rows)
    assert (at50.queries, at50.delta, at50.verdict) == (50, pytest.approx(0.1), "beats random")
    assert at50.ci95 == (pytest.approx(0.1), pytest.approx(0.1))  # the same +0.1 on every seed: no spread
    # deltas 0, -0.1, +0.1: mean 0, sd 0.1, t(2) 4.303 -> half width 4.303 * 0.1 / sqrt(3) = 0.2484
    assert at150.delta == pytest.approx(0.0, abs=1e-12) and at150.verdict == "no difference shown"
    assert at150.ci95[1] == pytest.approx(0.24844, abs=1e-4)
    assert at150.mean == pytest.approx(0.6) and at150.sd == pytest.approx(0.1)


def test_worse_than_random_and_one_seed_are_said_as_such():
    rows = _rows({50: [0.3, 0.31, 0.29]}, {50: [0.6, 0.6, 0.6]})
    assert compare(rows)[0].verdict == "worse than random"
    one = [r for r in rows if r["seed"] == 0]
    assert compare(one)[0].verdict == "cannot tell (one seed)" and compare(one)[0].ci95 is None


def test_report_files_and_gap_closed(tmp_path):
    assert gap_closed(0.6, 0.2) == pytest.approx(0.5)
    rows = _rows({50: [0.5, 0.6, 0.7]}, {50: [0.4, 0.5, 0.6]})
    text = write_report(rows, tmp_path)
    assert "uncertainty beats random at 50 queries by +0.100 QA" in text
    with open(tmp_path / "selection.csv", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(rows)
    assert float(next(r for r in written if r["run_id"] == "uncertainty150")["gap_closed"]) == pytest.approx(0.5)
    assert (tmp_path / "selection.png").stat().st_size > 0 and (tmp_path / "selection_findings.md").exists()


def test_a_selection_cell_is_named_by_its_files_content(tmp_path):
    from src.toyworld.selection import selected_source

    path = tmp_path / "uncertainty_50.json"
    path.write_text('[{"id": "a"}]\n')
    first = selected_source(path, "uncertainty", 50)
    assert first == selected_source(path, "uncertainty", 50)
    path.write_text('[{"id": "b"}]\n')  # the selector chose other prompts: another run_id
    second = selected_source(path, "uncertainty", 50)
    assert second[0] != first[0] and second[0].startswith("data.source.name=toy_select_uncertainty_50_")
    assert second[1] == first[1] == f"data.source.path='{path}'"


def test_a_rounds_label_is_compared_with_random_and_drawn(tmp_path):
    """`--rounds 3` adds uncertainty_r3 rows: compared with random at equal queries like any selector,
    and given its own curve in the plot."""
    from src.toyworld.selection import curve_names

    rows = _rows({50: [0.5, 0.6, 0.7]}, {50: [0.4, 0.5, 0.6]})
    rows += [{**r, "selector": "uncertainty_r3", "qa": r["qa"] - 0.2, "run_id": r["run_id"] + "r3"}
             for r in rows if r["selector"] == "uncertainty"]
    verdicts = {c.selector: c.verdict for c in compare(rows)}
    assert verdicts == {"uncertainty": "beats random", "uncertainty_r3": "worse than random"}
    assert curve_names(rows) == ["random", "uncertainty", "uncertainty_r3"]
    text = write_report(rows, tmp_path)
    assert "| uncertainty_r3 | 50 |" in text and (tmp_path / "selection.png").stat().st_size > 0
    assert "2 comparisons with random" in text and "about 0.1 verdicts either way are expected" in text
