"""Uncertainty of every benchmark metric, and paired comparisons of two cells on the same items.

A benchmark hands over its per-item outcomes (`ItemOutcomes`: one value per item and metric, None
where an item does not count for that metric, e.g. an unparsable judge verdict for the win rate).
Each metric is a statistic of those values:

- `mean` (the default): the mean over the items that count. When every value is 0 or 1 it is a
  proportion: standard error sqrt(p(1-p)/n) (the binomial one, as lm-evaluation-harness) and the
  **Wilson score** 95% interval (it stays inside [0, 1] and is sound at p = 0 or 1, where Wald's is
  not). Any other mean (F1, pass@k from several samples, toxicity, word counts) gets the bootstrap.
- `macro`: the unweighted mean over groups (MMLU's subjects) of the group means; bootstrap.
- `group`: the mean over the items of one group (acc/<subject>); a proportion as above.
- `pearson`: the correlation of two per-item values (reply vs reference length); bootstrap.
- `length_controlled`: a judge's win rate at zero length difference (AlpacaEval 2's idea): a
  logistic regression of the per-item outcome (win 1, tie 1/2, loss 0) on tanh(length difference /
  its sd), read at difference 0 (sigmoid of the intercept); bootstrap.

The bootstrap resamples items with replacement, `RESAMPLES` times, from numpy's default_rng(SEED)
drawing each resample's n indices in turn (`resample_indices`); stderr is the replicates' standard
deviation and the interval their 2.5 and 97.5 percentiles. Method, resamples and seed are recorded
in every entry, so a number can be recomputed exactly.

Paired comparisons (`paired`) align two cells' items by id: the delta of the statistic, a paired
bootstrap 95% interval (the same resampled items for both cells) and a two-sided p-value, the exact
McNemar test for proportions (binomial on the discordant pairs; its mid-p beside it) and the
paired bootstrap's otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the normal 97.5% quantile
RESAMPLES = 2000
SEED = 0
CHUNK = 250  # resamples drawn at once (bounded memory for 14k-item MMLU; the draws are the same)


@dataclass
class ItemOutcomes:
    """Per-item outcomes behind a benchmark's metrics, as stored in metrics.json and results.json."""

    ids: list[str]
    values: dict[str, list[float | None]]  # metric (or helper series) -> one value per item
    groups: list[str] | None = None  # a label per item (subject, attribute) for macro and group metrics
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> {"stat", "of", "group"}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.groups is None:
            out.pop("groups")
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ItemOutcomes | None:
        if not raw or "ids" not in raw or "values" not in raw:
            return None
        return cls(list(raw["ids"]), dict(raw["values"]), raw.get("groups"), dict(raw.get("derived", {})))

    def spec(self, metric: str) -> dict[str, Any] | None:
        """How `metric` is computed from the values; None when these outcomes do not give it."""
        if metric in self.derived:
            return self.derived[metric]
        return {"stat": "mean", "of": metric} if metric in self.values else None


def outcomes(ids: list, values: dict[str, list], groups: list[str] | None = None,
             derived: dict[str, dict[str, Any]] | None = None) -> ItemOutcomes:
    """ItemOutcomes with plain floats (bools and numpy numbers become float; None stays None)."""
    clean = {k: [None if v is None else float(v) for v in vs] for k, vs in values.items()}
    for name, vs in clean.items():
        if len(vs) != len(ids):
            raise ValueError(f"item outcomes: {name} has {len(vs)} values for {len(ids)} items")
    return ItemOutcomes([str(i) for i in ids], clean, list(groups) if groups is not None else None,
                        dict(derived or {}))


# --- closed forms ---------------------------------------------------------------------------------
def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denominator = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denominator
    half = Z95 / denominator * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(base_right_cell_wrong: int, base_wrong_cell_right: int) -> tuple[float, float]:
    """(exact two-sided p, mid-p) of McNemar's test: the discordant pairs are Binomial(b + c, 1/2)."""
    b, c = base_right_cell_wrong, base_wrong_cell_right
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0, 1.0
    below = sum(math.comb(n, i) for i in range(k)) / 2 ** n  # P(X < k)
    at = math.comb(n, k) / 2 ** n
    return min(1.0, 2 * (below + at)), min(1.0, 2 * (below + at / 2))


# --- statistics over (resampled) items ------------------------------------------------------------
def _array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _is_binary(values: np.ndarray) -> bool:
    present = values[~np.isnan(values)]
    return bool(present.size) and bool(np.all((present == 0) | (present == 1)))


def statistic(items: ItemOutcomes, metric: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """f(index matrix of shape (resamples, items)) -> the metric on each resample; None if not derivable.
    Items that do not count (None) are left out of the mean; a resample without any gives nan."""
    spec = items.spec(metric)
    if spec is None:
        return None
    stat = spec.get("stat", "mean")
    if stat == "length_controlled":
        outcome, model_len, reference_len = (_array(items.values[k]) for k in spec["of"])
        diff = model_len - reference_len
        present = diff[~np.isnan(diff) & ~np.isnan(outcome)]
        scale = float(present.std()) if present.size and present.std() > 0 else 1.0  # fixed: resamples share it
        x = np.tanh(diff / scale)
        return lambda idx: length_controlled_rows(outcome[idx], x[idx])
    if stat == "pearson":
        x, y = (_array(items.values[k]) for k in spec["of"])
        return lambda idx: _pearson_rows(x[idx], y[idx])
    values = _array(items.values[spec["of"]])
    if stat == "group":
        values = np.where(np.array(items.groups) == spec["group"], values, np.nan)
    if stat in ("mean", "group"):
        if not np.isnan(values).any():  # every item counts: a plain mean (half the work of the nan-aware one)
            return lambda idx: values[idx].mean(axis=1)
        return lambda idx: _nanmean_rows(values[idx])
    if stat == "macro":
        labels, codes = np.unique(np.array(items.groups), return_inverse=True)

        def macro(idx: np.ndarray) -> np.ndarray:
            sampled, group = values[idx], codes[idx]
            present = ~np.isnan(sampled)
            out = np.empty(idx.shape[0])
            for row in range(idx.shape[0]):
                sums = np.bincount(group[row][present[row]], weights=sampled[row][present[row]], minlength=len(labels))
                counts = np.bincount(group[row][present[row]], minlength=len(labels))
                out[row] = np.mean(sums[counts > 0] / counts[counts > 0]) if counts.any() else np.nan
            return out

        return macro
    raise ValueError(f"item outcomes: unknown statistic {stat!r} for {metric}")


RIDGE = 1e-2  # a small L2 pull on the fit, so a judge that always prefers one side gives a finite rate


def length_controlled_rows(y: np.ndarray, x: np.ndarray, steps: int = 25) -> np.ndarray:
    """sigmoid(a) of the fit P(win) = sigmoid(a + b x) on each row (fractional y, nan = not counted),
    by Newton's method on the (ridge-penalized) log-likelihood, every row at once."""
    w = (~np.isnan(y) & ~np.isnan(x)).astype(float)  # a missing length is not counted, never fitted at x = 0
    y, x = np.nan_to_num(y), np.nan_to_num(x)
    a, b = np.zeros(y.shape[0]), np.zeros(y.shape[0])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a[:, None] + b[:, None] * x)))
        r, v = w * (y - p), w * p * (1 - p)
        g = np.stack([r.sum(1) - RIDGE * a, (r * x).sum(1) - RIDGE * b], axis=1)
        h00, h01, h11 = v.sum(1) + RIDGE, (v * x).sum(1), (v * x * x).sum(1) + RIDGE
        det = h00 * h11 - h01 * h01
        a = a + (h11 * g[:, 0] - h01 * g[:, 1]) / det
        b = b + (h00 * g[:, 1] - h01 * g[:, 0]) / det
    return np.where(w.sum(1) > 0, 1 / (1 + np.exp(-a)), np.nan)


def _nanmean_rows(rows: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(rows)).sum(axis=1)
    sums = np.nansum(rows, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    sx, sy = np.sqrt((xc ** 2).sum(axis=1)), np.sqrt((yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / (sx * sy)
    # as style.pearson: 0 when a side does not vary; a missing value makes the row unknown (nan), not 0
    return np.where(np.isnan(sx) | np.isnan(sy), np.nan, np.where((sx > 0) & (sy > 0), r, 0.0))


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED):
    """The bootstrap's index matrices, CHUNK resamples at a time, from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, resamples - start), n))


def bootstrap(fn: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = RESAMPLES,
              seed: int = SEED) -> np.ndarray:
    return np.concatenate([fn(idx) for idx in resample_indices(n, resamples, seed)])


def _entry(stderr: float | None, low: float | None, high: float | None, n: int, method: str,
           **extra: Any) -> dict[str, Any]:
    def clean(x):
        return None if x is None or not math.isfinite(x) else round(float(x), 6)

    ci = None if clean(low) is None or clean(high) is None else [clean(low), clean(high)]
    return {"stderr": clean(stderr), "ci95": ci, "n": int(n), "method": method, **extra}


def describe_metric(items: ItemOutcomes, metric: str, resamples: int = RESAMPLES,
                    seed: int = SEED) -> dict[str, Any] | None:
    """{"stderr", "ci95": [low, high], "n", "method"} of one metric; None when the items do not give it."""
    fn = statistic(items, metric)
    if fn is None:
        return None
    spec = items.spec(metric)
    n_items = len(items.ids)
    if spec.get("stat", "mean") in ("mean", "group"):
        row = fn(np.arange(n_items)[None, :])
        values = _array(items.values[spec["of"]])
        if spec.get("stat") == "group":
            values = values[np.array(items.groups) == spec["group"]]
        counted = int((~np.isnan(values)).sum())
        if counted == 0:
            return _entry(None, None, None, 0, "none (no item counts)")
        if _is_binary(values):
            p = float(row[0])
            low, high = wilson(p * counted, counted)
            return _entry(math.sqrt(p * (1 - p) / counted), low, high, counted, "wilson")
    else:
        counted = n_items
    if n_items < 2:
        return _entry(None, None, None, counted, "none (fewer than 2 items)")
    reps = bootstrap(fn, n_items, resamples, seed)
    reps = reps[~np.isnan(reps)]
    if reps.size < 2:
        return _entry(None, None, None, counted, "none (no resample has an item that counts)")
    return _entry(float(np.std(reps, ddof=1)), float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5)),
                  counted, "bootstrap", resamples=resamples, seed=seed)


def describe(items: ItemOutcomes | None, metrics: dict[str, float], resamples: int = RESAMPLES,
             seed: int = SEED) -> dict[str, dict[str, Any]]:
    """The uncertainty of every metric the items give (same keys as `metrics`; others left out: unknown)."""
    if items is None:
        return {}
    out = {}
    for metric in metrics:
        entry = describe_metric(items, metric, resamples, seed)
        if entry is not None:
            out[metric] = entry
    return out


def value(items: ItemOutcomes, metric: str) -> float | None:
    fn = statistic(items, metric)
    if fn is None:
        return None
    v = float(fn(np.arange(len(items.ids))[None, :])[0])
    return v if math.isfinite(v) else None


# --- paired comparisons ---------------------------------------------------------------------------
def aligned(base: ItemOutcomes, cell: ItemOutcomes) -> tuple[ItemOutcomes, ItemOutcomes] | None:
    """Both restricted to the items they share, in one order (by id); None when they share none."""
    where = {i: n for n, i in enumerate(cell.ids)}
    pairs = [(n, where[i]) for n, i in enumerate(base.ids) if i in where]
    if not pairs:
        return None
    b_idx, c_idx = (list(x) for x in zip(*pairs, strict=True))
    return _take(base, b_idx), _take(cell, c_idx)


def _take(items: ItemOutcomes, idx: list[int], derived: dict[str, dict[str, Any]] | None = None) -> ItemOutcomes:
    return ItemOutcomes([items.ids[i] for i in idx], {k: [v[i] for i in idx] for k, v in items.values.items()},
                        [items.groups[i] for i in idx] if items.groups is not None else None,
                        items.derived if derived is None else derived)


def paired(base: ItemOutcomes | None, cell: ItemOutcomes | None, metric: str, resamples: int = RESAMPLES,
           seed: int = SEED, transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
           ) -> dict[str, Any] | None:
    """cell - base on the items both answered: {"delta", "ci95", "p", "n", "method"} (+ "p_mid",
    "discordant" for McNemar). `transform(cell_reps, base_reps)` gives a derived quantity's
    interval from the same resamples (the gap closed); returned as "transformed_ci95"."""
    if base is None or cell is None:
        return None
    pair = aligned(base, cell)
    if pair is None:
        return None
    base, cell = pair
    spec = base.spec(metric)
    if spec is not None and spec.get("stat") == "group" and base.groups is not None:
        # one subject of MMLU: resample its own items only (the same statistic, a fraction of the work)
        keep = [i for i, g in enumerate(base.groups) if g == spec["group"]]
        if not keep:
            return None
        plain = {metric: {"stat": "mean", "of": spec["of"]}}
        base, cell = _take(base, keep, plain), _take(cell, keep, plain)
    fb, fc = statistic(base, metric), statistic(cell, metric)
    if fb is None or fc is None:
        return None
    n = len(base.ids)
    everything = np.arange(n)[None, :]
    b0, c0 = float(fb(everything)[0]), float(fc(everything)[0])
    if not (math.isfinite(b0) and math.isfinite(c0)):
        return None
    delta = c0 - b0
    out: dict[str, Any] = {"delta": round(delta, 6), "base": round(b0, 6), "cell": round(c0, 6), "n": n}
    spec = base.spec(metric)
    binary = False
    if spec.get("stat", "mean") == "mean":
        bv, cv = _array(base.values[spec["of"]]), _array(cell.values[spec["of"]])
        mask = ~np.isnan(bv) & ~np.isnan(cv)
        out["n"] = int(mask.sum())
        bm, cm = bv[mask], cv[mask]
        binary = bool(mask.any()) and bool(np.isin(bm, (0, 1)).all() and np.isin(cm, (0, 1)).all())
    if n < 2:
        out.update({"ci95": None, "p": None, "method": "none (fewer than 2 items)"})
        return out
    reps_b, reps_c = [], []
    for idx in resample_indices(n, resamples, seed):
        reps_b.append(fb(idx))
        reps_c.append(fc(idx))
    rb, rc = np.concatenate(reps_b), np.concatenate(reps_c)
    ok = np.isfinite(rb) & np.isfinite(rc)
    diffs = (rc - rb)[ok]
    if diffs.size < 2:
        out.update({"ci95": None, "p": None, "method": "none (no resample holds both)"})
        return out
    out["ci95"] = [round(float(np.percentile(diffs, 2.5)), 6), round(float(np.percentile(diffs, 97.5)), 6)]
    out["stderr"] = round(float(np.std(diffs, ddof=1)), 6)
    if binary:
        b = int(((bm == 1) & (cm == 0)).sum())
        c = int(((bm == 0) & (cm == 1)).sum())
        p, p_mid = mcnemar(b, c)
        out.update({"p": round(p, 6), "p_mid": round(p_mid, 6), "discordant": [b, c],
                    "method": "mcnemar exact; paired bootstrap interval"})
    else:
        # two-sided bootstrap p: how often the centred replicates are at least as far from 0 as the delta
        extreme = int((np.abs(diffs - diffs.mean()) >= abs(delta) - 1e-12).sum())
        out.update({"p": round((extreme + 1) / (diffs.size + 1), 6), "method": "paired bootstrap"})
    out.update({"resamples": resamples, "seed": seed})
    if transform is not None:
        t = transform(rc[ok], rb[ok])
        t = t[np.isfinite(t)]
        if t.size:
            out["transformed_ci95"] = [round(float(np.percentile(t, 2.5)), 6), round(float(np.percentile(t, 97.5)), 6)]
    return out
