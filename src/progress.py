"""Progress bars that update live on a terminal and print a line a minute into non-TTY logs."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable, desc: str, **kwargs):
    return tqdm(iterable, desc=desc, mininterval=0.5 if sys.stderr.isatty() else 60, **kwargs)
