"""Teachers that answer chat requests: an OpenAI-compatible HTTP endpoint or a local model.

Both stream (request, result) pairs as they finish, so a collector can append each answer to disk
the moment it exists; a kill then loses at most the answers in flight.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}  # transient by the OpenAI client's own rules


class TeacherError(RuntimeError):
    """A request that failed for good (retries spent, or a non-retryable status)."""


class MalformedReply(TeacherError):
    """The teacher answered 200 but not with a usable chat completion; counted and skipped."""


@dataclass(frozen=True)
class ChatRequest:
    id: str
    messages: tuple[dict, ...]  # [{"role", "content"}], OpenAI shape


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" (cut off by max_tokens)
    attempts: int = 1


@dataclass
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = 0  # None: sampled from wherever torch's generator stands
    top_p: float = 1.0


class Teacher(Protocol):
    name: str

    def stream(self, requests: Iterable[ChatRequest], sampling: Sampling
               ) -> Iterator[tuple[ChatRequest, ChatResult | TeacherError]]: ...


class RateLimiter:
    """At most `per_second` request starts a second across threads (0 = unlimited)."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


def parse_completion(body: object) -> ChatResult:
    """The first choice of an OpenAI chat completion, or MalformedReply saying what is missing."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise MalformedReply("reply has no 'choices' list")
    choice = body["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise MalformedReply("choices[0].message.content is not a string")
    if not content.strip():
        raise MalformedReply("choices[0].message.content is empty")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return ChatResult(text=content, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      finish_reason=str(choice.get("finish_reason") or "stop"))


def sampled_fields(sampling: Sampling) -> dict:
    """What an OpenAI-style request adds when it samples: the seed (so a rerun, or a resumed
    collection, asks for the same draws: src.serve, vLLM and OpenAI take `seed`), and top_p when it
    is not the default. Greedy requests send neither."""
    if sampling.temperature <= 0:
        return {}
    return ({"seed": sampling.seed} if sampling.seed is not None else {}) | (
        {"top_p": sampling.top_p} if sampling.top_p != 1.0 else {})


@dataclass
class HttpTeacher:
    """POST {base_url}/chat/completions, with retries and exponential backoff on 429, 5xx and timeouts."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"  # the key is read from this variable, never from a file
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry; doubles each retry (jittered), capped
    max_backoff: float = 60.0
    concurrency: int = 4
    requests_per_second: float = 0.0  # 0 = no rate limit
    name: str = field(init=False)
    retries: int = field(init=False, default=0)  # retried attempts over the teacher's life

    def __post_init__(self):
        self.name = f"{self.model} @ {self.base_url}"
        self._limiter = RateLimiter(self.requests_per_second)
        self._lock = threading.Lock()

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2 ** attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def complete(self, client, request: ChatRequest, sampling: Sampling) -> ChatResult:
        import httpx

        payload = {"model": self.model, "messages": list(request.messages), "max_tokens": sampling.max_tokens,
                   "temperature": sampling.temperature, **sampled_fields(sampling)}
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        url = self.base_url.rstrip("/") + "/chat/completions"
        for attempt in range(self.max_retries + 1):
            self._limiter.wait()
            retry_after = None
            try:
                response = client.post(url, json=payload, headers=self._headers(), timeout=self.timeout)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                problem = f"{type(err).__name__}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError as err:
                        raise MalformedReply(f"reply is not JSON: {response.text[:80]!r}") from err
                    result = parse_completion(body)
                    result.attempts = attempt + 1
                    return result
                if response.status_code not in RETRY_STATUS:
                    raise TeacherError(f"HTTP {response.status_code}: {response.text[:200]}")
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after")
            if attempt == self.max_retries:
                raise TeacherError(f"{problem} after {attempt + 1} attempts")
            with self._lock:
                self.retries += 1
            time.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")

    def stream(self, requests, sampling):
        import httpx

        pending = iter(requests)
        with httpx.Client() as client, ThreadPoolExecutor(self.concurrency) as pool:
            running = {}

            def submit_next() -> bool:
                request = next(pending, None)
                if request is None:
                    return False
                running[pool.submit(self.complete, client, request, sampling)] = request
                return True

            for _ in range(self.concurrency):  # a bounded window: memory stays flat over 100K prompts
                if not submit_next():
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    request = running.pop(future)
                    err = future.exception()
                    if err is not None and not isinstance(err, TeacherError):
                        raise err
                    yield request, (err if err is not None else future.result())
                    submit_next()


class LocalTeacher:
    """A local model (config name or checkpoint dir) answering in batches; greedy at temperature 0."""

    def __init__(self, model: str, cache_dir: str | None = None, batch_size: int = 8,
                 device: str = "auto"):
        from src.models.load import pick_device

        self.handle = load_local_handle(model, cache_dir, pick_device(device))
        self.name = model
        self.batch_size = batch_size

    def stream(self, requests, sampling):
        batch: list[ChatRequest] = []
        for request in requests:
            batch.append(request)
            if len(batch) == self.batch_size:
                yield from self._answer(batch, sampling)
                batch = []
        if batch:
            yield from self._answer(batch, sampling)

    def _answer(self, batch: list[ChatRequest], sampling: Sampling):
        results = local_generate(self.handle, [r.messages for r in batch], sampling)
        for request, result in zip(batch, results, strict=True):
            # An empty reply is as useless from a local model as from an endpoint: counted, skipped.
            yield request, (result if result.text else MalformedReply("empty reply"))


def load_local_handle(model: str, cache_dir: str, device):
    """A conf/model name, or a directory holding a Hugging Face checkpoint (e.g. a trained cell's)."""
    from pathlib import Path

    import src.plugins  # noqa: F401  plug-in model sources (the toy world's toy_*) register on import
    from src.config import ModelConfig
    from src.models.hf import load_handle
    from src.models.sources import model_config_by_name

    if Path(model).expanduser().is_dir():
        path = Path(model).expanduser().resolve()
        cfg = ModelConfig(name=path.name, hub_id=str(path))
    else:
        cfg = model_config_by_name(model)
    return load_handle(cfg, cache_dir, device, trained=False)


def local_generate(handle, conversations: Sequence[Sequence[dict]], sampling: Sampling) -> list[ChatResult]:
    """One batch of chat completions from a ModelHandle (handle.generate): greedy at temperature 0,
    else sampled, repeatably for one seed. Replies are cut at the first stop string; a reply ended by
    EOS or a stop string is finish_reason "stop", one cut off by max_tokens "length"."""
    from src.data.template import bos_prefix

    tok = handle.tokenizer
    prompts = [_generation_prompt(handle, conv) for conv in conversations]
    prefix = bos_prefix(tok, handle.format)
    prompt_tokens = [len(prefix) + len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    sampled = {}
    if sampling.temperature > 0:
        # top_k=50: sampled replies have always come from HF generate's default top-k of 50;
        # handle.generate's own default (top_k=0) would sample from the whole vocabulary.
        sampled = {"temperature": sampling.temperature, "seed": sampling.seed, "top_k": 50,
                   "top_p": float(sampling.top_p)}
    finished: list[bool] = []
    lengths: list[int] = []  # tokens generated (decoding and encoding the text again can count more)
    texts = handle.generate(prompts, sampling.max_tokens, stop=sampling.stop, batch_size=len(prompts),
                            chat=True, desc="teacher", finished=finished, lengths=lengths, **sampled)
    results = []
    for text, done, n_prompt, n_new in zip(texts, finished, prompt_tokens, lengths, strict=True):  # cut at stop
        results.append(ChatResult(text=text.strip(), prompt_tokens=n_prompt, completion_tokens=n_new,
                                  finish_reason="stop" if done else "length"))
    return results


def _generation_prompt(handle, conversation: Sequence[dict]) -> str:
    from src.data.conversation import Message

    return handle.format.generation_prompt([Message(m["role"], m["content"]) for m in conversation])


def count_prompt_tokens(handle, conversation: Sequence[dict]) -> int:
    """Tokens local_generate feeds the model for this conversation (its usage.prompt_tokens)."""
    from src.data.template import bos_prefix

    text = _generation_prompt(handle, conversation)
    return len(bos_prefix(handle.tokenizer, handle.format)) + len(
        handle.tokenizer(text, add_special_tokens=False)["input_ids"])
