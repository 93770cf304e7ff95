"""The report's statistics over cells: seeds as replicates, every trained cell against its base item
by item, the gap closed with an interval, and lines fitted through a series (slope with its interval).

The per-cell numbers (stderr, 95% interval, per-item outcomes) come from results.json
(src/benchmarks/uncertainty.py made them); a cell written before they existed has none, and every
quantity that needs them is None here (the report prints "unknown"), never a guess.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.benchmarks.uncertainty import Z95, ItemOutcomes, paired
from src.results import Results

ALPHA = 0.05
# Student's t 97.5% quantiles by degrees of freedom (no scipy here). Between tabulated values the
# nearest df below is used: its quantile is the larger one, so an interval is never too narrow.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    if df <= 0:
        return math.inf
    return T975[max(k for k in T975 if k <= df)]


def items_of(row: Results, metric: str) -> ItemOutcomes | None:
    record = row.benchmarks.get(metric.partition("/")[0])
    return ItemOutcomes.from_dict(record.items) if record is not None and isinstance(record.items, dict) else None


def stderr_of(row: Results, metric: str) -> float | None:
    entry = row.uncertainty(metric)
    return entry.get("stderr") if entry else None


def ci_of(row: Results, metric: str) -> tuple[float, float] | None:
    entry = row.uncertainty(metric)
    ci = entry.get("ci95") if entry else None
    return (float(ci[0]), float(ci[1])) if ci else None


def fit_stderr(row: Results, metric: str) -> float | None:
    """The stderr a fit weighs a cell by: the larger of its stderr and its 95% interval's width / 3.92,
    so a proportion at 0 or 1 (binomial stderr 0, Wilson interval not) is not taken as exact."""
    se, ci = stderr_of(row, metric), ci_of(row, metric)
    if se is None:
        return None
    return max(se, (ci[1] - ci[0]) / (2 * Z95)) if ci else se


def p_text(p: float | None) -> str:
    if p is None:
        return "unknown"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


# --- seeds as replicates --------------------------------------------------------------------------
@dataclass
class Point:
    """The cells of one (model, source, amount): they differ only in their training seed."""

    model: str
    source: str
    amount_label: str
    tokens: int
    parameters: int
    cells: list[Results] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [c.axes.seed for c in self.cells]

    def values(self, metric: str) -> list[float]:
        return [c.metrics[metric] for c in self.cells if metric in c.metrics]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def seed_sd(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.stdev(values) if len(values) > 1 else None

    def item_stderr(self, metric: str) -> float | None:
        """The item-level stderr of one cell (their root mean square over seeds); None if any is unknown."""
        errors = [stderr_of(c, metric) for c in self.cells if metric in c.metrics]
        if not errors or any(e is None for e in errors):
            return None
        return math.sqrt(statistics.fmean(e * e for e in errors))

    def item_ci95(self, metric: str) -> tuple[float, float] | None:
        """The cells' 95% intervals over items, averaged end by end (one cell's interval, typically)."""
        cis = [ci_of(c, metric) for c in self.cells if metric in c.metrics]
        if not cis or any(ci is None for ci in cis):
            return None
        return (statistics.fmean(ci[0] for ci in cis), statistics.fmean(ci[1] for ci in cis))

    def dominant(self, metric: str) -> str | None:
        """Which spread is larger: 'seeds' (training noise) or 'items' (too few benchmark items)."""
        sd, se = self.seed_sd(metric), self.item_stderr(metric)
        if sd is None or se is None:
            return None
        if sd == 0 and se == 0:
            return "neither (both 0)"
        return "seeds" if sd > se else "items"


def points(rows: list[Results]) -> list[Point]:
    """Cells grouped over seeds, in the order of `rows`."""
    found: dict[tuple, Point] = {}
    for r in rows:
        key = (r.axes.model, r.axes.data_source, r.axes.amount_label if r.tokens.total else "0")
        if key not in found:
            found[key] = Point(r.axes.model, r.axes.data_source, key[2], r.tokens.total, r.model_parameters or 0)
        found[key].cells.append(r)
    return list(found.values())


# --- each trained cell against its base ----------------------------------------------------------
def base_of(row: Results, rows: list[Results]) -> Results | None:
    """The amount-0 cell of the same model: the same seed and source if there is one, else any."""
    bases = [b for b in rows if b.tokens.total == 0 and b.axes.model == row.axes.model]
    return max(bases, key=lambda b: (b.axes.seed == row.axes.seed, b.axes.data_source == row.axes.data_source),
               default=None)


@dataclass
class Comparison:
    cell: Results
    base: Results
    metric: str
    delta: float
    ci95: tuple[float, float] | None
    p: float | None
    method: str
    gap: float | None = None  # (cell - base) / (teacher - base)
    gap_ci95: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


def compare(row: Results, base: Results, metric: str, teacher: dict | None = None) -> Comparison | None:
    """cell - base on the items both answered (paired), or None when either lacks the metric. Without
    per-item outcomes (an older file) the delta stands alone: interval and p unknown."""
    if metric not in row.metrics or metric not in base.metrics:
        return None
    target = teacher["metrics"].get(metric) if teacher else None
    transform = None
    if target is not None:
        def transform(cell_reps: np.ndarray, base_reps: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return (cell_reps - base_reps) / (target - base_reps)

    result = paired(items_of(base, metric), items_of(row, metric), metric.partition("/")[2], transform=transform)
    delta = row.metrics[metric] - base.metrics[metric]
    comparison = Comparison(row, base, metric, delta, None, None, "unknown (no per-item outcomes)")
    if result is not None:
        comparison.ci95 = tuple(result["ci95"]) if result.get("ci95") else None
        comparison.p, comparison.method = result.get("p"), result["method"]
        comparison.gap_ci95 = tuple(result["transformed_ci95"]) if result.get("transformed_ci95") else None
    if target is not None and abs(target - base.metrics[metric]) > 1e-12:
        comparison.gap = delta / (target - base.metrics[metric])
    return comparison


def comparisons(rows: list[Results], metrics: list[str], teacher: dict | None = None) -> list[Comparison]:
    out = []
    for r in rows:
        base = base_of(r, rows) if r.tokens.total else None
        for metric in metrics if base is not None else []:
            found = compare(r, base, metric, teacher)
            if found is not None:
                out.append(found)
    return out


# --- a line through a series ---------------------------------------------------------------------
@dataclass
class Slope:
    slope: float | None
    ci95: tuple[float, float] | None
    n: int  # cells (every seed a point)
    distinct_x: int
    source_of_error: str  # items | scatter | none
    verdict: str  # rising | flat | falling | cannot tell

    def text(self, unit: str = "per decade") -> str:
        if self.slope is None or self.ci95 is None:
            return f"cannot tell ({self.n} cells at {self.distinct_x} distinct x)"
        return (f"{self.slope:+.3f} {unit} [{self.ci95[0]:+.3f}, {self.ci95[1]:+.3f}], {self.n} cells at "
                f"{self.distinct_x} x, error from {self.source_of_error}")


def fit_slope(xs: list[float], ys: list[float], stderrs: list[float | None]) -> Slope:
    """Least-squares slope of y on x (every cell a point, so seeds are replicates). Its standard error
    starts from the cells' item-level stderrs carried through the fit (sqrt(sum w_i^2 se_i^2)); when
    the cells scatter about the line more than those stderrs explain (residual variance over the mean
    se^2 above 1: seeds, or a curve), it is scaled up by the square root of that ratio (the Birge
    ratio), and the interval is slope +- 1.96 se. Without item stderrs (older files), the scatter
    alone with Student's t(n - 2). Verdict: rising or falling when the interval excludes 0, else flat."""
    n, distinct = len(xs), len(set(xs))
    if n < 2 or distinct < 2:
        return Slope(None, None, n, distinct, "none", "cannot tell")
    x, y = np.array(xs, dtype=float), np.array(ys, dtype=float)
    sxx = float(((x - x.mean()) ** 2).sum())
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    residual = y - (y.mean() + slope * (x - x.mean()))
    scatter = float((residual ** 2).sum()) / (n - 2) if n > 2 else None
    if all(se is not None for se in stderrs):
        variances = np.array(stderrs, dtype=float) ** 2
        se = float(np.sqrt((((x - x.mean()) / sxx) ** 2 * variances).sum()))
        quantile, source = Z95, "items"
        if scatter is not None and variances.mean() > 0 and scatter > variances.mean():
            ratio = math.sqrt(scatter / variances.mean())
            se, source = se * ratio, f"items, scaled x{ratio:.1f} by the scatter"
        elif scatter is not None and variances.mean() == 0 and scatter > 0:
            se, quantile, source = math.sqrt(scatter / sxx), t975(n - 2), "scatter"
    elif scatter is not None:
        se, quantile, source = math.sqrt(scatter / sxx), t975(n - 2), "scatter"
    else:
        return Slope(slope, None, n, distinct, "none", "cannot tell")
    low, high = slope - quantile * se, slope + quantile * se
    verdict = "rising" if low > 0 else "falling" if high < 0 else "flat"
    return Slope(slope, (low, high), n, distinct, source, verdict)


def series_slope(cells: list[Results], metric: str, x_of) -> Slope:
    cells = [c for c in cells if metric in c.metrics]
    return fit_slope([x_of(c) for c in cells], [c.metrics[metric] for c in cells], [fit_stderr(c, metric) for c in cells])


def interval_text(ci: tuple[float, float] | None, signed: bool = False) -> str:
    if ci is None:
        return "unknown"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"[{f.format(ci[0])}, {f.format(ci[1])}]"


def describe_value(row: Results, metric: str) -> dict[str, Any]:
    return {"value": row.metrics.get(metric), "stderr": stderr_of(row, metric), "ci95": ci_of(row, metric)}
