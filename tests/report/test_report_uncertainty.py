"""The report's statistics on constructed grids whose cells carry per-item outcomes: seeds as one point,
each cell against its base (a known McNemar p), slopes and verdicts, findings.md, merged sweeps."""

import csv
import math

import pytest

from src.benchmarks.uncertainty import describe, outcomes, wilson
from src.io import write_json_atomic
from src.report.stats import fit_slope, points
from src.report.tables import load_results, paired_table, report, seeds_table
from src.report.verdicts import FAILS, HOLDS, UNKNOWN, verdicts
from src.results import Axes, BenchmarkRecord, Results, Tokens


def nq_cell(model, params, amount, seed, correct, sweep="t", source="mix"):
    """A cell whose NQ exact match is the given per-question outcomes (ids q0, q1, ...)."""
    items = outcomes([f"q{i}" for i in range(len(correct))], {"em": correct})
    metrics = {"em": sum(correct) / len(correct)}
    record = BenchmarkRecord(2, {}, len(correct), uncertainty=describe(items, metrics), items=items.to_dict())
    return Results(
        run_id=f"{model}-{source}-{amount}-{seed}", cell=f"{model}/{source}/{amount}", sweep=sweep, experiment="t",
        axes=Axes(model, source, amount, str(amount), seed), tokens=Tokens(amount, amount // 2),
        model_parameters=int(params), eval_backend="hf", mode="separate_run" if amount else "base_model",
        trained_by=None, metrics={f"nq/{k}": v for k, v in metrics.items()}, benchmarks={"nq": record}, data=None,
        train=None, timings_s={}, device="cpu", versions={}, config=None)


def ones(k, n):
    return [1] * k + [0] * (n - k)


def write(root, cell):
    cell.write(root / f"{cell.axes.model}_{cell.axes.amount}_{cell.axes.seed}" / "results.json")


def test_slope_and_its_interval_by_hand():
    # y = 1, 2, 4 at x = 1, 2, 3: slope 1.5; residuals 1/6, -1/3, 1/6 -> RSS 1/6, se sqrt(1/6 / 1 / 2)
    slope = fit_slope([1, 2, 3], [1, 2, 4], [None, None, None])
    se = math.sqrt(1 / 6 / 2)
    assert slope.slope == pytest.approx(1.5)
    assert slope.ci95 == pytest.approx((1.5 - 12.706 * se, 1.5 + 12.706 * se))  # t with 1 degree of freedom
    assert slope.verdict == "flat" and slope.source_of_error == "scatter"
    # the same cells with item stderrs 0.1: se_items = sqrt(0.5 * 0.01); the scatter (1/6 per cell) is 16.7x
    # the item variance, so it is scaled by sqrt(16.7): se = sqrt(1/6 / 2) again, now with z
    scaled = fit_slope([1, 2, 3], [1, 2, 4], [0.1, 0.1, 0.1])
    assert scaled.ci95 == pytest.approx((1.5 - 1.96 * se, 1.5 + 1.96 * se), abs=1e-3)
    assert scaled.verdict == "rising" and scaled.source_of_error.startswith("items, scaled x4.1")
    # two cells, item-level stderrs 0.01 each, 1 decade apart: se = sqrt(2) * 0.01
    two = fit_slope([3, 4], [0.2, 0.5], [0.01, 0.01])
    assert two.ci95 == pytest.approx((0.3 - 1.96 * math.sqrt(2) * 0.01, 0.3 + 1.96 * math.sqrt(2) * 0.01), abs=1e-4)
    assert two.verdict == "rising" and two.source_of_error == "items"
    assert fit_slope([3], [0.2], [0.01]).verdict == "cannot tell"


def test_seeds_are_one_point_with_their_spread(tmp_path):
    for seed, (k0, k1) in enumerate([(10, 12), (10, 18)]):
        write(tmp_path, nq_cell("small", 1e6, 0, seed, ones(k0, 40)))
        write(tmp_path, nq_cell("small", 1e6, 1000, seed, ones(k1, 40)))
    rows = load_results(tmp_path)
    grouped = points(rows)
    assert [(p.amount_label, p.seeds) for p in grouped] == [("0", [0, 1]), ("1000", [0, 1])]
    header, body = seeds_table(rows, ["nq/em"])
    trained = dict(zip(header, body[1], strict=True))
    assert trained["mean"] == "0.375" and trained["sd_over_seeds"] == f"{math.sqrt(2 * 0.075 ** 2):.3f}"
    # item stderr: root mean square of sqrt(p(1-p)/40) for p = 0.3 and 0.45
    rms = math.sqrt((0.3 * 0.7 / 40 + 0.45 * 0.55 / 40) / 2)
    assert trained["item_stderr"] == f"{rms:.3f}" and trained["dominates"] == "seeds"  # 0.106 > 0.076
    base = dict(zip(header, body[0], strict=True))
    assert base["sd_over_seeds"] == "0.000" and base["dominates"] == "items"


def test_each_cell_against_its_base_gives_the_known_p(tmp_path):
    base = ones(15, 30)
    cell = [0] + [1] * 14 + [1] * 9 + [0] * 6  # loses 1, wins 9
    write(tmp_path, nq_cell("small", 1e6, 0, 0, base))
    write(tmp_path, nq_cell("small", 1e6, 1000, 0, cell))
    header, body = paired_table(load_results(tmp_path), ["nq/em"], None)
    row = dict(zip(header, body[0], strict=True))
    assert row["delta"] == "+0.267" and row["p"] == f"{22 / 1024:.3g}" and row["test"].startswith("mcnemar exact")
    assert row["gap_closed"] == "n/a"
    text = report(tmp_path, teacher_path=None)
    assert "0.500±0.091" in text  # 15/30: sqrt(0.25/30)
    with open(tmp_path / "results.csv") as handle:
        line = next(r for r in csv.DictReader(handle) if r["amount"] == "0")
    low, high = wilson(15, 30)
    assert (line["nq/em ci95_low"], line["nq/em ci95_high"]) == (f"{low:.4f}", f"{high:.4f}")
    assert line["nq/em method"] == "wilson"


def test_gap_closed_has_an_interval(tmp_path):
    write(tmp_path, nq_cell("small", 1e6, 0, 0, ones(20, 100)))
    write(tmp_path, nq_cell("small", 1e6, 1000, 0, ones(30, 100)))
    (tmp_path / "teacher.yaml").write_text("name: T\nmetrics:\n  nq/em: 0.60\n")
    report(tmp_path, teacher_path=tmp_path / "teacher.yaml")
    with open(tmp_path / "gap_closed.csv") as handle:
        row = next(csv.DictReader(handle))
    assert row["gap_closed"] == "+0.25"  # (0.30 - 0.20) / (0.60 - 0.20)
    low, high = (float(x) for x in row["gap_closed_ci95"].strip("[]").split(","))
    assert 0 < low < 0.25 < high < 0.6


def test_verdicts_and_claims_on_a_constructed_grid(tmp_path):
    # broad imitation: NQ rises clearly with tokens for the small base; a flat line for the large one
    n = 400
    for amount, k in [(0, 80), (1000, 120), (10000, 200), (100000, 320)]:
        write(tmp_path, nq_cell("small", 1e6, amount, 0, ones(k, n)))
    for amount, k in [(0, 340), (1000, 341), (10000, 339), (100000, 340)]:
        write(tmp_path, nq_cell("large", 1e8, amount, 0, ones(k, n)))
    rows = load_results(tmp_path)
    series, sizes, claims = verdicts(rows, ["nq/em"])
    by_model = {s.model: s for s in series}
    assert by_model["small"].slope.verdict == "rising" and by_model["large"].slope.verdict == "flat"
    assert by_model["small"].slope.slope == pytest.approx((0.8 - 0.3) / 2, abs=0.01)  # per decade
    claim = {c.name: c.verdict for c in claims}
    assert claim["Broad imitation leaves capability flat or worse"] == FAILS  # the small base rises
    assert claim["A larger base moves capability"] == HOLDS  # better at every amount, never worse
    assert claim["Local imitation closes its task's gap"] == UNKNOWN  # no local source here
    report(tmp_path)
    text = (tmp_path / "findings.md").read_text()
    assert text.count("| small | mix | nq/em | rising |") == 1 and "| large | mix | nq/em | flat |" in text
    page = (tmp_path / "index.html").read_text()
    assert page.index("The study's claims") < page.index("<h2>Results</h2>")


def test_several_sweeps_merge(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, nq_cell("small", 1e6, 0, 0, ones(10, 40), sweep="a"))
    write(a, nq_cell("small", 1e6, 1000, 0, ones(11, 40), sweep="a"))
    write(b, nq_cell("large", 1e8, 0, 0, ones(30, 40), sweep="b"))
    write(b, nq_cell("small", 1e6, 0, 0, ones(10, 40), sweep="a"))  # the same cell in both: counted once
    text = report([a, b])
    out = tmp_path / "merged_a+b"
    assert "3 cells from" in text and (out / "model_size.png").stat().st_size > 10_000
    assert "A larger base moves capability: holds" in text


def test_a_grid_mixing_old_and_new_files_reports_unknowns(tmp_path):
    old = nq_cell("small", 1e6, 0, 0, ones(10, 40)).to_dict()
    old["benchmarks"]["nq"] = {"version": 2, "settings": {}, "n": 40}  # written before uncertainty existed
    write_json_atomic(tmp_path / "old" / "results.json", old)
    write(tmp_path, nq_cell("small", 1e6, 1000, 0, ones(12, 40)))
    write(tmp_path, nq_cell("small", 1e6, 4000, 0, ones(14, 40)))
    text = report(tmp_path)
    assert "0.250±?" in text and "0.300±0.072" in text
    with open(tmp_path / "gap_closed.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["delta"], r["delta_ci95"], r["p"]) for r in rows] == [("+0.050", "unknown", "unknown"),
                                                                     ("+0.100", "unknown", "unknown")]
    series, _, _ = verdicts(load_results(tmp_path), ["nq/em"])
    assert series[0].slope.verdict == "flat"  # the trained cells have intervals: the slope still has one


def test_local_imitation_claim_is_read_at_every_budget(tmp_path):
    # nq_synthetic (local imitation for NQ): 10/100 -> 60/100 at 1K (closes), back to 15/100 at 4K
    for amount, k in [(0, 10), (1000, 60), (4000, 15)]:
        write(tmp_path, nq_cell("small", 1e6, amount, 0, ones(k, 100), source="nq_synthetic"))
    _, _, claims = verdicts(load_results(tmp_path), ["nq/em"])
    local = next(c for c in claims if c.name == "Local imitation closes its task's gap")
    assert local.verdict == HOLDS and len(local.evidence) == 2
    assert "p=0.0625" in local.evidence[1]  # 4K: 5 discordant items, all gains: 2 / 2^5, not significant
    broad = next(c for c in claims if c.name.startswith("Broad"))
    assert broad.verdict == UNKNOWN  # no broad source in this grid


def test_t_quantiles_between_tabulated_dfs_are_never_too_small():
    from src.report.stats import t975

    assert t975(10) == 2.228 and t975(21) == 2.080  # tabulated
    assert t975(45) == 2.021  # df 40's: the true 2.014 is smaller, so the interval is a little wide
    assert t975(1000) == 1.980 and t975(0) == float("inf")


def test_two_bases_of_one_size_are_no_size_comparison(tmp_path):
    """toy_l and toy_t5 are 763,008 and 763,904 parameters: far apart in NQ, but not in size; the claim
    cannot be told rather than read as a steep slope per decade of parameters. 1.3x apart, it is told."""
    n = 100
    write(tmp_path, nq_cell("decoder", 763_008, 0, 0, ones(10, n)))
    write(tmp_path, nq_cell("encdec", 763_904, 0, 0, ones(60, n)))
    _, sizes, claims = verdicts(load_results(tmp_path), ["nq/em"])
    claim = next(c for c in claims if c.name == "A larger base moves capability")
    assert sizes == [] and claim.verdict == UNKNOWN and "1.25x apart" in claim.evidence[0]
    write(tmp_path, nq_cell("encdec", 763_008 * 1.3, 0, 0, ones(60, n)))
    _, sizes, claims = verdicts(load_results(tmp_path), ["nq/em"])
    assert len(sizes) == 1 and sizes[0][3].verdict == "rising"
