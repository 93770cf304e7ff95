"""One content-keyed store behind every cache: prepared data, base-model scores, judgments, converted
models and toy pretraining.

    store = Store(cache_root(cfg.cache_dir) / "prepared")
    key = Store.key({"what": ..., "determines": ...}, label="readable-prefix")
    folder, hit = store.get_or_make(key, lambda tmp: write_everything_into(tmp))

An entry is a folder named by its key: the hash of everything that determines its content, so a
change to any input is a new entry, never a stale hit. It is written in a temporary folder and
renamed into place (src/io.atomic_dir), so an entry that exists is complete; a writer killed midway
leaves only a temporary folder (a name starting with '.') that the next writer of that key removes.
Writers of one key take a lock (src/io.file_lock) so the work is done once: a second process waits,
then finds the entry.

The cache root is read in one place, `cache_root`: the setting (`cache_dir` in the config,
`--cache-dir` on the command lines), else $IMITATION_GAP_CACHE, else ~/.cache/imitation-gap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.io import atomic_dir, file_lock, write_json_atomic
from src.stages import reached

CACHE_ENV = "IMITATION_GAP_CACHE"


def default_cache_dir() -> str:
    """The cache root when nothing is set: what config defaults and command-line defaults use."""
    return os.environ.get(CACHE_ENV, "~/.cache/imitation-gap")


def cache_root(setting: str | os.PathLike | None = None) -> Path:
    return Path(os.path.expanduser(str(setting if setting else default_cache_dir())))


def digest(payload: Any, length: int = 20) -> str:
    """A hash of a JSON-able payload, independent of key order."""
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @staticmethod
    def key(payload: Any, label: str | None = None, length: int = 20) -> str:
        return f"{label}-{digest(payload, length)}" if label else digest(payload, length)

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> Path | None:
        """The entry's folder if it is there (and so complete), else None."""
        path = self.path(key)
        return path if path.is_dir() else None

    def get_or_make(self, key: str, write: Callable[[Path], None]) -> tuple[Path, bool]:
        """(the entry's folder, whether it was there already). `write(folder)` fills a temporary
        folder; it becomes the entry when `write` returns. One writer per key at a time."""
        if (found := self.get(key)) is not None:
            return found, True
        with file_lock(self.root / ".locks" / f"{key}.lock"):
            if (found := self.get(key)) is not None:  # another process made it while we waited
                return found, True
            for leftover in self.root.glob(f".{key}.*.tmp"):  # a writer of this key killed midway
                shutil.rmtree(leftover, ignore_errors=True)
            with atomic_dir(self.path(key)) as tmp:
                write(tmp)
                reached(f"store:{self.root.name}:written")
        return self.path(key), False

    def read_json(self, key: str, name: str = "value.json") -> Any | None:
        found = self.get(key)
        return json.loads((found / name).read_text(encoding="utf-8")) if found is not None else None

    def write_json(self, key: str, value: Any, name: str = "value.json") -> Path:
        """A small entry holding one JSON document (an existing entry is kept: same key, same content)."""
        path, _ = self.get_or_make(key, lambda tmp: write_json_atomic(tmp / name, value))
        return path
