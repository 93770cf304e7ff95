"""load_source: read a data source in its upstream format, parse, clean, and count every step.

By default a bad record is skipped and counted per reason (failing above max_bad_fraction); with
`strict` the first bad record is an error naming its file and line. Nothing is dropped silently:
LoadReport holds the counts and the first place each kind of drop happened.

`scan_source` streams: the records are read a block at a time, parsed and cleaned a batch at a
time (by worker processes, for prepare), and each kept conversation handed on as it comes, so a
source is never held whole; `load_source` collects them into a list.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator

from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.config import ConfigError, DataSourceConfig, build_dataclass
from src.data.clean import check, clean_one, dedup_key
from src.data.conversation import Conversation, LoadReport
from src.data.formats import FORMATS, FormatError
from src.data.formats.records import DataError, decode

__all__ = ["DataError", "check_conversation", "load_source", "scan_source", "source_config_by_name"]

check_conversation = check
# drops the cleaning settings ask for (duplicates, other languages): not bad input, never strict errors
CHOICES = ("duplicate_first_user_turn", "not_english")


def source_config_by_name(name: str) -> DataSourceConfig:
    """conf/data_source/<name>.yaml (mixtures name their parts this way)."""
    path = PROJECT_ROOT / "conf" / "data_source" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"data.source.mix: no data source config {path}")
    cfg = build_dataclass(DataSourceConfig, OmegaConf.to_container(OmegaConf.load(path), resolve=True), "data.source")
    cfg.validate()
    return cfg


def load_source(cfg: DataSourceConfig) -> tuple[list[Conversation], LoadReport]:
    conversations: list[Conversation] = []
    report = scan_source(cfg, conversations.append)
    return conversations, report


def in_process(fn: Callable, tasks: Iterable) -> Iterator:
    return (fn(task) for task in tasks)


def scan_source(cfg: DataSourceConfig, keep: Callable[[object], None], run: Callable = in_process,
                serialize: bool = False) -> LoadReport:
    """Read, parse, clean and count every step; each kept conversation goes to `keep` in file order
    (with `serialize`, as its pickle). Parsing and cleaning happen in `clean_batch`, over batches of
    records that `run(clean_batch, tasks)` maps in order: in this process, or in prepare's worker
    processes. Deduplication, the counts and strict errors happen here, in file order, so they are
    the same however the batches ran."""
    if cfg.format == "mix":
        return _scan_mix(cfg, keep, run, serialize)
    if cfg.format not in FORMATS:
        raise DataError(f"data.source.format: unknown format {cfg.format!r} (known: {', '.join([*FORMATS, 'mix'])})")
    fmt = FORMATS[cfg.format]
    if fmt.plain_text:
        raise DataError(f"data source '{cfg.name}' holds plain text, not conversations: mix it into imitation "
                        f"with data.pretrain_mix.source={cfg.name}")
    if not fmt.trainable:
        raise DataError(f"data source '{cfg.name}' ({cfg.format}) holds prompts only: use it for the judge, "
                        "or get a teacher's answers with src.collect")
    report = LoadReport(source=cfg.name)
    seen_queries: set[bytes] = set()
    parsed = kept = 0
    for outcomes in run(clean_batch, _batches(cfg, (fmt.read_raw or fmt.read)(cfg), serialize)):
        for outcome in outcomes:
            report.read += 1
            if isinstance(outcome, tuple):  # a record that does not parse: (reason, origin, message)
                reason, origin, message = outcome
                _drop_or_raise(report, reason, origin, message, cfg.strict)
                continue
            parsed += len(outcome)
            for conv, reason, origin, changes, key in outcome:
                for change in changes:
                    report.changed[change] = report.changed.get(change, 0) + 1
                if reason is None and key is not None:
                    if key in seen_queries:
                        reason = "duplicate_first_user_turn"
                    else:
                        seen_queries.add(key)
                if reason:
                    _drop_or_raise(report, reason, origin, f"{origin}: {reason.replace('_', ' ')}",
                                   cfg.strict and reason not in CHOICES)
                    continue
                kept += 1
                keep(conv)
    report.kept = kept
    report.steps = {"records_read": report.read, "conversations_parsed": parsed, "kept": report.kept}
    bad = {reason: n for reason, n in report.dropped.items() if reason not in CHOICES}
    if report.read and sum(bad.values()) / report.read > cfg.max_bad_fraction:
        raise DataError(
            f"{cfg.path}: {sum(bad.values())} of {report.read} records are bad ({bad}), more than "
            f"data.source.max_bad_fraction={cfg.max_bad_fraction}; first at {report.examples[next(iter(bad))]}"
        )
    return report


BATCH_RECORDS, BATCH_BYTES = 256, 1 << 20  # a task of clean_batch: this many records or bytes of JSON


def _batches(cfg: DataSourceConfig, records: Iterable[tuple[str, object]], serialize: bool) -> Iterator[tuple]:
    batch: list[tuple[str, object]] = []
    size = 0
    for origin, raw in records:
        batch.append((origin, raw))
        size += len(raw) if isinstance(raw, bytes) else 1024
        if len(batch) >= BATCH_RECORDS or size >= BATCH_BYTES:
            yield cfg, batch, serialize
            batch, size = [], 0
    if batch:
        yield cfg, batch, serialize


def clean_batch(task: tuple) -> list:
    """Parse and clean a batch of records (all but deduplication). Per record: (reason, origin,
    message) when it does not parse, else per conversation (the cleaned conversation or None, drop
    reason or None, origin, changes, its deduplication key or None)."""
    cfg, records, serialize = task
    fmt = FORMATS[cfg.format]
    out: list = []
    for origin, raw in records:
        try:
            record = decode(origin, raw)
            if isinstance(record, FormatError):
                raise record
            convs = fmt.parse(record, origin, cfg)
        except FormatError as err:
            out.append((err.reason, origin, str(err)))
            continue
        results = []
        for conv in convs:
            cleaned, reason, changes = clean_one(conv, cfg.clean)
            key = dedup_key(cleaned) if cleaned is not None and cfg.clean.dedup_first_user else None
            if cleaned is not None and serialize:
                cleaned = pickle.dumps(cleaned, protocol=pickle.HIGHEST_PROTOCOL)
            results.append((cleaned, reason, conv.origin, changes, key))
        out.append(results)
    return out


def _drop_or_raise(report: LoadReport, reason: str, origin: str, message: str, strict: bool) -> None:
    if strict:
        raise DataError(message)
    report.drop(reason, origin)


def _scan_mix(cfg: DataSourceConfig, keep: Callable[[object], None], run: Callable, serialize: bool) -> LoadReport:
    """The study's ShareGPT-Mix: parts loaded with their own settings, each capped, in listed order
    (one seeded shuffle of the whole mixture happens later, in prepare)."""
    report = LoadReport(source=cfg.name)
    report.parts = {}
    for part in cfg.mix:
        seen = [0]

        def keep_part(conv, cap=part.max_examples, seen=seen) -> None:
            if cap is None or seen[0] < cap:
                keep(conv)
            seen[0] += 1

        part_report = scan_source(source_config_by_name(part.source), keep_part, run, serialize)
        taken = min(seen[0], part.max_examples) if part.max_examples is not None else seen[0]
        report.read += part_report.read
        for reason, count in part_report.dropped.items():
            report.dropped[f"{part.source}/{reason}"] = count
        for reason, origin in part_report.examples.items():
            report.examples[f"{part.source}/{reason}"] = origin
        if taken < seen[0]:
            report.dropped[f"{part.source}/over_cap"] = seen[0] - taken
        report.parts[part.source] = {**part_report.as_dict(), "taken": taken}
        report.kept += taken
    report.steps = {"records_read": report.read, "kept": report.kept}
    return report
