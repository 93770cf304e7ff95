"""The world: fictional people, each with one value per attribute, and who is seen where.

Every entity exists for the teacher. Only `in_corpus` entities are written into the pretraining
corpus (what a base model can know); `evaluated` is a subset of those that benchmarks ask about and
that no imitation data ever mentions. Evaluated attributes are the ones the QA benchmark asks;
broad imitation talks only about the others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Single words, distinct across attributes and names, so a word-level tokenizer sees each name and each
# value as one token (a name is then one embedding the facts can attach to) and an answer can be scored
# by the value it names.
VALUES: dict[str, tuple[str, ...]] = {
    "city": ("paris", "lyon", "oslo", "lima", "cairo", "dublin", "madrid", "vienna", "prague", "berlin", "rome",
             "tokyo", "seoul", "delhi", "quito", "riga", "tunis", "accra", "hanoi", "lisbon"),
    "job": ("baker", "doctor", "farmer", "pilot", "teacher", "painter", "lawyer", "nurse", "chef", "sailor",
            "miner", "poet", "judge", "tailor", "dentist", "plumber", "singer", "actor", "writer", "barber"),
    "pet": ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "lizard", "ferret", "pony",
            "snake", "owl"),
    "color": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray",
              "teal"),
}
ATTRIBUTES = tuple(VALUES)
NAME_POOL_SIZE = 800


def _name_pool() -> tuple[str, ...]:
    """NAME_POOL_SIZE invented two-syllable names (consonant-vowel-consonant-vowel), the same for every
    world, so that every toy model shares one vocabulary; a world draws its people from them."""
    taken = {v for values in VALUES.values() for v in values}
    names = sorted(c1 + v1 + c2 + v2 for c1 in "bdfgklmnprstvz" for v1 in "aeiou" for c2 in "bdfgklmnprstvz"
                   for v2 in "aeiou")
    names = [n for n in names if n not in taken]
    random.Random("toyworld-names").shuffle(names)
    return tuple(names[:NAME_POOL_SIZE])


NAMES = _name_pool()
EVALUATED_ATTRIBUTES = ("city", "job")  # what the QA, cloze and multiple-choice benchmarks ask
BROAD_ATTRIBUTES = ("pet", "color")  # what broad imitation talks about: never evaluated


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 0
    n_entities: int = 600  # everyone the teacher knows
    n_in_corpus: int = 400  # written into the pretraining corpus
    n_evaluated: int = 50  # asked about by the benchmarks; a subset of the corpus entities

    def validate(self) -> None:
        if not 0 < self.n_evaluated < self.n_in_corpus <= self.n_entities <= len(NAMES):
            raise ValueError(f"toy world: need 0 < n_evaluated < n_in_corpus <= n_entities <= {len(NAMES)}, "
                             f"got {self}")


@dataclass(frozen=True)
class Entity:
    name: str
    facts: tuple[tuple[str, str], ...]  # (attribute, value) in ATTRIBUTES order

    def fact(self, attribute: str) -> str:
        return dict(self.facts)[attribute]


@dataclass(frozen=True)
class World:
    spec: WorldSpec
    entities: tuple[Entity, ...]
    in_corpus: tuple[Entity, ...] = field(repr=False)
    evaluated: tuple[Entity, ...] = field(repr=False)

    @property
    def imitation(self) -> tuple[Entity, ...]:
        """Corpus entities the benchmarks never ask about: the only ones imitation data mentions."""
        held = {e.name for e in self.evaluated}
        return tuple(e for e in self.in_corpus if e.name not in held)

    @property
    def unknown(self) -> tuple[Entity, ...]:
        """Entities only the teacher knows (never in the corpus): the style benchmark's prompts."""
        seen = {e.name for e in self.in_corpus}
        return tuple(e for e in self.entities if e.name not in seen)


def make_world(spec: WorldSpec) -> World:
    spec.validate()
    rng = random.Random(f"toyworld-{spec.seed}")  # a string seed: stable across Python versions
    names = rng.sample(NAMES, spec.n_entities)
    entities = tuple(Entity(name, tuple((a, rng.choice(VALUES[a])) for a in ATTRIBUTES))
                     for name in names[: spec.n_entities])
    in_corpus = entities[: spec.n_in_corpus]
    return World(spec, entities, in_corpus, in_corpus[: spec.n_evaluated])
