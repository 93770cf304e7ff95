"""The local server's one generation thread: requests that arrive together are generated together.

A request waits in a bounded queue; the thread takes the oldest and, for up to `window_s`, gathers
the waiting requests it can share a batch with (the same max_tokens, temperature, top_p and stop)
until the batch holds `max_batch` rows (a client just answered asks again within milliseconds: the
window lets its next request join). Requests that arrive while a batch generates wait for the next.
Beyond a full next batch and `max_queue` more, `submit` raises ServerBusy (the endpoint answers
429), saying when the running batch should end (at least 1 s): then the next batch leaves the queue.
Under sustained overload (more clients than 2 x max_batch + max_queue) a refused client competes
with clients just answered, who ask again at once, and can lose repeatedly: size max_queue to the
clients expected. A request whose client went away before its batch started is dropped and frees
its place; one already generating finishes with its batch (a row cannot leave a running generate)
and its answer is thrown away.

Seeded sampling: a row's random draws depend on the rows beside it, so a sampled request with a
seed is generated alone (its n choices together), the seed set first; it then repeats whatever else
the server was doing. Unseeded sampled requests and greedy ones share batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from src.teacher.clients import ChatResult, Sampling

log = logging.getLogger(__name__)

Generate = Callable[[Sequence[Sequence[dict]], Sampling], list[ChatResult]]


class ServerBusy(RuntimeError):
    """The queue is full: ask again after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"the server is busy; retry after {retry_after:.2f} s")
        self.retry_after = retry_after


@dataclass
class Work:
    rows: list[Sequence[dict]]  # one conversation per row (n rows for n sampled choices)
    sampling: Sampling
    alone: bool  # a seeded sample: never shares a batch
    future: Future = field(default_factory=Future)

    def key(self) -> tuple:
        s = self.sampling
        return (s.max_tokens, s.temperature, s.top_p, s.stop)


@dataclass
class BatcherStats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0  # rows
    dropped_before_start: int = 0  # clients that went away while waiting
    last_batch_s: float = 0.0


class Batcher:
    def __init__(self, generate: Generate, max_batch: int = 8, max_queue: int = 64, window_s: float = 0.05):
        if max_batch < 1 or max_queue < 1 or window_s < 0:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be >= 1, "
                             f"window_s ({window_s}) >= 0")
        self.generate, self.max_batch, self.max_queue, self.window_s = generate, max_batch, max_queue, window_s
        self.waiting: deque[Work] = deque()
        self.cond = threading.Condition()
        self.stats = BatcherStats()
        self.closing = False
        self.batch_started: float | None = None  # monotonic time the running batch began; None when idle
        self.thread = threading.Thread(target=self._run, name="serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, rows: list[Sequence[dict]], sampling: Sampling, alone: bool = False) -> Future:
        work = Work(rows, sampling, alone)
        with self.cond:
            self._drop_cancelled()
            if len(self.waiting) >= self.max_batch + self.max_queue:  # the next batch, and max_queue beyond it
                # Places free when the running batch ends (the next one leaves the queue): come back then.
                started = self.batch_started  # read once: the batcher thread clears it without the lock
                running_for = time.monotonic() - started if started is not None else 0.0
                # At least 1 s: a client's retries are counted, and polling faster only spends them.
                expected = self.stats.last_batch_s or 1.0  # before the first batch ends: a guess
                raise ServerBusy(min(60.0, max(1.0, expected - running_for)))
            self.waiting.append(work)
            self.cond.notify_all()
        return work.future

    def queued(self) -> int:
        with self.cond:
            self._drop_cancelled()
            return len(self.waiting)

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.thread.join(30)

    def _drop_cancelled(self) -> None:
        kept = deque(w for w in self.waiting if not w.future.cancelled())
        self.stats.dropped_before_start += len(self.waiting) - len(kept)
        self.waiting = kept

    def _take(self) -> list[Work] | None:
        """The next batch, after the window for company; None when closing."""
        with self.cond:
            while True:
                self._drop_cancelled()
                if self.closing:
                    return None
                if self.waiting:
                    break
                self.cond.wait()
            first = self.waiting[0]
            # Clients just answered ask again within milliseconds: waiting for them fills the batch.
            if not first.alone and self.max_batch > 1:
                deadline = time.monotonic() + self.window_s
                while (left := deadline - time.monotonic()) > 0 and self._rows_for(first) < self.max_batch:
                    self.cond.wait(left)
                    if self.closing:
                        return None
            self._drop_cancelled()
            if not self.waiting:
                return []
            first = self.waiting.popleft()
            batch, rows = [first], len(first.rows)
            if not first.alone:
                for work in list(self.waiting):
                    if work.alone or work.key() != first.key() or rows + len(work.rows) > self.max_batch:
                        continue
                    self.waiting.remove(work)
                    batch.append(work)
                    rows += len(work.rows)
            return batch

    def _rows_for(self, first: Work) -> int:
        return sum(len(w.rows) for w in self.waiting
                   if not w.future.cancelled() and not w.alone and w.key() == first.key())

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            batch = [w for w in batch if w.future.set_running_or_notify_cancel()]  # False: client gone
            if not batch:
                continue
            rows = [row for w in batch for row in w.rows]
            sampling = batch[0].sampling
            self.batch_started = start = time.monotonic()
            try:
                results = self.generate(rows, sampling)
            except Exception as err:  # a real server fault: logged once, every request in the batch told
                log.exception("generation failed for a batch of %d rows", len(rows))
                for work in batch:
                    work.future.set_exception(err)
                continue
            finally:
                self.batch_started = None
            self.stats.last_batch_s = time.monotonic() - start
            self.stats.batches += 1
            self.stats.rows += len(rows)
            self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
            at = 0
            for work in batch:
                work.future.set_result(results[at:at + len(work.rows)])
                at += len(work.rows)
