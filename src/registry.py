"""Registries keyed by name: how plug-ins (benchmarks, model sources, evaluation backends, data formats)
make themselves known without anything below them importing them.

A plug-in registers itself when its module is imported (src/plugins.py imports every one); a lookup
of a name nobody registered is one ConfigError naming the setting and the names that exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from src.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what the names name, for messages: "benchmark", "eval_backend", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str, key: str | None = None) -> T:
        """The entry of `name`; `key` is the config key that asked for it (for the message)."""
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}{self.kind} {name!r} is not known (known: {', '.join(self._entries)})")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()
