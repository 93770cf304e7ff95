"""The one shape every source is normalized to: a conversation of role-tagged messages."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple[Message, ...]
    origin: str = ""  # file:line (or dataset:index) the record came from, for error messages


@dataclass
class LoadReport:
    """Counts at every cleaning step, so nothing is dropped silently."""

    source: str
    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # first origin seen per drop reason
    steps: dict[str, int] = field(default_factory=dict)  # counts after each stage, in order
    changed: dict[str, int] = field(default_factory=dict)  # conversations kept but altered, per change
    parts: dict[str, dict] = field(default_factory=dict)  # per part of a mixture

    def drop(self, reason: str, origin: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.examples.setdefault(reason, origin)

    @property
    def bad(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        out = {"source": self.source, "read": self.read, "kept": self.kept, "steps": dict(self.steps),
               "dropped": dict(self.dropped), "changed": dict(self.changed),
               "first_dropped_at": dict(self.examples)}
        if self.parts:
            out["parts"] = self.parts
        return out
