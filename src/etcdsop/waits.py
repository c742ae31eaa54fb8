"""Bounded retries: every wait in etcdsop has a deadline and an injectable sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from etcdsop.etcd import EtcdApiError

T = TypeVar("T")


def retry_etcd(
    action: Callable[[], T],
    *,
    transient: Sequence[str],
    timeout: float,
    interval: float = 0.5,
    on_retry: Callable[[EtcdApiError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call action until it succeeds, retrying while etcd answers a transient error.

    E.g. "unhealthy cluster" right after a (re)start, or "not in sync" before a
    learner caught up. Any other error, or the deadline, ends the retries.
    """
    deadline = clock() + timeout
    while True:
        try:
            return action()
        except EtcdApiError as exc:
            if not any(t in exc.etcd_message for t in transient) or clock() >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc)
        sleep(interval)


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.3,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T | None:
    """Call check until it returns something other than None; None after the deadline."""
    deadline = clock() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if clock() >= deadline:
            return None
        sleep(interval)
