"""imitation-gap: fine-tune open base LMs on imitation data and measure the capability gap."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str) -> Path:
    """A config path: absolute, or relative to the project root (Hydra may run from elsewhere)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else PROJECT_ROOT / p
