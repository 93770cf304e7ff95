"""load_source: read a data source in its upstream format, parse, clean, and count every step.

By default a bad record is skipped and counted per reason (failing above max_bad_fraction); with
`strict` the first bad record is an error naming its file and line. Nothing is dropped silently:
LoadReport holds the counts and the first place each kind of drop happened.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from src import PROJECT_ROOT
from src.config import ConfigError, DataSourceConfig, build_dataclass
from src.data.clean import check, clean
from src.data.conversation import Conversation, LoadReport
from src.data.formats import FORMATS, FormatError
from src.data.formats.records import DataError

__all__ = ["DataError", "check_conversation", "load_source", "source_config_by_name"]

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
    if cfg.format == "mix":
        return _load_mix(cfg)
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
    conversations: list[Conversation] = []
    seen_queries: set[str] = set()
    parsed = 0
    for origin, record in fmt.read(cfg):
        report.read += 1
        try:
            if isinstance(record, FormatError):
                raise record
            convs = fmt.parse(record, origin, cfg)
        except FormatError as err:
            _drop_or_raise(report, err.reason, origin, str(err), cfg.strict)
            continue
        parsed += len(convs)
        for conv in convs:
            kept, reason, changes = clean(conv, cfg.clean, seen_queries)
            for change in changes:
                report.changed[change] = report.changed.get(change, 0) + 1
            if reason:
                _drop_or_raise(report, reason, conv.origin, f"{conv.origin}: {reason.replace('_', ' ')}",
                               cfg.strict and reason not in CHOICES)
                continue
            conversations.append(kept)
    report.kept = len(conversations)
    report.steps = {"records_read": report.read, "conversations_parsed": parsed, "kept": report.kept}
    bad = {reason: n for reason, n in report.dropped.items() if reason not in CHOICES}
    if report.read and sum(bad.values()) / report.read > cfg.max_bad_fraction:
        raise DataError(
            f"{cfg.path}: {sum(bad.values())} of {report.read} records are bad ({bad}), more than "
            f"data.source.max_bad_fraction={cfg.max_bad_fraction}; first at {report.examples[next(iter(bad))]}"
        )
    return conversations, report


def _drop_or_raise(report: LoadReport, reason: str, origin: str, message: str, strict: bool) -> None:
    if strict:
        raise DataError(message)
    report.drop(reason, origin)


def _load_mix(cfg: DataSourceConfig) -> tuple[list[Conversation], LoadReport]:
    """The study's ShareGPT-Mix: parts loaded with their own settings, each capped, in listed order
    (one seeded shuffle of the whole mixture happens later, in prepare)."""
    report = LoadReport(source=cfg.name)
    conversations: list[Conversation] = []
    report.parts = {}
    for part in cfg.mix:
        convs, part_report = load_source(source_config_by_name(part.source))
        taken = convs[: part.max_examples] if part.max_examples is not None else convs
        report.read += part_report.read
        for reason, count in part_report.dropped.items():
            report.dropped[f"{part.source}/{reason}"] = count
        for reason, origin in part_report.examples.items():
            report.examples[f"{part.source}/{reason}"] = origin
        if len(taken) < len(convs):
            report.dropped[f"{part.source}/over_cap"] = len(convs) - len(taken)
        report.parts[part.source] = {**part_report.as_dict(), "taken": len(taken)}
        conversations += taken
    report.kept = len(conversations)
    report.steps = {"records_read": report.read, "kept": report.kept}
    return conversations, report
