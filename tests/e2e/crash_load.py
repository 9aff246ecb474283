"""The load generator of the crash test: keyed submissions at a steady rate, resubmitted until acknowledged.

One background thread submits batches (``submit_many``) of specs, each with an
idempotency key of its own: mostly ``echo`` {"key": K}, some short ``sleep``.
A spec whose submission fails because the daemon went away (reset, unreachable,
timeout, stopping) is submitted again with the same key until an answer names
its task. A few keys already acknowledged are submitted again on purpose, so a
key acknowledged before a crash is asked for again after it. Every attempt
names a task id of its own (as the client would pick one): an answer naming
another id is a duplicate, the first task of the key.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventbus.client import SyncClient
from eventbus.errors import DaemonUnreachable, EventBusError, QueueFull, RequestTimeout, ShuttingDown

#: errors that mean the daemon went away (or is going) under the request: submit again, same key
RETRYABLE: tuple[type[EventBusError], ...] = (DaemonUnreachable, RequestTimeout, ShuttingDown, QueueFull)


@dataclass(frozen=True, slots=True)
class Spec:
    key: str
    operation: str
    payload: dict[str, Any]

    def body(self, task_id: str) -> dict[str, Any]:
        return {
            "task_id": task_id,
            "operation": self.operation,
            "payload": self.payload,
            "idempotency_key": self.key,
            "timeout_ms": 60_000,
        }


@dataclass(slots=True)
class Counts:
    keys: int = 0
    #: submissions sent (a spec in a batch counts once per batch)
    attempts: int = 0
    acks: int = 0
    #: a spec submitted again after its submission failed because the daemon went away
    resubmitted_after_error: int = 0
    #: a spec submitted again after the daemon refused it queue_full (backpressure, not a crash)
    resubmitted_after_queue_full: int = 0
    #: an acknowledged key submitted again on purpose
    resubmitted_on_purpose: int = 0
    #: answers naming a task other than the one the attempt proposed: the key's first task
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Load:
    """Submits about ``rate`` new keys a second from a thread until :meth:`stop`; records every answer."""

    def __init__(
        self,
        socket: Path,
        seed: int,
        *,
        rate: float = 1000.0,
        every: float = 0.03,
        sleep_share: float = 0.1,
        again_share: float = 0.03,
        max_batch: int = 200,
    ) -> None:
        self.socket = socket
        self.rng = random.Random(seed ^ 0x5EED)
        self.prefix = f"crash-{seed}-{os.getpid()}"
        self.rate, self.every, self.sleep_share, self.again_share, self.max_batch = (
            rate,
            every,
            sleep_share,
            again_share,
            max_batch,
        )
        self.specs: dict[str, Spec] = {}
        #: key -> every task id an answer named for it, in order
        self.acks: dict[str, list[str]] = {}
        #: key -> task ids proposed by its attempts (the first task of the key is one of them)
        self.proposed: dict[str, list[str]] = {}
        #: (key, error) of answers that are neither an id nor a RETRYABLE error
        self.unexpected: list[tuple[str, str]] = []
        self.counts = Counts()
        self.pending: list[tuple[Spec, bool]] = []  # failed, to submit again; True: refused queue_full
        self._acked_keys: list[str] = []
        self._stop_new = threading.Event()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crash-load", daemon=True)
        self.crashed: BaseException | None = None
        self.started = self.stopped_new = 0.0
        #: new keys due: ``rate`` a second, at most one second's worth behind (after a stall or backpressure)
        self._credit, self._credit_at = 0.0, 0.0

    # ---- control -------------------------------------------------------

    @property
    def acked(self) -> int:
        return self.counts.acks

    def start(self) -> None:
        self.started = self._credit_at = time.monotonic()
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Make no new keys; return once every failed spec was acknowledged (False: not within ``timeout``)."""
        self._stop_new.set()
        self.stopped_new = time.monotonic()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._halt.set()
            self._thread.join(15)
            return False
        return True

    # ---- the thread ----------------------------------------------------

    def _new_spec(self) -> Spec:
        key = f"{self.prefix}-{self.counts.keys}"
        self.counts.keys += 1
        if self.rng.random() < self.sleep_share:
            spec = Spec(key, "sleep", {"seconds": round(self.rng.uniform(0.01, 0.2), 3)})
        else:
            spec = Spec(key, "echo", {"key": key})
        self.specs[key] = spec
        self.acks[key] = []
        self.proposed[key] = []
        return spec

    def _next_batch(self) -> list[Spec]:
        # failed specs first, as many as a batch takes (a full queue is not asked for more than that)
        pending, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
        full = sum(refused for _, refused in pending)
        self.counts.resubmitted_after_queue_full += full
        self.counts.resubmitted_after_error += len(pending) - full
        batch = [spec for spec, _ in pending]
        now = time.monotonic()
        if full:  # the queue is full: no new keys until it took the old ones, and no debt of them either
            self._credit, self._credit_at = 0.0, now
        elif not self._stop_new.is_set():
            self._credit = min(self.rate, self._credit + (now - self._credit_at) * self.rate)
            self._credit_at = now
            fresh = [self._new_spec() for _ in range(min(int(self._credit), self.max_batch))]
            self._credit -= len(fresh)
            again = [
                self.specs[self.rng.choice(self._acked_keys)]
                for _ in fresh
                if self._acked_keys and self.rng.random() < self.again_share
            ]
            self.counts.resubmitted_on_purpose += len(again)
            batch += fresh + again
        return batch

    def _run(self) -> None:
        client: SyncClient | None = None
        try:
            while not self._halt.is_set():
                began = time.monotonic()
                batch = self._next_batch()
                if not batch:
                    if self._stop_new.is_set():
                        return
                    self._halt.wait(self.every)
                    continue
                if client is None:
                    try:
                        client = SyncClient(self.socket, timeout=10)
                    except EventBusError as exc:  # no daemon at the moment: the specs wait for the next one
                        self._failed(batch, exc)
                        self._halt.wait(0.05)
                        continue
                ids = [os.urandom(16).hex() for _ in batch]
                for spec, task_id in zip(batch, ids, strict=True):
                    self.proposed[spec.key].append(task_id)
                self.counts.attempts += len(batch)
                try:
                    answers: list[str | EventBusError] = client.submit_many(
                        [spec.body(task_id) for spec, task_id in zip(batch, ids, strict=True)]
                    )
                except EventBusError as exc:  # submit_many reports per spec; a whole-call failure is the same
                    answers = [exc] * len(batch)
                    client.close()
                    client = None
                for spec, task_id, answer in zip(batch, ids, answers, strict=True):
                    if isinstance(answer, str):
                        self._ack(spec, task_id, answer)
                    else:
                        self._failed([spec], answer)
                # backpressure: a daemon refusing queue_full is given time to work the queue off
                pause = self.every * (4 if any(refused for _, refused in self.pending) else 1)
                self._halt.wait(max(0.0, pause - (time.monotonic() - began)))
        except BaseException as exc:  # reported by the test
            self.crashed = exc
        finally:
            if client is not None:
                client.close()

    def _ack(self, spec: Spec, proposed: str, task_id: str) -> None:
        if not self.acks[spec.key]:
            self._acked_keys.append(spec.key)
        self.acks[spec.key].append(task_id)
        self.counts.acks += 1
        if task_id != proposed:
            self.counts.duplicates += 1

    def _failed(self, specs: list[Spec], exc: EventBusError) -> None:
        self.counts.errors[type(exc).__name__] += len(specs)
        if isinstance(exc, RETRYABLE):
            self.pending.extend((spec, isinstance(exc, QueueFull)) for spec in specs)
        else:  # not submitted again: the key stays unacknowledged and the test fails naming the error
            self.unexpected.extend((spec.key, f"{type(exc).__name__}: {exc}") for spec in specs)

    # ---- after the run -------------------------------------------------

    def unacked(self) -> list[str]:
        return [key for key, ids in self.acks.items() if not ids]
