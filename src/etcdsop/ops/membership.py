"""Member add / remove / promote that converge instead of re-sending blindly.

None of the three is idempotent. After an answer that leaves the outcome unknown
(a timeout, a lost connection, etcd's "request timed out") or one that says "done
already" ("Peer URLs already exists", "member not found", "can only promote a
learner member"), the member list is read and decides, as kubeadm does: every
pass reads first, then sends only what is still missing. Each pass is bounded by
the client's read timeout (longer than etcd's request timeout), the whole by
`timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from etcdsop.errors import ClusterError, MemberError
from etcdsop.etcd import EtcdApiError, EtcdClient, EtcdOutcomeUnknown, MemberInfo

# etcd refuses membership changes for ~5 s after a (re)start of the member it asks.
UNHEALTHY = "unhealthy cluster"
PEER_EXISTS = "Peer URLs already exists"
NOT_FOUND = "member not found"
NOT_IN_SYNC = "can only promote a learner member which is in sync with leader"
TOO_MANY_LEARNERS = "too many learner members"


@dataclass(frozen=True)
class Added:
    member: MemberInfo
    created: bool  # False: the peer URL was a member already (an earlier attempt)


def find_peer(members: list[MemberInfo], peer_url: str) -> MemberInfo | None:
    return next((m for m in members if peer_url in m.peer_urls), None)


Reader = Callable[[], list[MemberInfo]]


def _read(client: EtcdClient, read: Reader | None = None) -> list[MemberInfo] | None:
    """The member list, or None when no voter answers right now (retry later)."""
    try:
        return read() if read is not None else client.member_list()
    except ClusterError:
        return None


class _Passes:
    """Bounded passes: `next()` sleeps between them and says when time is up."""

    def __init__(
        self,
        what: str,
        timeout: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        interval: float = 0.5,
    ) -> None:
        self.what, self.timeout, self.sleep, self.clock = what, timeout, sleep, clock
        self.deadline = clock() + timeout
        self.interval = interval
        self.last = ""

    def next(self, why: str, explain: Callable[[], str] | None = None) -> None:
        """Sleep before the next pass; at the deadline raise, with `explain()` when given."""
        self.last = why
        if self.clock() >= self.deadline:
            detail = explain() if explain is not None else ""
            raise ClusterError(
                f"{self.what}: not done after {self.timeout:.0f}s ({why}){detail}; "
                "read `etcdsop status` before trying again"
            )
        self.sleep(self.interval)


def _who(m: MemberInfo) -> str:
    host = urlsplit(m.client_urls[0]).hostname or m.client_urls[0]
    return f"{m.name} ({host})" if m.name else host


def unconnected_voters(client: EtcdClient) -> str:
    """Why etcd keeps saying "unhealthy cluster": with strict reconfiguration checks
    it refuses a membership change while any voter is cut off from the leader. Name
    the voters that do not answer, know no leader, or follow another one."""
    quick = client.with_timeout(2.0)
    members = _read(quick)
    if not members:
        return ""
    leaders: dict[str, int] = {}
    for m in members:
        if m.is_learner or not m.client_urls:
            continue
        try:
            leaders[_who(m)] = quick.status(m.client_urls[0]).leader
        except ClusterError:
            leaders[_who(m)] = -1
    known = [lead for lead in leaders.values() if lead > 0]
    usual = max(set(known), key=known.count) if known else 0
    cut = [name for name, lead in leaders.items() if lead != usual or lead <= 0]
    if not cut:
        return ""
    return (
        f"; voter(s) not connected to the leader: {', '.join(sorted(cut))} — etcd "
        "refuses membership changes until every voter is"
    )


def add_member(
    client: EtcdClient,
    peer_url: str,
    *,
    learner: bool,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Added:
    """Announce peer_url (as a learner when asked) exactly once."""
    passes = _Passes(f"member add {peer_url}", timeout, sleep, clock)
    sent = False  # a request went out whose outcome we did not see
    while True:
        members = _read(client)
        if members is None:
            passes.next("no voter answers the member list")
            continue
        found = find_peer(members, peer_url)
        if found is not None:
            return Added(found, created=sent)
        try:
            return Added(client.member_add([peer_url], learner=learner), created=True)
        except EtcdOutcomeUnknown as exc:
            sent = True
            passes.next(exc.message)
        except EtcdApiError as exc:
            if PEER_EXISTS in exc.etcd_message:
                passes.next("peer URL exists: reading the member list")
            elif UNHEALTHY in exc.etcd_message:
                passes.next(exc.etcd_message, explain=lambda: unconnected_voters(client))
            else:
                raise


def remove_member(
    client: EtcdClient,
    member_id: int,
    *,
    timeout: float,
    read: Reader | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Remove member_id; False when it was not (or no longer) a member."""
    passes = _Passes(f"member remove {member_id:x}", timeout, sleep, clock)
    sent = False
    while True:
        members = _read(client, read)
        if members is None:
            passes.next("no voter answers the member list")
            continue
        if not any(m.id == member_id for m in members):
            return sent
        try:
            client.member_remove(member_id)
            return True
        except EtcdOutcomeUnknown as exc:
            sent = True
            passes.next(exc.message)
        except EtcdApiError as exc:
            if NOT_FOUND in exc.etcd_message:
                passes.next("member not found: reading the member list")
            elif UNHEALTHY in exc.etcd_message:
                passes.next(exc.etcd_message, explain=lambda: unconnected_voters(client))
            else:
                raise


def promote_member(
    client: EtcdClient,
    member_id: int,
    *,
    leader_url: Callable[[], str],
    timeout: float,
    on_waiting: Callable[[], None] | None = None,
    read: Reader | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> MemberInfo:
    """Promote a learner through the leader once it is in sync; the voter's entry.

    Sent to the leader: with auth on, a follower times out (etcd #20757). Before
    each try the list is read: a member that is no learner any more is done.
    """
    passes = _Passes(f"promote {member_id:x}", timeout, sleep, clock)
    while True:
        members = _read(client, read)
        if members is None:
            passes.next("no voter answers the member list")
            continue
        entry = next((m for m in members if m.id == member_id), None)
        if entry is None:
            raise MemberError(f"member {member_id:x} is not in the cluster (any more)")
        if not entry.is_learner:
            return entry
        try:
            client.member_promote(member_id, endpoint=leader_url())
        except EtcdOutcomeUnknown as exc:
            passes.next(exc.message)
        except EtcdApiError as exc:
            if NOT_IN_SYNC in exc.etcd_message:
                if on_waiting is not None:
                    on_waiting()
                passes.next(exc.etcd_message)
            elif "can only promote a learner member" in exc.etcd_message or exc.ask_another:
                passes.next(exc.etcd_message)  # read again: promoted, or leadership moved
            else:
                raise
        except ClusterError as exc:  # the leader did not answer: it may have moved
            passes.next(exc.message)
