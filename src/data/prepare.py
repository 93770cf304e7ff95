"""prepare: load -> clean -> one seeded shuffle -> template + masks (splitting conversations longer
than the context at turn boundaries) -> token budget -> pack -> cache.

The cache (an entry of the store under <cache_dir>/prepared, src/store.py) is keyed by the source's
content, its cleaning settings, the tokenizer, the template, the budget and the packing, so a second
cell with the same key tokenizes nothing, and any change makes a new entry rather than a stale hit.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import random
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src import resolve_path
from src.config import ConfigError, DataConfig, DataSourceConfig
from src.data.budget import iter_budget
from src.data.clean import split_at_turns
from src.data.conversation import Conversation
from src.data.packing import PackedRow, RowArrays, StreamPacker, TurnRows, pack  # noqa: F401  pack: what prepare's rows are
from src.data.prepared import PreparedRows, RowWriter
from src.data.pretrain_mix import Mix, Rest, TextPiece, cache_part
from src.data.sources import in_process, scan_source, source_config_by_name
from src.data.template import IGNORE, ChatFormat, Rendered, TemplateError, render
from src.io import write_json_atomic
from src.io import write_json_atomic as write_memo  # the memo's own name: what tests patch is the entry's
from src.progress import progress
from src.stages import reached
from src.store import Store, cache_root

log = logging.getLogger(__name__)
PREPARE_VERSION = 2  # bump when the prepared data for the same inputs would change (2: memory-mapped arrays)


@dataclass
class PreparedData:
    rows: Sequence[PackedRow]  # PreparedRows (memory-mapped, src/data/prepared.py) when cached, else a list
    examples: int  # rendered examples (conversations or pieces of them) inside the budget
    total_tokens: int  # formatted conversation tokens: what data.amount counts
    loss_tokens: int  # tokens that carry a label (assistant replies and end-of-turn)
    packing_efficiency: float
    template: str
    load_report: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)  # conversations split at turn boundaries, pieces over the context
    cache: str = "miss"  # hit | miss | off
    # with budget boundaries (milestone mode): per boundary, the summary a run on that budget has
    milestones: list[dict] = field(default_factory=list)
    # data.pretrain_mix (src/data/pretrain_mix.py): its source, share, tokens and loss tokens; {} when off
    pretrain: dict = field(default_factory=dict)
    # the encoder-decoder layout (src/data/packing.py TurnRows): its counts; {} for packed decoder-only rows
    turns: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = {"examples": self.examples, "total_tokens": self.total_tokens, "loss_tokens": self.loss_tokens,
               "rows": len(self.rows), "packing_efficiency": round(self.packing_efficiency, 4),
               "template": self.template, "load": self.load_report, "split": self.split, "cache": self.cache}
        return out | ({"pretrain": self.pretrain} if self.pretrain else {}) | ({"turns": self.turns} if self.turns else {})


def prepare(cfg: DataConfig, tokenizer, fmt: ChatFormat, block_length: int, context_length: int,
            cache_dir: str | None = None, boundaries: list[int] = (), workers: int = 1,
            chunk: int = 64, encoder_decoder: bool = False) -> PreparedData:
    """`boundaries` (token counts below the budget) make each increment pack on its own, so the rows
    of a smaller budget are a prefix of these rows (milestone mode; src/data/packing.py). `workers`
    processes render conversations `chunk` at a time, consumed in the shuffled order: the output is
    the same bytes for any number of workers and any chunk. `encoder_decoder`: one row per assistant
    reply instead of packed rows (T5; src/data/packing.py TurnRows), under the same budget."""
    if encoder_decoder and cfg.pretrain_mix.active:
        raise ConfigError("data.pretrain_mix: mixing pre-training text into an encoder-decoder model's data is not "
                        "built (a text piece has no reply to put in the decoder); set data.pretrain_mix.share=0")
    boundaries = sorted(b for b in boundaries if cfg.amount is None or b < cfg.amount)
    store = Store(cache_root(cache_dir) / "prepared") if cache_dir else None
    key = cache_key(cfg, tokenizer, fmt, block_length, context_length, boundaries,
                    memo=store.root / ".hashes" if store is not None else None, encoder_decoder=encoder_decoder)
    if store is not None and (found := store.get(key)) is not None:
        hit = _open(found)
        log.info("prepared data from the cache (%s): %d tokens, %d rows", key, hit.total_tokens, len(hit.rows))
        return hit

    job = (cfg, tokenizer, fmt, block_length, context_length, boundaries, workers, chunk, encoder_decoder)
    if store is None:
        rows: list[PackedRow] = []
        with tempfile.TemporaryDirectory(prefix="prepare-") as scratch:
            data = _prepare_stream(*job, emit=lambda row: rows.append(row.packed()), scratch=Path(scratch))
        data.rows, data.cache = rows, "off"
        return data
    made = {}

    def write(folder: Path) -> None:  # rows go straight into the entry's arrays as they are packed
        writer = RowWriter(folder, len(tokenizer), block_length)
        try:
            made["data"] = data = _prepare_stream(*job, emit=writer.add, scratch=folder)
        except BaseException:
            writer.abandon()
            raise
        writer.close()
        data.rows = PreparedRows(folder)  # so the summary counts them
        write_json_atomic(folder / "summary.json", data.summary() | {"cache": "hit", "milestones": data.milestones})

    folder, _ = store.get_or_make(key, write)
    if "data" not in made:  # another process made the entry while this one waited for it
        return _open(folder)
    data = made["data"]
    data.rows = _open(folder).rows  # read from the map: every caller sees one kind of rows
    return data


def _prepare_stream(cfg: DataConfig, tokenizer, fmt: ChatFormat, block_length: int, context_length: int,
                    boundaries: list[int], workers: int, chunk: int, encoder_decoder: bool, emit,
                    scratch: Path) -> PreparedData:
    """Two passes over one set of `workers` processes. (1) Read the source a block at a time; the
    workers parse and clean batches of records, and each kept conversation is appended, pickled, to
    a scratch file in `scratch` (removed at the end), its offset kept: 8 bytes a conversation are
    what this process holds of the source. (2) One seeded shuffle of those offsets; the workers read
    and render the conversations `chunk` at a time in that order, and each example is budgeted and
    packed as it comes; each packed row goes to `emit` as it fills. Deduplication, counting, the
    budget and the packing happen here, in order, so the bytes are the same for any number of
    workers and any chunk. Returns the counts (rows empty)."""
    spill = scratch / ".conversations.pickles"
    offsets = array("q", [0])  # conversation i is spill bytes [offsets[i], offsets[i + 1])
    job = (tokenizer, fmt, context_length, cfg.source.clean.split_long, spill)
    if workers > 1 and _converts_html(cfg.source):
        import markdownify  # noqa: F401  imported once before the fork, not once in every worker
    try:
        with _workers(workers, job) as run, contextlib.ExitStack() as stack:
            with open(spill, "wb") as out:
                def keep(blob: bytes) -> None:
                    reached("prepare:cleaning")  # the workers are cleaning, the scratch file half-written
                    out.write(blob)
                    offsets.append(offsets[-1] + len(blob))

                report = scan_source(cfg.source, keep, run, serialize=True)
            log.info("loaded %s: read %d, kept %d, dropped %s", cfg.source.name, report.read, report.kept,
                     report.dropped)
            reached("prepare:loaded")
            split = {"conversations_split": 0, "pieces_over_context": 0}
            order = list(range(len(offsets) - 1))
            random.Random(cfg.shuffle_seed).shuffle(order)  # the permutation budget.shuffled makes
            bar = stack.enter_context(contextlib.closing(progress(None, "prepare", total=len(order), unit="conv")))

            def tasks() -> Iterator[tuple[list[tuple[int, int]], bool]]:
                for start in range(0, len(order), chunk):
                    yield [(offsets[i], offsets[i + 1] - offsets[i]) for i in order[start:start + chunk]], workers > 1

            def examples() -> Iterator[Rendered]:
                with contextlib.closing(run(render_batch, tasks())) as results:
                    for batch in results:
                        reached("prepare:rendering")  # the workers are running (where a test kills the prepare)
                        for pieces, was_split, over in batch:
                            split["conversations_split"] += was_split
                            split["pieces_over_context"] += over
                            bar.update()
                            for piece in pieces:
                                yield expand(piece)

            return _budget_and_pack(cfg, tokenizer, fmt, block_length, boundaries, examples(), emit, report, split,
                                    TurnRows if encoder_decoder else StreamPacker)
    finally:
        spill.unlink(missing_ok=True)


def _converts_html(cfg: DataSourceConfig) -> bool:
    if cfg.format == "mix":
        return any(_converts_html(source_config_by_name(part.source)) for part in cfg.mix)
    return cfg.clean.html_to_markdown


def _budget_and_pack(cfg: DataConfig, tokenizer, fmt: ChatFormat, block_length: int, boundaries: list[int],
                     rendered: Iterator[Rendered], emit, report, split: dict,
                     layout: type[StreamPacker] = StreamPacker) -> PreparedData:
    counts = {"tokens": 0, "loss": 0}
    prefixes: list[tuple[int, int]] = []  # (row tokens, loss tokens) before each boundary
    mix = Mix.of(cfg)  # pre-training text between the examples (None: off)
    text_prefixes: list[tuple[int, int]] = []  # (its tokens, its loss tokens) before each boundary

    def count_and_emit(row: RowArrays) -> None:
        counts["tokens"] += len(row.input_ids)
        counts["loss"] += row.loss_tokens
        emit(row)

    placing = {"from": None}  # loss_placed when the text piece being packed began (a boundary can end it)

    def at_boundary() -> None:
        prefixes.append((counts["tokens"], counts["loss"]))
        if mix:
            now = packer.loss_placed - placing["from"] if placing["from"] is not None else 0
            text_prefixes.append((mix.tokens, mix.loss_tokens + now))

    packer = layout(block_length, count_and_emit, mix.stream_edges(boundaries) if mix else boundaries,
                          on_boundary=at_boundary)
    starts_below = [0] * len(boundaries)  # examples that start before each boundary
    examples_taken = total = 0
    stream = iter_budget(rendered, cfg.amount, source=f"data source '{cfg.source.name}'")
    if mix:
        stream = mix.interleave(stream, tokenizer, cfg.shuffle_seed, boundaries, cfg.amount)
    for example in stream:
        if isinstance(example, TextPiece):  # counted apart: data.amount counts imitation tokens only
            placing["from"] = packer.loss_placed
            mix.tokens += len(example.input_ids)
            packer.add(example)
            mix.loss_tokens += packer.loss_placed - placing["from"]
            placing["from"] = None
            continue
        if not isinstance(example, Rest):  # the rest of an example the mix cut at a boundary is not a new one
            for i, boundary in enumerate(boundaries):
                starts_below[i] += total < boundary
            examples_taken += 1
        total += len(example.input_ids)
        packer.add(example)
    ends = packer.finish()
    while len(prefixes) < len(ends):
        at_boundary()
    text_loss = mix.loss_tokens if mix else 0
    milestones = [{"amount": amount, "rows": end, "total_tokens": amount, "examples": below, "loss_tokens": loss,
                   "packing_efficiency": round(tokens / (end * block_length) if end else 0.0, 4)}
                  for amount, end, below, (tokens, loss) in zip(boundaries, ends, starts_below, prefixes, strict=True)]
    for record, (text_tokens, text_loss_then) in zip(milestones, text_prefixes, strict=False):  # none when off
        record["loss_tokens"] -= text_loss_then
        record["pretrain"] = mix.summary() | {"tokens": text_tokens, "loss_tokens": text_loss_then}
    data = PreparedData(rows=[], examples=examples_taken, total_tokens=total, loss_tokens=counts["loss"] - text_loss,
                        packing_efficiency=counts["tokens"] / (packer.rows * block_length) if packer.rows else 0.0,
                        template=fmt.name, load_report=report.as_dict(), split=split, cache="miss",
                        milestones=milestones, pretrain=mix.summary() if mix else {},
                        turns=dict(packer.counts) if isinstance(packer, TurnRows) else {})
    log.info("budget %s tokens: %d examples, %d loss-bearing tokens, %d rows of %d (fill %.3f)",
             cfg.amount if cfg.amount is not None else "all", data.examples, data.loss_tokens, packer.rows,
             block_length, data.packing_efficiency)
    return data


# --- rendering, in worker processes ------------------------------------------------------------

_JOB: tuple | None = None  # (tokenizer, fmt, context_length, split_long, spill path): set before the workers fork
_SPILL_FD: list[int] = []  # this process's handle on the spill, opened at its first read


def render_conversation(conv: Conversation) -> tuple[list[Rendered], bool, int]:
    """(its examples: the whole conversation, or its pieces split at turns when longer than the
    context; whether it was split; how many pieces are still over the context)."""
    tokenizer, fmt, context_length, split_long, _ = _JOB
    try:
        whole = render(conv.messages, tokenizer, fmt)
        if len(whole.input_ids) <= context_length or not split_long:
            return [whole], False, 0
        pieces = split_at_turns(conv.messages,
                                lambda m: len(render(m, tokenizer, fmt).input_ids) <= context_length)
        rendered = [render(piece, tokenizer, fmt) for piece in pieces]
        return rendered, len(pieces) > 1, sum(len(r.input_ids) > context_length for r in rendered)
    except TemplateError as err:
        raise TemplateError(f"{conv.origin}: {err}") from err


def render_batch(task: tuple[list[tuple[int, int]], bool]) -> list[tuple[list, bool, int]]:
    """render_conversation over conversations read from the spill at (offset, length); with
    `compact` (results that cross a pipe), each example as packed arrays (see expand)."""
    locations, compact = task
    if not _SPILL_FD:
        _SPILL_FD.append(os.open(_JOB[4], os.O_RDONLY))
    out = []
    for offset, length in locations:
        pieces, was_split, over = render_conversation(pickle.loads(os.pread(_SPILL_FD[0], length, offset)))
        out.append(([_compact(piece) for piece in pieces] if compact else pieces, was_split, over))
    return out


def _compact(example: Rendered) -> Rendered | tuple[np.ndarray, np.ndarray]:
    """An example as (ids, loss mask) arrays: pickling a list of ints costs ~10x an array's bytes,
    and a label is always its own token or IGNORE (kept as a Rendered when it is not)."""
    ids = np.array(example.input_ids, dtype=np.int64)
    labels = np.array(example.labels, dtype=np.int64)
    mask = labels != IGNORE
    if not np.array_equal(labels[mask], ids[mask]):
        return example
    return ids.astype(np.uint32 if len(ids) and ids.max() >= 1 << 31 else np.int32), mask


def expand(example) -> Rendered:
    """A _compact example as a Rendered of int64 arrays (the packer takes them as they are)."""
    if isinstance(example, Rendered):
        return example
    ids, mask = example
    ids = ids.astype(np.int64)
    return Rendered(ids, np.where(mask, ids, IGNORE))


@contextlib.contextmanager
def _workers(workers: int, job: tuple) -> Iterator:
    """`run(fn, tasks)`: fn over tasks, results in order; with workers > 1 over a pool of forked
    processes (they inherit the tokenizer), at most a few tasks ahead of what has been consumed, so
    memory holds a bounded window of the source, never all of it. The pool is stopped on leaving
    (once the budget is full, say)."""
    global _JOB
    _JOB = job
    try:
        with _tokenizer_threads_off():
            if workers <= 1:
                yield in_process
                return
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                yield lambda fn, tasks: _ordered(pool, fn, tasks, window=4 * workers)
    finally:
        _JOB = None
        while _SPILL_FD:
            os.close(_SPILL_FD.pop())


@contextlib.contextmanager
def _tokenizer_threads_off() -> Iterator[None]:
    """The Rust tokenizer's own threads off while preparing (TOKENIZERS_PARALLELISM=false, whatever
    it was; restored after). Forked workers must not inherit them: a worker of a parent that used
    them deadlocks when it is set to true (the library turns them off after a fork only when the
    variable is unset). And one process gains nothing from them here, since a conversation's few
    segments are too small a batch to share out: measured on 2 cores, 5M tokens, 1 worker, the
    same wall clock or less and about a fifth less CPU (README, Speed)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the Rust library at each batch call
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _ordered(pool, fn, tasks: Iterable, window: int) -> Iterator:
    pending: collections.deque = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# --- cache -----------------------------------------------------------------------------------------


def source_fingerprint(cfg: DataSourceConfig, memo: Path | None = None) -> dict:
    """What the source's content is: file hashes for local files and folders, the id for hub
    datasets. With `memo` (a folder beside the cache), a file's hash is remembered with its stat."""
    if cfg.format == "mix":
        return {part.source: source_fingerprint(source_config_by_name(part.source), memo) for part in cfg.mix}
    path = resolve_path(cfg.path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    if not files:
        return {"id": cfg.path, "split": cfg.split}
    return {"sha256": content_hash(path, files, memo)}


SETTLED_NS = 2_000_000_000  # a file changed this recently is hashed again (coarse timestamps)


def content_hash(path: Path, files: list[Path], memo: Path | None) -> str:
    """sha256 over the files' names and bytes, read a block at a time (880 MB of source is ~2 s).

    The memo is a trade-off: a file whose size, mtime, ctime, inode and device are all unchanged is
    taken to hold the same bytes, so a cache hit costs a stat, not a read. Tools can set mtime back
    (touch -d, cp -p, rsync -t), but not ctime, which any write moves; what this misses is a rewrite
    within one tick of a coarse filesystem clock, so a file changed within SETTLED_NS of being hashed
    is never remembered (as git treats a racily clean index). Delete <cache>/prepared/.hashes to
    distrust every memo; without a cache (cache_dir unset) nothing is remembered."""
    def stats() -> list[list]:
        out = []
        for file in files:
            st = file.stat()
            out.append([str(file.relative_to(path.parent)), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                        st.st_dev])
        return out

    note = memo / f"{Store.key(str(path))}.json" if memo is not None else None
    before = stats() if note is not None else None
    if note is not None:
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(note.read_text())
            if known.get("path") == str(path) and known.get("files") == before:
                return known["sha256"]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path.parent)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    sha = digest.hexdigest()
    settled = before is not None and all(time.time_ns() - max(f[2], f[3]) > SETTLED_NS for f in before)
    if note is not None and settled and stats() == before:  # unchanged while it was read
        with contextlib.suppress(OSError):
            write_memo(note, {"path": str(path), "files": before, "sha256": sha})
    return sha


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    text += str(getattr(tokenizer, "chat_template", "")) + str(tokenizer.special_tokens_map)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(cfg: DataConfig, tokenizer, fmt: ChatFormat, block_length: int, context_length: int,
              boundaries: list[int] = (), memo: Path | None = None, encoder_decoder: bool = False) -> str:
    source = dataclasses.asdict(cfg.source)
    source.pop("description", None)
    return Store.key({"version": PREPARE_VERSION, "source": source, "content": source_fingerprint(cfg.source, memo),
                      "amount": cfg.amount, "shuffle_seed": cfg.shuffle_seed,
                      "tokenizer": tokenizer_fingerprint(tokenizer), "template": fmt.name,
                      "block_length": block_length, "context_length": context_length,
                      **({"boundaries": list(boundaries)} if boundaries else {}),
                      **({"layout": "encoder_decoder"} if encoder_decoder else {}),  # decoder-only keys unchanged
                      **cache_part(cfg, source_fingerprint)})


def _open(folder: Path) -> PreparedData:
    summary = json.loads((folder / "summary.json").read_text())
    return PreparedData(rows=PreparedRows(folder), examples=summary["examples"], total_tokens=summary["total_tokens"],
                        loss_tokens=summary["loss_tokens"], packing_efficiency=summary["packing_efficiency"],
                        template=summary["template"], load_report=summary["load"], split=summary["split"], cache="hit",
                        milestones=summary.get("milestones", []), pretrain=summary.get("pretrain", {}),
                        turns=summary.get("turns", {}))
