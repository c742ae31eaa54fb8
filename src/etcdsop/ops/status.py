"""`etcdsop status`: one row per member, quorum arithmetic, through the etcd API only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from etcdsop.errors import ClusterError
from etcdsop.etcd import EndpointStatus, EtcdClient
from etcdsop.etcdmetrics import MemberMetrics
from etcdsop.findings import ALARM_FIX
from etcdsop.model import Member
from etcdsop.ops.common import ClusterView, Context


@dataclass(frozen=True)
class MemberRow:
    id: str  # hex, as etcdctl prints it
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    started: bool
    learner: bool
    leader: bool
    raft_term: int | None
    raft_index: int | None
    db_size: int | None
    version: str | None
    healthy: bool
    latency_ms: float | None
    in_inventory: bool
    error: str | None = None  # the whole error, shown below the table
    problem: str | None = None  # its short word for the table cell: `down: refused`, `tls`...
    db_size_in_use: int | None = None  # what a defragment would leave
    quota_bytes: int | None = None  # its etcd_quota_backend_bytes (None: not in the inventory)
    alarms: list[str] = field(default_factory=list)  # NOSPACE, CORRUPT

    @property
    def quota_used(self) -> float | None:
        """db size / quota (1.0 = full: NOSPACE), or None when either is unknown."""
        if self.db_size is None or not self.quota_bytes:
            return None
        return self.db_size / self.quota_bytes


@dataclass
class StatusResult:
    cluster: str
    cluster_id: str | None
    members: list[MemberRow] = field(default_factory=list)
    voters: int = 0
    healthy_voters: int = 0
    quorum: int = 0
    tolerates: int = 0
    leaders: int = 0
    auth_enabled: bool | None = None  # None: could not be asked
    cluster_version: str | None = None  # the minor every member runs, "3.5.0"
    notes: list[str] = field(default_factory=list)  # inventory vs live disagreements
    alarms: list[dict[str, str]] = field(default_factory=list)  # {member, name, alarm}

    @property
    def healthy(self) -> bool:
        members_ok = bool(self.members) and all(m.healthy for m in self.members)
        # An open cluster (auth off) is a problem too: anyone with a client cert writes;
        # so is an alarm: NOSPACE makes it read-only, CORRUPT means a member differs.
        return members_ok and self.leaders == 1 and self.auth_enabled is True and not self.alarms

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


# Substrings of connection errors (urllib3, OpenSSL, errno texts) -> the word in the cell.
_PROBLEMS = (
    ("not started", "unstarted"),
    ("connection refused", "down: refused"),
    ("no route to host", "down: no route"),
    ("network is unreachable", "down: no route"),
    ("host is unreachable", "down: no route"),
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("ssl", "tls"),
    ("certificate", "tls"),
    ("tls", "tls"),
    ("etcd error", "etcd error"),
    ("not an etcd answer", "not etcd"),
)


def problem_word(error: str | None, *, answered: bool) -> str:
    """A member's trouble in a word or two; `unhealthy` when it answers without a leader."""
    if error is None:
        return "unhealthy" if answered else "down"
    text = error.lower()
    return next((word for needle, word in _PROBLEMS if needle in text), "down")


def poller(ctx: Context) -> Callable[[], StatusResult]:
    """status() again and again (--watch) with one client, so one authentication: on
    etcd 3.4 each is a raft proposal (and a bcrypt), which would feed the index deltas."""
    clients: list[EtcdClient] = []

    def poll() -> StatusResult:
        if not clients and ctx.tls_files() is not None:
            clients.append(ctx.client())
        return status(ctx, client=clients[0] if clients else None)

    return poll


def _add_alarms(
    ctx: Context, view: ClusterView, result: StatusResult, with_leader: set[str]
) -> None:
    """The cluster's alarms, on the rows and in the result (a note when unknown).

    etcd's /health says false on every member while any alarm is set: a member that
    answers with a leader is then `alarm: NOSPACE` in the table, not `unhealthy`.
    """
    try:
        alarms = ctx.voter_client(view).alarms()
    except ClusterError as exc:
        result.notes.append(f"alarms unknown: {exc.message}")
        return
    rows = {r.id: r for r in result.members}
    for alarm in alarms:
        row = rows.get(alarm.hex_id)
        if row is not None:
            row.alarms.append(alarm.alarm)
        name = row.name if row is not None and row.name else alarm.hex_id
        result.alarms.append({"member": alarm.hex_id, "name": name, "alarm": alarm.alarm})
        result.notes.append(f"alarm {alarm.alarm} on {name}: {ALARM_FIX.get(alarm.alarm, '')}")
    word = "alarm: " + ",".join(sorted({a.alarm for a in alarms}))
    result.members = [
        replace(r, problem=word) if alarms and not r.healthy and r.id in with_leader else r
        for r in result.members
    ]


# etcd's minors past their end of support (etcd supports the two newest minors).
END_OF_SUPPORT = {"3.4": "June 2026", "3.3": "2022"}


def _add_versions(client: EtcdClient, result: StatusResult) -> None:
    """The cluster version, from the first healthy member; notes for what it means."""
    for row in result.members:
        if row.healthy and row.client_urls:
            try:
                result.cluster_version = client.versions(row.client_urls[0])[1] or None
                break
            except ClusterError:
                continue
    major, _, low = (result.cluster_version or "").partition(".")
    minor = f"{major}.{low.partition('.')[0]}"
    if minor in END_OF_SUPPORT:
        result.notes.append(
            f"etcd {minor} reached its end of support in {END_OF_SUPPORT[minor]}: "
            f"etcdsop upgrade moves the cluster to {major}.{int(low.partition('.')[0]) + 1}"
        )


def _rows_from_metrics(ctx: Context, result: StatusResult) -> bool:
    """Rows for the inventory members that serve /metrics although none gave the member
    list: etcd 3.4.42, 3.5.28 and 3.6.9 on list members only after a login, and a login
    needs a quorum. /metrics needs none, and says who knows a leader and how far each
    log is, which is what a quorum loss calls for. False when no member answers."""
    client = ctx.client(timeout=3.0)

    def ask(member: Member) -> MemberMetrics:
        return client.metrics(member.client_url)

    answers = ctx.parallel(ctx.inventory.members, ask)
    if not any(isinstance(a, MemberMetrics) for a in answers.values()):
        return False
    fill_from_metrics(result, ctx.inventory.members, answers)
    return True


def fill_from_metrics(
    result: StatusResult, members: Sequence[Member], answers: Mapping[str, object]
) -> None:
    """The rows and notes of a status read from /metrics alone (pure): answers maps
    each member's IP to its MemberMetrics or to what went wrong asking."""
    for m in members:
        answer = answers.get(m.ip)
        got = answer if isinstance(answer, MemberMetrics) else None
        error = None if got else (str(answer) if answer is not None else "no answer")
        if got and not got.has_leader:
            error = "no leader (no quorum)"
        result.members.append(
            MemberRow(
                id=f"{got.member_id:x}" if got and got.member_id else "",
                name=m.name,
                peer_urls=[m.peer_url],
                client_urls=[m.client_url],
                started=True,  # a member, as far as anyone can tell without the list
                learner=bool(got and got.is_learner),
                leader=bool(got and got.is_leader),
                raft_term=None,
                raft_index=got.committed_index if got else None,
                db_size=got.db_size if got else None,
                version=got.version if got else None,
                healthy=False,  # no login, so no proof it serves reads and writes
                latency_ms=None,
                in_inventory=True,
                error=error,
                problem="unhealthy" if got else problem_word(error, answered=False),
                db_size_in_use=got.db_size_in_use if got else None,
                quota_bytes=m.quota_backend_bytes,
            )
        )
    voters = [r for r in result.members if not r.learner]
    result.voters = len(voters)
    result.quorum = result.voters // 2 + 1
    result.leaders = sum(1 for r in result.members if r.leader)
    serving = sum(1 for r in result.members if r.raft_index is not None)
    result.notes.append(
        f"{serving} of {len(result.members)} inventory member(s) answer, but none gives "
        "the member list: etcd 3.4.42+/3.5.28+/3.6.9+ lists members only after a login, "
        "and a login needs a quorum. Rows are the inventory's, read from /metrics"
    )
    if not result.leaders:
        result.notes.append(
            "no member knows a leader: the quorum is lost; start the members that are down, "
            "or see etcdsop recover"
        )


def status(ctx: Context, *, client: EtcdClient | None = None) -> StatusResult:
    inventory = ctx.inventory
    view = ctx.probe()
    result = StatusResult(
        cluster=inventory.cluster, cluster_id=f"{view.cluster_id:x}" if view.cluster_id else None
    )
    if not view.live:
        if ctx.tls_files() is not None and _rows_from_metrics(ctx, result):
            return result
        result.notes.append("no member of the inventory answers: the cluster is down or absent")
        return result
    client = client or ctx.client()
    inventory_peers = {m.peer_url for m in inventory.members}
    quotas = {m.peer_url: m.quota_backend_bytes for m in inventory.members}

    def probe_member(url: str) -> tuple[EndpointStatus | None, bool, str | None]:
        try:
            return client.status(url), client.health(url), None
        except ClusterError as exc:
            return None, False, exc.message

    urls = {mi.id: (mi.client_urls[0] if mi.client_urls else "") for mi in view.members}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(urls))) as pool:
        answers = dict(
            zip(
                urls,
                pool.map(
                    lambda u: probe_member(u) if u else (None, False, "not started"), urls.values()
                ),
                strict=True,
            )
        )
    leader_ids = {a[0].leader for a in answers.values() if a[0] is not None}
    for mi in sorted(view.members, key=lambda m: m.peer_urls[0] if m.peer_urls else ""):
        st, healthy, error = answers[mi.id]
        result.members.append(
            MemberRow(
                id=mi.hex_id,
                name=mi.name,
                peer_urls=list(mi.peer_urls),
                client_urls=list(mi.client_urls),
                started=mi.started,
                learner=mi.is_learner,
                leader=mi.id in leader_ids,
                raft_term=st.raft_term if st else None,
                raft_index=st.raft_index if st else None,
                db_size=st.db_size if st else None,
                version=st.version if st else None,
                healthy=healthy,
                latency_ms=round(st.latency_ms, 1) if st else None,
                in_inventory=any(u in inventory_peers for u in mi.peer_urls),
                error=error,
                problem=None if healthy else problem_word(error, answered=st is not None),
                db_size_in_use=st.db_size_in_use if st and st.db_size_in_use else None,
                quota_bytes=next((quotas[u] for u in mi.peer_urls if u in quotas), None),
            )
        )
    voters = [r for r in result.members if not r.learner]
    result.voters = len(voters)
    result.healthy_voters = sum(1 for r in voters if r.healthy)
    result.quorum = result.voters // 2 + 1
    result.tolerates = max(0, result.healthy_voters - result.quorum)
    result.leaders = len(leader_ids)
    if len(leader_ids) > 1:
        result.notes.append("members disagree on the leader")
    try:
        result.auth_enabled = ctx.voter_client(view).auth_enabled()
    except ClusterError as exc:
        result.notes.append(f"auth state unknown: {exc.message}")
    with_leader = {f"{a[0].member_id:x}" for a in answers.values() if a[0] and a[0].leader}
    _add_alarms(ctx, view, result, with_leader)
    _add_versions(client, result)
    if result.auth_enabled is False:
        result.notes.append(
            "auth is disabled: anyone with a client certificate can write; "
            "etcdsop create enables it"
        )
    live_peers = {u for mi in view.members for u in mi.peer_urls}
    for m in inventory.members:
        if m.peer_url not in live_peers:
            result.notes.append(f"inventory host {m.ip} ({m.name}) is not a member")
    return result
