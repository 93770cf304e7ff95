"""Named stages of a cell's life, where a test can stop it.

The preemption and lease tests stop a cell at a named stage rather than a random delay after a log
line, so they fail only when something is lost, never because the machine was fast or slow. With
IMITATION_GAP_PAUSE_AT set to a stage name (test runs only), the process prints
`paused at stage <name>` to stderr the first time it reaches that stage and waits there: to be
killed, or until the file named by IMITATION_GAP_RESUME_FILE exists. Without it, reaching a stage
costs one environment lookup.

Stages: prepare:loaded, prepare:rendering (worker processes tokenizing), store:<namespace>:written (an entry complete in its temporary folder, not
yet in place), train:state-saved, train:checkpoint-saved (the model written, train.json not yet),
eval:<benchmark>:start, eval:<benchmark>:scored (computed, nothing written), results:ready.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PAUSE_AT = "IMITATION_GAP_PAUSE_AT"
RESUME_FILE = "IMITATION_GAP_RESUME_FILE"
_paused: set[str] = set()


def reached(stage: str) -> None:
    if os.environ.get(PAUSE_AT) != stage or stage in _paused:
        return
    _paused.add(stage)
    print(f"\npaused at stage {stage}", file=sys.stderr, flush=True)  # own line, even after a progress bar
    resume = os.environ.get(RESUME_FILE)
    while not (resume and Path(resume).exists()):  # until the test kills this process or lets it go on
        time.sleep(0.05)
