"""Bounded waits with an injected clock: no real sleeping."""

from __future__ import annotations

import pytest

from etcdsop.etcd import EtcdApiError
from etcdsop.waits import poll_until, retry_etcd


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _unhealthy() -> EtcdApiError:
    return EtcdApiError("https://10.0.0.1:2379", 14, "etcdserver: unhealthy cluster")


def test_retry_etcd_retries_transient_errors_until_success() -> None:
    clock = FakeClock()
    calls: list[float] = []
    seen: list[str] = []

    def action() -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise _unhealthy()
        return "added"

    result = retry_etcd(
        action,
        transient=("unhealthy cluster",),
        timeout=10,
        interval=0.5,
        on_retry=lambda e: seen.append(e.etcd_message),
        sleep=clock.sleep,
        clock=clock,
    )
    assert result == "added"
    assert calls == [0.0, 0.5, 1.0, 1.5]
    assert len(seen) == 3


def test_retry_etcd_gives_up_at_the_deadline() -> None:
    clock = FakeClock()

    def action() -> None:
        raise _unhealthy()

    with pytest.raises(EtcdApiError, match="unhealthy"):
        retry_etcd(
            action,
            transient=("unhealthy cluster",),
            timeout=2,
            interval=0.5,
            sleep=clock.sleep,
            clock=clock,
        )
    assert clock.now == 2.0


def test_retry_etcd_does_not_retry_other_errors() -> None:
    clock = FakeClock()
    calls = 0

    def action() -> None:
        nonlocal calls
        calls += 1
        raise EtcdApiError("e", 9, "etcdserver: Peer URLs already exists")

    with pytest.raises(EtcdApiError, match="already exists"):
        retry_etcd(
            action, transient=("unhealthy cluster",), timeout=10, sleep=clock.sleep, clock=clock
        )
    assert calls == 1 and clock.now == 0.0


def test_poll_until_returns_the_first_value_or_none_after_the_bound() -> None:
    clock = FakeClock()
    answers = iter([None, None, "ready"])
    assert (
        poll_until(lambda: next(answers), timeout=5, interval=1, sleep=clock.sleep, clock=clock)
        == "ready"
    )
    assert clock.now == 2.0
    clock = FakeClock()
    assert poll_until(lambda: None, timeout=3, interval=1, sleep=clock.sleep, clock=clock) is None
    assert clock.now == 3.0
