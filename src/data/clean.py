"""Cleaning steps between parsing and budgeting. Each returns the conversation to keep (possibly
changed) or a drop reason, so every drop is counted.

English filter (a documented heuristic, no language-ID model): the first user turn is English-like
when (1) at least `min_ascii_letters` of its letters are ASCII, which rejects non-Latin scripts (the
bulk of ShareGPT's non-English share), and (2) once it has 8 words or more, at least 12% of them are
common English function words (the, of, is, you, ...), which rejects most Spanish, French or German.
Short Latin-script queries pass on (1) alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from src.config import CleanConfig
from src.data.conversation import Conversation, Message


def html_to_markdown(text: str) -> str:
    """ShareGPT's HTML replies (paragraphs, lists, code blocks) as markdown; plain text is left alone."""
    if "<" not in text or not re.search(r"</?[a-zA-Z][^>]*>", text):
        return text
    from markdownify import markdownify

    markdown = markdownify(text, heading_style="ATX", bullets="-", code_language_callback=_code_language)
    return re.sub(r"\n{3,}", "\n\n", markdown).strip()


def _code_language(pre) -> str:
    """ChatGPT's HTML names a code block's language as class="language-python" on its <code>."""
    code = pre.find("code")
    classes = (code.get("class") or []) if code is not None else []
    return next((c.removeprefix("language-") for c in classes if c.startswith("language-")), "")


FUNCTION_WORDS = frozenset(
    "the a an and or but of to in on at for with from by as is are was were be been it this that these those "
    "i you he she we they my your his her our their me him us them not no do does did have has had can could "
    "will would should what which who how why when where if then than there here so".split())


def ascii_letter_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    return sum(ch.isascii() for ch in letters) / len(letters) if letters else 1.0


def looks_english(text: str, min_ascii_letters: float) -> bool:
    if ascii_letter_share(text) < min_ascii_letters:
        return False
    words = re.findall(r"[a-z']+", text.lower())
    return len(words) < 8 or sum(w in FUNCTION_WORDS for w in words) / len(words) >= 0.12


def first_user(conv: Conversation) -> str:
    return next((m.content for m in conv.messages if m.role == "user"), "")


def normalize_query(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def check(conv: Conversation) -> str | None:
    """Why a conversation cannot be trained on, or None when it can."""
    if not conv.messages:
        return "empty_conversation"
    if any(not m.content.strip() for m in conv.messages):
        return "empty_turn"
    if not any(m.role == "assistant" for m in conv.messages):
        return "no_assistant_turn"
    if next(m.role for m in conv.messages if m.role != "system") != "user":
        return "assistant_before_user"
    return None


def clean(conv: Conversation, cfg: CleanConfig, seen_queries: set) -> tuple[Conversation | None, str | None, list[str]]:
    """(kept conversation or None, drop reason or None, names of the changes made)."""
    kept, reason, changes = clean_one(conv, cfg)
    if kept is not None and cfg.dedup_first_user:
        key = dedup_key(kept)
        if key in seen_queries:
            return None, "duplicate_first_user_turn", changes
        seen_queries.add(key)
    return kept, reason, changes


def dedup_key(conv: Conversation) -> bytes:
    """What deduplication compares: the normalized first user turn, as a 16-byte digest (a set of
    them costs a fraction of the queries' text; a false duplicate needs a 128-bit collision)."""
    return hashlib.blake2b(normalize_query(first_user(conv)).encode(), digest_size=16).digest()


def clean_one(conv: Conversation, cfg: CleanConfig) -> tuple[Conversation | None, str | None, list[str]]:
    """Every cleaning step that looks at this conversation alone (all but deduplication, which needs
    the ones before it in the file, and comes last): prepare's worker processes run this."""
    changes: list[str] = []
    problem = check(conv)
    if problem:
        return None, problem, changes
    if cfg.html_to_markdown:
        converted = tuple(Message(m.role, html_to_markdown(m.content)) for m in conv.messages)
        if converted != conv.messages:
            changes.append("html_converted")
            conv = replace(conv, messages=converted)
            if any(not m.content.strip() for m in conv.messages):
                return None, "empty_turn", changes  # a turn that was only markup
    if cfg.trim_trailing_user and conv.messages[-1].role != "assistant":
        messages = list(conv.messages)
        while messages[-1].role != "assistant":
            messages.pop()  # the dump cut off the reply: the question alone teaches nothing
        changes.append("trailing_user_turn_trimmed")
        conv = replace(conv, messages=tuple(messages))
    if cfg.english_only and not looks_english(first_user(conv), cfg.min_ascii_letters):
        return None, "not_english", changes
    return conv, None, changes


def split_at_turns(messages: tuple[Message, ...], fits) -> list[tuple[Message, ...]]:
    """Split a conversation into consecutive pieces that each `fits`, cutting only before a user turn;
    a leading system message is repeated in every piece. A single exchange that does not fit stays
    whole (the budget and packing handle it; the count of such pieces is reported)."""
    system = tuple(m for m in messages[:1] if m.role == "system")
    body = messages[len(system):]
    exchanges: list[list[Message]] = []
    for message in body:
        if message.role == "user" or not exchanges:
            exchanges.append([message])
        else:
            exchanges[-1].append(message)
    pieces: list[tuple[Message, ...]] = []
    current: list[Message] = []
    for exchange in exchanges:
        candidate = (*system, *current, *exchange)
        if current and not fits(candidate):
            pieces.append((*system, *current))
            current = list(exchange)
        else:
            current += exchange
    if current:
        pieces.append((*system, *current))
    return pieces
