"""`etcdsop check`'s verdicts: pure functions from gathered facts to findings.

Each finding names what is wrong, where, and the fix. Nothing here talks to a host,
so every rule is tested with plain data (tests/unit/test_findings.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CERT_WARN = timedelta(days=30)
DB_WARN = 0.8  # of etcd_quota_backend_bytes
LEARNER_WARN = timedelta(minutes=10)
SKEW_WARN = 1.0  # seconds between two hosts' clocks
BACKUP_WARN = timedelta(hours=24)
# snapshot.save_snapshot's name: <cluster>-<UTC>.db
_BACKUP_STAMP = re.compile(r"-(\d{8}T\d{6}(?:\.\d+)?Z)\.db$")


# What an active alarm means and how it goes away (status notes, check findings).
ALARM_FIX = {
    "NOSPACE": "db over quota-backend-bytes, the cluster takes no writes; "
    "fix: delete what is not needed, then etcdsop defrag (compacts, defragments, disarms)",
    "CORRUPT": "this member's data differs from the others'; fix: remove it and add it "
    "back (etcdsop rm IP, then etcdsop add IP)",
}


@dataclass(frozen=True)
class Finding:
    kind: str  # cert, alarm, quota, learner, auth, version, member, inventory, clock, backup
    subject: str  # the member, host, file...
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.subject}: {self.problem}; fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CertFact:
    """One certificate and where it lives (a local path, or host:path)."""

    role: str  # CA, node, admin, PostgreSQL client
    where: str
    not_after: datetime | None  # None: missing or unreadable
    error: str = ""
    fix: str = ""  # how this one is renewed


def certs(facts: Iterable[CertFact], now: datetime) -> list[Finding]:
    found = []
    for cert in facts:
        if cert.not_after is None:
            found.append(
                Finding("cert", cert.where, f"{cert.role} certificate: {cert.error}", cert.fix)
            )
            continue
        left = cert.not_after - now
        if left <= CERT_WARN:
            when = "expired" if left.total_seconds() <= 0 else f"expires in {left.days} day(s)"
            found.append(
                Finding(
                    "cert",
                    cert.where,
                    f"{cert.role} certificate {when} ({cert.not_after.date().isoformat()})",
                    cert.fix,
                )
            )
    return found


@dataclass(frozen=True)
class MemberFact:
    """A live member as status sees it (names resolved, inventory matched)."""

    name: str  # its name, or its id when unstarted
    peer_url: str
    learner: bool
    healthy: bool
    problem: str | None  # status's word: `down: refused`, `unstarted`...
    version: str | None
    db_size: int | None
    quota: int | None
    in_inventory: bool


def members(
    live: Sequence[MemberFact], inventory: Mapping[str, str], alarms: Sequence[tuple[str, str]]
) -> list[Finding]:
    """Down members, alarms, full dbs, mixed versions, inventory vs live.

    inventory: peer URL -> host IP of every inventory member; alarms: (member, alarm).
    """
    found = []
    for m in live:
        # /health is false on every member while an alarm is set: the alarm's own
        # finding below says what to do.
        if not m.healthy and not (m.problem or "").startswith("alarm"):
            found.append(
                Finding(
                    "member",
                    m.name,
                    f"not healthy ({m.problem or 'unhealthy'})",
                    "start it (systemctl start etcd on its host) and see journalctl -u etcd; "
                    "if its host is gone for good: etcdsop rm IP, then etcdsop add IP",
                )
            )
        if m.db_size is not None and m.quota and m.db_size >= DB_WARN * m.quota:
            found.append(
                Finding(
                    "quota",
                    m.name,
                    f"db {m.db_size / 2**20:.1f} MiB is {m.db_size / m.quota:.0%} of its quota "
                    f"({m.quota / 2**20:.0f} MiB): at 100% etcd takes no writes",
                    "etcdsop defrag (add --compact to drop the key history first), or raise "
                    "etcd_quota_backend_bytes and run etcdsop reload -t etcd --restart",
                )
            )
        if not m.in_inventory:
            found.append(
                Finding(
                    "inventory",
                    m.name,
                    f"a member ({m.peer_url}) that is not in the inventory",
                    "add its host to the etcd group, or remove it: etcdctl member remove ID",
                )
            )
    for member, alarm in alarms:
        meaning, _, fix = ALARM_FIX.get(alarm, "; fix: see etcd's docs").partition("; fix: ")
        found.append(Finding("alarm", member, f"alarm {alarm}: {meaning}", fix))
    versions = {m.version for m in live if m.version}
    if len(versions) > 1:
        each = ", ".join(f"{m.name} {m.version}" for m in live if m.version)
        found.append(
            Finding(
                "version",
                "cluster",
                f"mixed etcd versions ({each})",
                "finish the upgrade: etcdsop upgrade (one minor at a time, the leader last)",
            )
        )
    live_peers = {m.peer_url for m in live}
    for peer, ip in sorted(inventory.items(), key=lambda kv: kv[1]):
        if peer not in live_peers:
            found.append(
                Finding(
                    "inventory",
                    ip,
                    "an inventory host that is not a member",
                    f"etcdsop add {ip}, or take it out of the etcd group",
                )
            )
    return found


def auth(enabled: bool | None) -> list[Finding]:
    if enabled is False:
        return [
            Finding(
                "auth",
                "cluster",
                "auth is disabled: anyone with a client certificate reads and writes all",
                "etcdsop create (enables auth with the inventory's root password)",
            )
        ]
    return []


def learners(ages: Mapping[str, float | None]) -> list[Finding]:
    """ages: learner name -> seconds it has been a learner at least (None: unknown)."""
    found = []
    for name, age in sorted(ages.items()):
        if age is not None and age > LEARNER_WARN.total_seconds():
            found.append(
                Finding(
                    "learner",
                    name,
                    f"a learner for {age / 60:.0f} min at least (a learner does not vote)",
                    "etcdsop promote IP once it is in sync, or etcdsop rm IP",
                )
            )
    return found


@dataclass(frozen=True)
class ClockSample:
    """A host's clock against the admin node's: offset = host - admin at the midpoint of
    the round trip, known to within +- half that round trip."""

    host: str
    offset: float
    round_trip: float


def clock_skew(samples: Sequence[ClockSample]) -> list[Finding]:
    """Skew over SKEW_WARN between any two hosts, counting only what the round trips
    cannot explain (each offset is uncertain by half its round trip)."""
    if len(samples) < 2:
        return []
    ahead = max(samples, key=lambda s: s.offset)
    behind = min(samples, key=lambda s: s.offset)
    sure = (ahead.offset - behind.offset) - (ahead.round_trip + behind.round_trip) / 2
    if sure <= SKEW_WARN:
        return []
    return [
        Finding(
            "clock",
            f"{ahead.host} vs {behind.host}",
            f"clocks {ahead.offset - behind.offset:.2f}s apart (at least {sure:.2f}s after "
            "the round trips)",
            "run NTP (chrony or systemd-timesyncd) on every host",
        )
    ]


def backup_time(path: Path, mtime: float) -> datetime:
    """When a backup was taken: the UTC stamp in its name, else its file time."""
    match = _BACKUP_STAMP.search(path.name)
    if match:
        stamp = match.group(1)
        fmt = "%Y%m%dT%H%M%S.%fZ" if "." in stamp else "%Y%m%dT%H%M%SZ"
        return datetime.strptime(stamp, fmt).replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(mtime, timezone.utc)


def backups(
    directory: Path, cluster: str, taken: Sequence[datetime], now: datetime
) -> list[Finding]:
    newest = max(taken, default=None)
    if newest is not None and now - newest <= BACKUP_WARN:
        return []
    problem = (
        f"no backup {directory}/{cluster}-*.db"
        if newest is None
        else f"the newest backup is {(now - newest).total_seconds() / 3600:.0f} h old"
    )
    return [
        Finding(
            "backup",
            str(directory),
            f"{problem} (wanted: one from the last 24 h)",
            "etcdsop backup (and etcdsop backup --install-timer for one every hour)",
        )
    ]
