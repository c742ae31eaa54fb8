"""`etcdsop defrag`: hand a member's free pages back to the disk, one member at a time.

etcd defragments only the member a request is sent to, and blocks that member's reads
and writes meanwhile. So: every voter healthy first; learners and followers first, the
leader last (asked again before each member: a leader change during the run moves it to
the end); each healthy again before the next. Compaction comes first where it is needed:
a NOSPACE alarm (etcd's recovery is compact -> defragment -> disarm) or `--compact`. Last,
a NOSPACE alarm is disarmed once every member is back under its quota.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.etcd import Alarm, EtcdClient, EtcdOutcomeUnknown, MemberInfo
from etcdsop.ops.common import Context, leader_id
from etcdsop.waits import poll_until


@dataclass
class MemberDefrag:
    name: str
    id: str
    endpoint: str
    role: str  # leader, follower, learner: when it was defragmented
    db_before: int
    db_after: int | None = None
    started: str = ""  # UTC, ISO 8601
    finished: str = ""
    seconds: float = 0.0
    note: str = ""  # e.g. the answer was lost but the member serves again


@dataclass
class DefragResult:
    cluster: str
    compacted_to: int | None = None  # the revision history was compacted to, if it was
    compact_reason: str = ""
    members: list[MemberDefrag] = field(default_factory=list)
    alarms_before: list[str] = field(default_factory=list)  # "NOSPACE on etcd-2"
    disarmed: list[str] = field(default_factory=list)
    alarms_after: list[str] = field(default_factory=list)
    leader_before: str = ""
    leader_after: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Defrag:
    """One run; `timeout` bounds each member's defragment, the context's wait_timeout
    each wait for health."""

    def __init__(self, ctx: Context, *, compact: bool, timeout: float) -> None:
        self.ctx = ctx
        self.compact = compact
        self.timeout = timeout
        self.view = ctx.probe()
        self.client: EtcdClient = ctx.voter_client(self.view)
        self.result = DefragResult(ctx.inventory.cluster)
        self.alarmed = False  # /health is false everywhere while an alarm is set

    # -- the guards ------------------------------------------------------------------
    def _started(self) -> list[MemberInfo]:
        return [m for m in self.view.members if m.started and m.client_urls]

    def check_voters(self, done: Sequence[str] = ()) -> None:
        """Refuse (exit 3) unless every voter answers /health: a defragment blocks its
        member, which must never cost the cluster its quorum."""
        voters = [m for m in self.view.members if not m.is_learner]
        sick = [m for m in voters if not m.client_urls or not self._healthy(m.client_urls[0])]
        if sick:
            names = ", ".join(m.name or f"unstarted {m.peer_urls[0]}" for m in sick)
            so_far = f"; defragmented so far: {', '.join(done)}" if done else ""
            raise GuardRefused(
                f"refusing to defragment: voter(s) not healthy: {names} (every voter must "
                f"be healthy, a member being defragmented serves nothing){so_far}"
            )

    def _healthy(self, url: str) -> bool:
        """etcd's /health; while an alarm is set (it says false then, on every member):
        answers with a leader and serves reads."""
        if self.client.health(url):
            return True
        if not self.alarmed:
            return False
        try:
            return bool(self.client.status(url).leader) and self.client.serving(url)
        except ClusterError:
            return False

    def _leader_id(self) -> int:
        return leader_id(self.client, [m.client_urls[0] for m in self._started()])

    def _name(self, member_id: int) -> str:
        found = next((m for m in self.view.members if m.id == member_id), None)
        return found.name if found is not None and found.name else f"{member_id:x}"

    # -- the steps -------------------------------------------------------------------
    def run(self) -> DefragResult:
        report = self.ctx.report
        try:
            alarms = self.client.alarms()
        except ClusterError:
            self.check_voters()  # without a quorum nothing answers: name who is down
            raise
        self.alarmed = bool(alarms)
        self.check_voters()
        self.result.alarms_before = [f"{a.alarm} on {self._name(a.member_id)}" for a in alarms]
        for line in self.result.alarms_before:
            report.warn(f"alarm {line}")
        nospace = any(a.alarm == "NOSPACE" for a in alarms)
        if nospace or self.compact:
            self._compact("NOSPACE alarm" if nospace else "--compact")
        leader = self._leader_id()
        self.result.leader_before = self._name(leader)
        pending = self._started()
        skipped = [m for m in self.view.members if m not in pending]
        for member in skipped:
            report.info(f"skipped unstarted member {member.peer_urls[0]}")
        report.phase(f"defragment {len(pending)} member(s), one at a time, leader last")
        while pending:
            if self.result.members:
                self.check_voters([d.name for d in self.result.members])
                leader = self._leader_id()  # asked again: the leader may have changed
            member = next((m for m in pending if m.id != leader), pending[0])
            pending.remove(member)
            self._one(member, leader)
        self.result.leader_after = self._name(self._leader_id())
        if nospace:
            self._disarm(alarms)
        self.result.alarms_after = [
            f"{a.alarm} on {self._name(a.member_id)}" for a in self.client.alarms()
        ]
        return self.result

    def _compact(self, why: str) -> None:
        """Drop the key history up to the current revision, so that the pages it holds
        become free for the defragment. Watchers behind that revision (Patroni's) get
        etcd's `compacted` answer and read the keys again, as after auto-compaction."""
        revision = self.client.revision()
        self.ctx.report.phase(f"compact the key history to revision {revision} ({why})")
        if not self.client.compact(revision, timeout=max(self.timeout, self.ctx.request_timeout)):
            self.ctx.report.info(f"revision {revision} was compacted already")
        self.result.compacted_to = revision
        self.result.compact_reason = why

    def _one(self, member: MemberInfo, leader: int) -> None:
        url = member.client_urls[0]
        ip = url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
        role = "leader" if member.id == leader else "learner" if member.is_learner else "follower"
        before = self.client.status(url).db_size
        entry = MemberDefrag(member.name, member.hex_id, url, role, before, started=_now())
        self.result.members.append(entry)
        self.ctx.report.host(
            ip, f"defragmenting {member.name} ({role}, db {_mib(before)})", "start"
        )
        started = time.monotonic()
        try:
            self.client.defragment(url, self.timeout)
        except EtcdOutcomeUnknown as exc:
            # etcd carries on after the client gave up: wait for it, never send another.
            entry.note = f"no answer to the defragment ({exc.message}); waited for the member"
            left = max(self.timeout - (time.monotonic() - started), 0) + self.ctx.request_timeout
            if poll_until(lambda: self.client.serving(url) or None, timeout=left) is None:
                raise ClusterError(
                    f"{member.name} ({url}) does not serve again {left:.0f}s after its "
                    f"defragment was sent: see its journal (journalctl -u etcd); members "
                    f"done: {', '.join(d.name for d in self.result.members[:-1]) or 'none'}"
                ) from exc
        entry.seconds = round(time.monotonic() - started, 2)
        self._wait_healthy(url)
        entry.finished = _now()
        entry.db_after = self.client.status(url).db_size
        self.ctx.report.host(
            ip,
            f"{member.name}: db {_mib(before)} -> {_mib(entry.db_after)} in {entry.seconds:.1f}s",
            "changed",
        )

    def _wait_healthy(self, url: str) -> None:
        wait = self.ctx.options.wait_timeout
        if poll_until(lambda: self._healthy(url) or None, timeout=wait) is None:
            raise ClusterError(f"{url}: not healthy {wait:.0f}s after its defragment")

    def _disarm(self, alarms: Sequence[Alarm]) -> None:
        """NOSPACE goes once every member is back under its quota (etcd raises it again
        at the next write otherwise); CORRUPT is never disarmed here."""
        quotas = {m.peer_url: m.quota_backend_bytes for m in self.ctx.inventory.members}
        smallest = min(quotas.values())
        over = []
        for member in self._started():
            quota = next((quotas[u] for u in member.peer_urls if u in quotas), smallest)
            size = self.client.status(member.client_urls[0]).db_size
            if size >= quota:
                over.append(f"{member.name} {_mib(size)} of {_mib(quota)}")
        if over:
            raise ClusterError(
                "the NOSPACE alarm stays: still over the quota after the defragment: "
                + ", ".join(over)
                + ": delete keys that are not needed and run etcdsop defrag again, or raise "
                "etcd_quota_backend_bytes and run etcdsop reload -t etcd --restart"
            )
        for alarm in alarms:
            if alarm.alarm == "NOSPACE":
                self.client.alarm_disarm(alarm)
                self.result.disarmed.append(f"NOSPACE on {self._name(alarm.member_id)}")
                self.ctx.report.info(f"alarm NOSPACE on {self._name(alarm.member_id)} disarmed")


def defrag(ctx: Context, *, compact: bool, timeout: float) -> DefragResult:
    return Defrag(ctx, compact=compact, timeout=timeout).run()


def _mib(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024 / 1024:.1f}MiB"
