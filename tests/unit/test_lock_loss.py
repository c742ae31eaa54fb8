"""The cluster lock's loss, with an etcd that stops answering (a fake client: this
proves the timing rule and the wiring; the e2e test in test_upgrade.py proves it on
real hosts)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from etcdsop import lock
from etcdsop.errors import ClusterError, LockLost


class Etcd:
    """Answers the lock's calls; keepalives fail once `down` is set."""

    def __init__(self) -> None:
        self.endpoints = ["https://a:2379", "https://b:2379", "https://c:2379"]
        self.down = False
        self.hang = 0.0
        self.keepalives: list[str] = []

    def with_timeout(self, _timeout: float) -> Etcd:
        return self

    def call(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        if path == "/v3/kv/range":
            return {}
        if path == "/v3/lease/grant":
            return {"ID": "7"}
        if path == "/v3/kv/txn":
            return {"succeeded": True}
        if path == "/v3/lease/keepalive":
            self.keepalives.append(kw.get("endpoint", ""))
            if self.down:
                time.sleep(self.hang)  # a try that hangs (connect, TLS, read)
                raise ClusterError("no answer")
            return {"result": {"TTL": "15"}}
        return {}


def held(where: Path, etcd: Etcd, on_lost: Any, say: Any = None) -> Any:
    """cluster_lock on the fake etcd, as session.run_locked takes it."""
    return lock.cluster_lock(
        where / "l",
        lambda: etcd,  # type: ignore[arg-type,return-value]
        "etcd",
        "etcdsop add",
        wait=0,
        say=say or (lambda _s: None),
        on_lost=on_lost,
    )


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "RENEW_EVERY", 0.05)
    monkeypatch.setattr(lock, "LOST_AFTER", 0.6)
    monkeypatch.setattr(lock, "WATCH_EVERY", 0.02, raising=False)


def test_a_lock_whose_renewals_go_unanswered_is_lost_and_stops_the_command(
    tmp_path: Path, fast: None
) -> None:
    etcd, said, aborted = Etcd(), [], []
    began = time.monotonic()
    with (
        pytest.raises(LockLost, match="was lost"),
        held(tmp_path, etcd, lambda: aborted.append(time.monotonic() - began), said.append),
    ):
        time.sleep(0.3)  # renewed meanwhile: not lost
        assert not aborted
        etcd.down = True
        time.sleep(30)  # a step that would go on: the lock's signal ends it
    assert aborted and aborted[0] < 0.3 + 0.6 + 0.3, aborted
    assert any("LOST the cluster lock" in s for s in said)
    # Every member is tried in turn while none answers, not one per round.
    assert set(etcd.keepalives[-3:]) == set(etcd.endpoints)


def test_a_renewal_that_hangs_does_not_delay_the_verdict(tmp_path: Path, fast: None) -> None:
    """The loss is declared by the clock, not when a hung try returns."""
    etcd, aborted = Etcd(), []
    etcd.hang = 3.0
    began = time.monotonic()
    with (
        pytest.raises(LockLost),
        held(tmp_path, etcd, lambda: aborted.append(time.monotonic() - began), lambda _s: None),
    ):
        etcd.down = True
        time.sleep(30)
    assert aborted and aborted[0] < 0.6 + 0.5, aborted  # not 3 s: the try still hangs


def test_a_released_lock_is_never_declared_lost(tmp_path: Path, fast: None) -> None:
    etcd, aborted = Etcd(), []
    with held(tmp_path, etcd, lambda: aborted.append(True), lambda _s: None):
        time.sleep(0.2)
    etcd.down = True
    time.sleep(1.0)  # past LOST_AFTER with nothing answering: released, so no verdict
    assert aborted == []
