"""A saved W&B workspace per sweep, laying out the report's panels: for every metric of the grid, a
scatter of the metric against imitation tokens (log x), plus the training curves.

    python -m src.report.dashboard multirun/demo          # needs a W&B key (online); `make dashboard SWEEP=...`

The metrics and the sweep name are read from the grid's results.json files (the local truth); the
runs are those the cells logged (group = sweep name).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.report.tables import STYLE_PREFIXES, load_results, metric_names
from src.results import Results
from src.tracking import has_wandb_key


def build_workspace(rows: list[Results], entity: str, project: str):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    sweep = rows[0].sweep
    metrics = metric_names(rows)
    tokens = wr.SummaryMetric("tokens/total")

    def scatter(metric: str):
        return wr.ScatterPlot(title=f"{metric} vs imitation tokens", x=tokens, y=wr.SummaryMetric(metric), log_x=True)

    substance = [m for m in metrics if not m.startswith(STYLE_PREFIXES)]
    style = [m for m in metrics if m.startswith(STYLE_PREFIXES)]
    sections = [ws.Section(name="Capability vs imitation tokens", panels=[scatter(m) for m in substance], is_open=True)]
    if style:
        sections.append(ws.Section(name="Style vs imitation tokens", panels=[scatter(m) for m in style], is_open=True))
    sections.append(ws.Section(name="Training", is_open=False, panels=[
        wr.LinePlot(title=key, x="train/tokens_seen", y=[key]) for key in ("train/loss", "train/lr", "train/grad_norm")]))
    return ws.Workspace(
        name=f"imitation-gap: {sweep}", entity=entity, project=project, sections=sections,
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == sweep],
                                          groupby=[ws.Config("model.name"), ws.Config("data.source.name")]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep folder with results.json files")
    parser.add_argument("--entity", required=False, default=None)
    parser.add_argument("--project", default="imitation-gap")
    args = parser.parse_args()
    rows = load_results(args.sweep)
    if not rows:
        raise SystemExit(f"error: no results.json under {args.sweep}")
    if not has_wandb_key():
        raise SystemExit("error: a W&B dashboard needs a key (WANDB_API_KEY or `wandb login`); the local report "
                         "(python -m src.report) needs none")
    import wandb

    entity = args.entity or wandb.Api().default_entity
    workspace = build_workspace(rows, entity, args.project).save()
    print(f"saved workspace: {workspace.url}")


if __name__ == "__main__":
    main()
