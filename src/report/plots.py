"""The report's figures, each from the list of results.json records (src/results.py) of a grid."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from src.io import atomic_path  # noqa: E402
from src.report.stats import Point, ci_of, points  # noqa: E402
from src.results import Results  # noqa: E402


def _panels(n: int, width: float = 4.8, height: float = 3.6):
    cols = min(3, max(1, n))
    rows = math.ceil(max(1, n) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _save(fig, path: Path, axes=()) -> None:
    """One legend for the figure, with every label any panel drew (once)."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        handles, labels = list(seen.values()), list(seen)
        if labels:
            fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(path) as tmp:  # the format follows the suffix, which the temporary name keeps
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _lines(rows: list[Results]) -> dict[tuple[str, str], list[Results]]:
    lines: dict[tuple[str, str], list[Results]] = {}
    for r in rows:
        lines.setdefault((r.axes.model, r.axes.data_source), []).append(r)
    return dict(sorted(lines.items()))


def spread(point: Point, metric: str) -> tuple[float, float, float, float | None, float | None]:
    """(mean, lower error, upper error, band low, band high) of a point: the 95% interval over items
    (one cell's; several seeds: the cells' intervals averaged end by end) and, for several seeds, a
    band of mean +- sd over seeds. No recorded interval (an older file): no bar."""
    mean = point.mean(metric)
    ci = point.item_ci95(metric)
    low, high = (max(0.0, mean - ci[0]), max(0.0, ci[1] - mean)) if ci else (0.0, 0.0)
    if len([c for c in point.cells if metric in c.metrics]) == 1:
        return mean, low, high, None, None
    sd = point.seed_sd(metric) or 0.0
    return mean, low, high, mean - sd, mean + sd


def plot_scaling(rows: list[Results], metrics: list[str], path: Path, teacher: dict | None = None) -> None:
    """Metric vs imitation tokens (log x), a line per (model, source) with 95% error bars over items and a
    band over seeds; base (shaded by its interval) and teacher dashed."""
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        for index, ((model, source), cells) in enumerate(_lines(rows).items()):
            color = f"C{index}"
            trained = [p for p in points([c for c in cells if c.tokens.total > 0 and metric in c.metrics])]
            trained.sort(key=lambda p: p.tokens)
            base = [p for p in points([c for c in cells if c.tokens.total == 0 and metric in c.metrics])]
            if trained:
                values = [spread(p, metric) for p in trained]
                xs = [p.tokens for p in trained]
                seeds = max(len(p.cells) for p in trained)
                ax.errorbar(xs, [v[0] for v in values], yerr=[[v[1] for v in values], [v[2] for v in values]],
                            marker="o", color=color, capsize=3,
                            label=f"{model} + {source}" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
                if any(v[3] is not None and v[4] > v[3] for v in values):
                    ax.fill_between(xs, [v[3] if v[3] is not None else v[0] for v in values],
                                    [v[4] if v[4] is not None else v[0] for v in values], color=color, alpha=0.2,
                                    linewidth=0, label=f"{model} + {source}: +- sd over seeds")
            if base:
                mean, low, high, band_low, band_high = spread(base[0], metric)
                ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=f"{model} base (0 tokens)")
                if low or high:
                    ax.axhspan(mean - low, mean + high, color=color, alpha=0.08, linewidth=0)
        if teacher and metric in teacher["metrics"]:
            ax.axhline(teacher["metrics"][metric], color="black", linestyle=":", linewidth=1.2,
                       label=f"teacher: {teacher['name']}")
        ax.set_xscale("log")
        ax.set_title(metric)
        ax.set_xlabel("imitation tokens (formatted conversations)")
        ax.grid(alpha=0.3)
    _save(fig, path, axes)


def _bars(cells: list[Results], metric: str) -> list[list[float]]:
    """Each cell's 95% interval over items as (below, above) error bars; none where unknown."""
    below, above = [], []
    for c in cells:
        ci = ci_of(c, metric)
        below.append(max(0.0, c.metrics[metric] - ci[0]) if ci else 0.0)
        above.append(max(0.0, ci[1] - c.metrics[metric]) if ci else 0.0)
    return [below, above]


def plot_model_size(rows: list[Results], metrics: list[str], path: Path) -> None:
    """Metric vs base-model parameters (log x): the base models and each one's largest imitation cell."""
    fig, axes = _panels(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        by_source: dict[str, dict[str, list[Results]]] = {}
        for r in rows:
            if metric in r.metrics and r.model_parameters:
                by_source.setdefault(r.axes.data_source, {}).setdefault(r.axes.model, []).append(r)
        for index, (source, models) in enumerate(sorted(by_source.items())):
            base = sorted((c for cells in models.values() for c in cells if c.tokens.total == 0),
                          key=lambda c: c.model_parameters)
            largest = sorted((max(cells, key=lambda c: c.tokens.total) for cells in models.values()
                              if any(c.tokens.total > 0 for c in cells)), key=lambda c: c.model_parameters)
            if base:
                ax.errorbar([c.model_parameters for c in base], [c.metrics[metric] for c in base],
                            yerr=_bars(base, metric), marker="s", linestyle="--", color=f"C{index}", capsize=3,
                            label=f"base models ({source} grid)")
            if largest:
                ax.errorbar([c.model_parameters for c in largest], [c.metrics[metric] for c in largest],
                            yerr=_bars(largest, metric), marker="o", color=f"C{index}", capsize=3,
                            label=f"+ largest {source} budget")
        ax.set_xscale("log")
        ax.set_title(metric)
        ax.set_xlabel("base-model parameters")
        ax.grid(alpha=0.3)
    _save(fig, path, axes)


def plot_style_vs_substance(rows: list[Results], style_metric: str, substance: list[str], path: Path) -> None:
    """Each cell as a point: style (x) against a capability benchmark (y). Imitation moves points right;
    the study's finding is that they do not move up."""
    fig, axes = _panels(len(substance))
    for ax, metric in zip(axes, substance, strict=True):
        for index, ((model, source), cells) in enumerate(_lines(rows).items()):
            cells = [c for c in cells if style_metric in c.metrics and metric in c.metrics]
            if not cells:
                continue
            xs = [c.metrics[style_metric] for c in cells]
            ys = [c.metrics[metric] for c in cells]
            ax.plot(xs, ys, marker="o", color=f"C{index}", label=f"{model} + {source}")
            for c, x, y in zip(cells, xs, ys, strict=True):
                ax.annotate(c.axes.amount_label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(style_metric)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {style_metric}")
        ax.grid(alpha=0.3)
    _save(fig, path, axes)
