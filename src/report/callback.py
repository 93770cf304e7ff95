"""Hydra callbacks: the report of a grid is written as soon as its multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import resolve_path
from src.results import failed_cells

log = logging.getLogger(__name__)


class ReportOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from src.report.tables import report

        sweep_dir = Path(config.hydra.sweep.dir)
        teacher = config.get("report_teacher")
        try:
            if any(sweep_dir.rglob("results.json")):
                log.info("report:\n%s", report(sweep_dir, teacher_path=resolve_path(teacher) if teacher else None))
            else:
                log.warning("no results.json under %s: no report", sweep_dir)
        except Exception as err:  # a failed report never fails the grid whose cells are already written
            log.error("could not write the report of %s: %s", sweep_dir, err)
        failed = failed_cells(sweep_dir)
        if failed:
            lines = "\n".join(f"  {f['job_dir']}: {f.get('error', f['state'])}" for f in failed)
            log.error("%d cell(s) did not finish; relaunch the same command to retry only them:\n%s",
                      len(failed), lines)
            raise SystemExit(1)
