"""check's rules on plain data: each finding appears exactly when it should."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etcdsop import findings
from etcdsop.findings import CertFact, ClockSample, MemberFact

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
PEERS = {f"https://10.0.0.{i}:2380": f"10.0.0.{i}" for i in (1, 2, 3)}


def member(i: int, **changes: object) -> MemberFact:
    values: dict[str, object] = {
        "name": f"etcd-{i}",
        "peer_url": f"https://10.0.0.{i}:2380",
        "learner": False,
        "healthy": True,
        "problem": None,
        "version": "3.4.23",
        "db_size": 1 << 20,
        "quota": 8 << 30,
        "in_inventory": True,
    }
    values.update(changes)
    return MemberFact(**values)  # type: ignore[arg-type]


def kinds(found: list[findings.Finding]) -> list[tuple[str, str]]:
    return [(f.kind, f.subject) for f in found]


def test_a_healthy_cluster_has_no_finding() -> None:
    assert findings.members([member(1), member(2), member(3)], PEERS, []) == []
    assert findings.auth(True) == [] and findings.auth(None) == []


@pytest.mark.parametrize(("days", "found"), [(10, True), (30, True), (31, False), (-1, True)])
def test_certificates_within_30_days(days: int, found: bool) -> None:
    cert = CertFact("node", "10.0.0.1:/etc/etcd/server.crt", NOW + timedelta(days=days), fix="x")
    result = findings.certs([cert], NOW)
    assert bool(result) is found
    if days < 0:
        assert "expired" in result[0].problem


def test_a_missing_certificate_is_a_finding() -> None:
    cert = CertFact("admin", "/pki/etcdsop/admin.crt", None, "missing", "etcdsop create")
    assert findings.certs([cert], NOW)[0].line() == (
        "/pki/etcdsop/admin.crt: admin certificate: missing; fix: etcdsop create"
    )


def test_db_over_80_percent_of_its_quota() -> None:
    full = member(2, db_size=int(0.81 * (8 << 30)))
    assert kinds(findings.members([member(1), full, member(3)], PEERS, [])) == [("quota", "etcd-2")]
    assert findings.members([member(1, db_size=int(0.79 * (8 << 30)))], {}, []) == []


def test_down_member_and_alarm_but_no_down_finding_for_the_alarm_itself() -> None:
    down = member(3, healthy=False, problem="down: refused", version=None, db_size=None)
    alarmed = member(2, healthy=False, problem="alarm: NOSPACE")
    found = findings.members([member(1), alarmed, down], PEERS, [("etcd-2", "NOSPACE")])
    assert kinds(found) == [("member", "etcd-3"), ("alarm", "etcd-2")]
    assert "etcdsop defrag" in found[1].fix


def test_mixed_versions_and_inventory_mismatches_both_ways() -> None:
    stranger = member(9, name="etcd-9", in_inventory=False, version="3.5.16")
    found = findings.members([member(1), member(2), stranger], PEERS, [])
    assert kinds(found) == [
        ("inventory", "etcd-9"),
        ("version", "cluster"),
        ("inventory", "10.0.0.3"),
    ]
    assert "etcdsop add 10.0.0.3" in found[2].fix


def test_auth_disabled() -> None:
    assert kinds(findings.auth(False)) == [("auth", "cluster")]


def test_learner_older_than_ten_minutes() -> None:
    found = findings.learners({"etcd-4": 601.0, "etcd-5": 599.0, "etcd-6": None})
    assert kinds(found) == [("learner", "etcd-4")]


def test_clock_skew_counts_only_what_the_round_trips_cannot_explain() -> None:
    near = [ClockSample("a", 0.0, 0.01), ClockSample("b", 0.9, 0.01)]
    assert findings.clock_skew(near) == []
    far = [ClockSample("a", -0.2, 0.02), ClockSample("b", 1.1, 0.02), ClockSample("c", 0.0, 0.02)]
    assert kinds(findings.clock_skew(far)) == [("clock", "b vs a")]
    # 1.3 s apart but each measured over a 1 s round trip: not proven.
    slow = [ClockSample("a", 0.0, 1.0), ClockSample("b", 1.3, 1.0)]
    assert findings.clock_skew(slow) == []


def test_backups_matched_on_the_name_save_snapshot_gives() -> None:
    path = Path("/f/backup/etcd-20261203T100000.123456Z.db")
    taken = findings.backup_time(path, mtime=0.0)
    assert taken == datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert findings.backups(Path("/f/backup"), "etcd", [taken], NOW) == []
    old = NOW - timedelta(hours=25)
    assert "25 h old" in findings.backups(Path("/f/backup"), "etcd", [old], NOW)[0].problem
    assert "no backup" in findings.backups(Path("/f/backup"), "etcd", [], NOW)[0].problem
