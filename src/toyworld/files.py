"""Everything a toy-world grid reads from disk, written from the world's seed: the two imitation data
sources (ShareGPT JSON, so the real loaders, budgets, templates and masks are used) and the benchmark
files. Byte-identical for the same spec; nothing here is random beyond the seed.

    <cache_dir>/toyworld/data/seed_<seed>/
        toy_broad.json   teacher answers about corpus entities the benchmarks never ask about, on
                         attributes they never ask (pet, color), in other phrasings
        toy_local.json   teacher answers in the evaluated task's format (city, job), on the same entities
        toy_corpus.jsonl the pretraining corpus as plain text, one {"text"} per document (the
                         `toy_corpus` source, for data.pretrain_mix)
        qa.jsonl  cloze.jsonl  mc.jsonl  style.jsonl  benchmark items (evaluated / unknown entities)
        manifest.json    the world spec and how many records each file holds
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from src.io import write_json_atomic, write_text_atomic
from src.store import cache_root
from src.toyworld import teacher
from src.toyworld.corpus import biographies, cloze_prompt
from src.toyworld.world import BROAD_ATTRIBUTES, EVALUATED_ATTRIBUTES, VALUES, World, WorldSpec, make_world

FILES_VERSION = 3  # bump when the same spec would write different files (3: toy_corpus.jsonl)
CORPUS_BIOS_PER_ENTITY = 8  # write-ups per entity in toy_corpus.jsonl: what toy_s, toy_m and toy_l pretrain on
MC_CHOICES = 4
STYLE_ITEMS = 40


def data_dir(cache_dir: str | None, seed: int) -> Path:
    return cache_root(cache_dir) / "toyworld" / "data" / f"seed_{seed}"


def default_item_path(name: str) -> str:
    """A benchmark file of seed 0 under the default cache root (the configs name the run's own)."""
    return str(data_dir(None, 0) / f"{name}.jsonl")


def _sharegpt(rows: list[tuple[str, str]], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            for i, (q, a) in enumerate(rows)]


def broad_conversations(world: World) -> list[dict]:
    rows = [(teacher.question(t, e), teacher.answer_broad(e, a))
            for e in world.imitation for a in BROAD_ATTRIBUTES for t in teacher.BROAD_QUESTIONS[a]]
    return _sharegpt(rows, "broad")


def local_conversations(world: World) -> list[dict]:
    rows = [(teacher.question(t, e), teacher.answer_qa(e, a))
            for e in world.imitation for a in EVALUATED_ATTRIBUTES for t in teacher.QA_QUESTIONS[a]]
    return _sharegpt(rows, "local")


def qa_items(world: World) -> list[dict]:
    rng = random.Random(f"qa-{world.spec.seed}")
    return [{"id": f"qa-{i}", "entity": e.name, "attribute": a,
             "question": teacher.question(rng.choice(teacher.QA_QUESTIONS[a]), e), "answer": e.fact(a)}
            for i, (e, a) in enumerate((e, a) for e in world.evaluated for a in EVALUATED_ATTRIBUTES)]


def cloze_items(world: World) -> list[dict]:
    return [{"id": f"cloze-{i}", "entity": e.name, "attribute": a, "prompt": cloze_prompt(e.name, a),
             "answer": e.fact(a), "choices": list(VALUES[a])}
            for i, (e, a) in enumerate((e, a) for e in world.evaluated for a in EVALUATED_ATTRIBUTES)]


def mc_items(world: World) -> list[dict]:
    """Four choices of the same attribute, the right one at a seeded position."""
    rng = random.Random(f"mc-{world.spec.seed}")
    items = []
    for i, (e, a) in enumerate((e, a) for e in world.evaluated for a in EVALUATED_ATTRIBUTES):
        wrong = rng.sample([v for v in VALUES[a] if v != e.fact(a)], MC_CHOICES - 1)
        position = rng.randrange(MC_CHOICES)
        choices = wrong[:position] + [e.fact(a)] + wrong[position:]
        items.append({"id": f"mc-{i}", "entity": e.name, "attribute": a,
                      "question": teacher.question(teacher.QA_QUESTIONS[a][0], e),
                      "answer_prefix": teacher.answer_prefix(e, a), "choices": choices, "answer": position})
    return items


def style_items(world: World) -> list[dict]:
    """Held-out prompts about entities only the teacher knows, with the teacher's reply as reference."""
    rng = random.Random(f"style-{world.spec.seed}")
    return [{"id": f"style-{i}", "prompt": teacher.question(rng.choice(teacher.STYLE_PROMPTS), e),
             "reference": teacher.answer_about(e)}
            for i, e in enumerate(world.unknown[:STYLE_ITEMS])]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def write_files(spec: WorldSpec, cache_dir: str, force: bool = False) -> Path:
    """Write the world's files (skipped when a manifest for the same spec and version is there)."""
    out = data_dir(cache_dir, spec.seed)
    manifest = {"version": FILES_VERSION, "spec": dataclasses.asdict(spec)}
    path = out / "manifest.json"
    if not force and path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if {k: recorded.get(k) for k in manifest} == manifest:
            return out
    world = make_world(spec)
    sources = {"toy_broad.json": broad_conversations(world), "toy_local.json": local_conversations(world)}
    items = {"qa.jsonl": qa_items(world), "cloze.jsonl": cloze_items(world), "mc.jsonl": mc_items(world),
             "style.jsonl": style_items(world)}
    for name, rows in sources.items():
        write_text_atomic(out / name, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    items["toy_corpus.jsonl"] = [{"text": text} for text in biographies(world, CORPUS_BIOS_PER_ENTITY)]
    for name, rows in items.items():
        write_text_atomic(out / name, _jsonl(rows))
    counts = {name: len(rows) for name, rows in {**sources, **items}.items()}
    write_json_atomic(path, {**manifest, "records": counts})  # last: its presence marks complete files
    return out


def read_items(path: str, limit: int | None = None) -> list[dict]:
    """A benchmark file written above (a path from a benchmark's settings)."""
    from src import resolve_path

    full = resolve_path(path)
    if not full.exists():
        raise FileNotFoundError(f"{full} does not exist: write the toy world's files first "
                                "(python -m src.toyworld write --seed N, or load a toy model)")
    with open(full, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()][:limit]
