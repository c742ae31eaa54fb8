"""What every command shares: options, SSH hosts, the admin etcd client, cluster probes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.etcd import (
    EtcdApiError,
    EtcdClient,
    EtcdOutcomeUnknown,
    EtcdTlsError,
    EtcdUnreachable,
    MemberInfo,
    TlsFiles,
    request_timeout,
)
from etcdsop.etcdmetrics import MemberMetrics
from etcdsop.events import Reporter
from etcdsop.model import Inventory, Member, SshTarget
from etcdsop.remote import RemoteHost, SshOptions, run_parallel

if TYPE_CHECKING:
    from etcdsop.pki import Pki


@dataclass(frozen=True)
class RunOptions:
    limit: tuple[str, ...] = ()
    forks: int = 16
    pki_dir: Path | None = None
    strict_host_keys: bool = False
    wait_timeout: float = 60.0
    dry_run: bool = False
    ssh_config: Path | None = None


@dataclass(frozen=True)
class ClusterView:
    """The live cluster as the inventory's endpoints see it."""

    cluster_id: int | None = None
    members: tuple[MemberInfo, ...] = ()
    answered: frozenset[str] = field(default_factory=frozenset)  # IPs serving this cluster
    foreign: frozenset[str] = field(default_factory=frozenset)  # IPs serving another one
    # IPs whose client port refuses our certificates (another CA): never "no cluster".
    tls_refused: tuple[tuple[str, str], ...] = ()

    @property
    def live(self) -> bool:
        return self.cluster_id is not None

    def voter_endpoints(self) -> list[str]:
        return [u for m in self.members if m.started and not m.is_learner for u in m.client_urls]


_AUTH_NEEDED = ("user name is empty", "permission denied")


@dataclass(frozen=True)
class LeaderAnswer:
    """One member's view of the raft group, read without a login."""

    leader: bool | None  # does it know a leader? None: it cannot tell us
    raft_index: int | None  # None: not readable without a login
    cluster_id: str  # hex; "" when unknown


def leader_answer(client: EtcdClient, endpoint: str) -> LeaderAnswer:
    """Does this member know a leader, and how far is its log, without logging in?

    A login needs a quorum (without one it waits out etcd's request timeout), and the
    lock and recover must see members that have none. From etcd 3.4.42, 3.5.28 and
    3.6.9 on (CVE-2026-33413) Maintenance Status answers only after a login; /metrics
    never needs one, on every version, so the leader and the raft index come from it.
    Status adds the cluster id where it still answers without a login. Without
    /metrics (a proxy in front, say), Status, then /health: 3.5+ says "RAFT NO LEADER"
    there, 3.4 gives no reason, so a 3.4 member that is not healthy cannot tell.
    Raises ClusterError when the member does not answer at all.
    """
    try:
        metrics: MemberMetrics | None = client.metrics(endpoint)
    except (EtcdUnreachable, EtcdOutcomeUnknown):
        raise  # no answer: asking Status too would only wait out a second timeout
    except ClusterError:
        metrics = None  # it answers, but not /metrics
    if metrics is not None and (metrics.has_leader is None or metrics.committed_index is None):
        metrics = None
    try:
        data = client.call("/v3/maintenance/status", {}, endpoint=endpoint, auth=False)
    except EtcdApiError as exc:
        if not any(t in exc.etcd_message for t in _AUTH_NEEDED):
            raise
    except ClusterError:
        if metrics is None:
            raise
    else:
        cluster_id = f"{int(data.get('header', {}).get('cluster_id', 0) or 0):x}"
        if metrics is not None:
            return LeaderAnswer(metrics.has_leader, metrics.committed_index, cluster_id)
        return LeaderAnswer(
            bool(int(data.get("leader", 0) or 0)), int(data.get("raftIndex", 0) or 0), cluster_id
        )
    if metrics is not None:
        return LeaderAnswer(metrics.has_leader, metrics.committed_index, "")
    healthy, reason = client.health_detail(endpoint)
    if healthy:
        return LeaderAnswer(True, None, "")
    return LeaderAnswer(False if "NO LEADER" in reason.upper() else None, None, "")


_NO_LIST_ERRORS = ("user name is empty", "rpc not supported for learner")


class Context:
    """Per-run state: lazily opened SSH connections and the admin etcd client."""

    def __init__(self, inventory: Inventory, options: RunOptions, report: Reporter) -> None:
        self.inventory = inventory
        self.options = options
        self.report = report
        self.ssh = SshOptions(
            strict_host_keys=options.strict_host_keys,
            ssh_config=options.ssh_config,
            log=report.command,
        )
        self._hosts: dict[str, RemoteHost] = {}
        self._pki: Pki | None = None
        self.snapshots: list[str] = []  # taken during this run (for the audit trail)
        self._lock_release: Callable[[], None] | None = None
        self.aborted = False  # the cluster lock was lost: no further change

    def abort_all(self) -> None:
        """From the lock's renewing thread when the lock is lost: every SSH session
        ended now, and no remote step from here on."""
        self.aborted = True
        for host in list(self._hosts.values()):
            host.abort()

    def set_lock_release(self, release: Callable[[], None]) -> None:
        self._lock_release = release

    def release_cluster_lock(self) -> bool:
        """Let go of the etcd lock early (the admin-node lock stays): for a command that
        replaces the cluster the lock lives in. True when there was one."""
        release, self._lock_release = self._lock_release, None
        if release is not None:
            release()
        return release is not None

    @property
    def pki_dir(self) -> Path:
        return self.options.pki_dir or self.inventory.files_dir / "pki"

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            from etcdsop.pki import Pki

            ca_create = bool(self.inventory.members[0].vars.get("ca_create", True))
            self._pki = Pki(self.pki_dir, ca_create=ca_create)
        return self._pki

    # -- SSH -----------------------------------------------------------------------
    def host(self, member: Member) -> RemoteHost:
        if member.ip not in self._hosts:
            self._hosts[member.ip] = self._new_host(member.ip, member.ssh)
        return self._hosts[member.ip]

    def _new_host(self, label: str, ssh: SshTarget) -> RemoteHost:
        host = RemoteHost(label, ssh, self.ssh)
        if self.aborted:
            host.abort()
        return host

    def remote(self, name: str, ssh: SshTarget) -> RemoteHost:
        """A host that may be outside the etcd group (infra), closed with the others."""
        member = self.inventory.member(name)
        if member is not None:
            return self.host(member)
        if name not in self._hosts:
            self._hosts[name] = self._new_host(name, ssh)
        return self._hosts[name]

    def connect(self, members: Sequence[Member]) -> None:
        """Preflight: every host must answer before anything changes anywhere."""
        self.report.phase(f"connect to {len(members)} host(s)")
        results = self.parallel(members, lambda m: self.host(m).connect())
        failed = [r for r in results.values() if isinstance(r, ClusterError)]
        for member in members:
            if not isinstance(results[member.ip], ClusterError):
                self.report.host(member.ip, "connected")
        if failed:
            lines = [f.message for f in failed]
            raise ClusterError(
                f"{len(failed)} host(s) unreachable, nothing was changed: " + "; ".join(lines)
            )

    def parallel(
        self, members: Iterable[Member], action: Callable[[Member], object]
    ) -> dict[str, object]:
        return run_parallel(members, action, forks=self.options.forks, key=lambda m: m.ip)

    def close(self) -> None:
        for host in self._hosts.values():
            host.close()

    # -- etcd API ------------------------------------------------------------------
    def tls_files(self) -> TlsFiles | None:
        """The admin client's files, or None when they do not exist (yet)."""
        tls = TlsFiles(
            ca_cert=self.pki_dir / "ca" / "ca.crt",
            client_cert=self.pki_dir / "etcdsop" / "admin.crt",
            client_key=self.pki_dir / "etcdsop" / "admin.key",
        )
        exists = all(p.is_file() for p in (tls.ca_cert, tls.client_cert, tls.client_key))
        return tls if exists else None

    @property
    def request_timeout(self) -> float:
        """A client read timeout just past etcd's own request timeout: shorter, and a
        request that may still commit would be given up on (etcd-rules.md)."""
        slowest = max(m.election_timeout for m in self.inventory.members)
        return request_timeout(slowest) + 1.0

    def pki_hint(self) -> str:
        return (
            f"copy the pki directory of the admin node that created the cluster to "
            f"{self.pki_dir}, or point --pki-dir at such a copy"
        )

    def client(
        self, endpoints: Sequence[str] | None = None, timeout: float | None = None
    ) -> EtcdClient:
        tls = self.tls_files()
        if tls is None:
            raise ClusterError(
                f"no admin certificate under {self.pki_dir}: run etcdsop create, or "
                + self.pki_hint()
            )
        urls = list(endpoints or [m.client_url for m in self.inventory.members])
        return EtcdClient(
            urls,
            tls,
            user="root",
            password=self.inventory.root_password,
            timeout=timeout or self.request_timeout,
        )

    def voter_client(self, view: ClusterView | None = None) -> EtcdClient:
        """A client aimed at the started voters only: learners refuse cluster calls and
        an inventory host that is no member may answer nothing, or for another cluster."""
        view = view if view is not None else self.probe()
        endpoints = view.voter_endpoints()
        if not endpoints:
            raise ClusterError(
                f"no started voter of cluster {self.inventory.cluster!r} answers, or none "
                "gives the member list (etcd 3.4.42+/3.5.28+/3.6.9+ does only after a login, "
                "and a login needs a quorum): etcdsop status shows what each member says"
            )
        return self.client(endpoints)

    def probe(self, *, tls_refusals: bool = False) -> ClusterView:
        """Ask every inventory member for the member list; group answers by cluster id.

        A host whose client port refuses this admin node's certificates raises
        GuardRefused, unless tls_refusals: then they are in the view for the caller.
        """
        if self.tls_files() is None:
            return ClusterView()
        base = self.client(timeout=3.0)
        answers: dict[str, tuple[int, list[MemberInfo]]] = {}
        tls_refused: dict[str, str] = {}

        def ask(member: Member) -> None:
            client = base.for_endpoints([member.client_url])
            try:
                try:
                    answers[member.ip] = client.member_list_with_cluster(anonymous=True)
                    return
                except EtcdApiError as exc:
                    if not any(t in exc.etcd_message for t in _AUTH_NEEDED):
                        raise
                answers[member.ip] = client.member_list_with_cluster()
            except EtcdTlsError as exc:
                tls_refused[member.ip] = exc.message
            except (EtcdUnreachable, EtcdOutcomeUnknown):
                pass
            except EtcdApiError as exc:
                if "authentication failed" in exc.etcd_message:
                    raise ClusterError(
                        f"{member.ip}: etcd refused the root password from the inventory "
                        "(etcd_root_password): it differs from the live one"
                    ) from exc
                # A learner serves no member list; auth errors were handled above.
                if not any(t in exc.etcd_message for t in _NO_LIST_ERRORS):
                    raise

        results = self.parallel(self.inventory.members, ask)
        for value in results.values():
            if isinstance(value, ClusterError):
                raise value
        refused = tuple(sorted(tls_refused.items()))
        if refused and not tls_refusals:
            raise self.tls_refusal(refused)
        if not answers:
            return ClusterView(tls_refused=refused)
        inventory_peers = {m.peer_url for m in self.inventory.members}

        def weight(cluster_id: int) -> int:
            # The cluster that knows the most inventory members is ours.
            members = next(ms for cid, ms in answers.values() if cid == cluster_id)
            return sum(1 for m in members for u in m.peer_urls if u in inventory_peers)

        best = max({cid for cid, _ in answers.values()}, key=weight)
        members = _most_told([ms for cid, ms in answers.values() if cid == best])
        return ClusterView(
            cluster_id=best,
            members=tuple(members),
            answered=frozenset(ip for ip, (cid, _) in answers.items() if cid == best),
            foreign=frozenset(ip for ip, (cid, _) in answers.items() if cid != best),
            tls_refused=refused,
        )

    def tls_refusal(self, refused: Sequence[tuple[str, str]]) -> GuardRefused:
        # Something serves TLS there that our CA and certificate do not fit: never
        # "no cluster" (that would let create issue a new CA, destroy skip its backup).
        ip, why = refused[0]
        return GuardRefused(
            f"host {ip}: etcd's client port refuses this admin node's certificates "
            f"({why}): the cluster was set up with another CA: {self.pki_hint()}"
        )

    def wait_healthy(
        self,
        members: Sequence[Member],
        *,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Bounded poll of etcd's /health on each member (a leader is known)."""
        if not members:
            return
        client = self.client()
        deadline = time.monotonic() + (timeout or self.options.wait_timeout)
        pending = list(members)
        while pending:
            pending = [m for m in pending if not client.health(m.client_url)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise self.unhealthy_error(pending, timeout or self.options.wait_timeout)
            sleep(0.2)

    def unhealthy_error(self, members: Sequence[Member], waited: float) -> ClusterError:
        names = ", ".join(f"{m.name} ({m.ip})" for m in members)
        details = []
        for member in members:
            try:
                journal = self.host(member).journal_tail("etcd", 15)
            except ClusterError as exc:
                journal = f"(journal unavailable: {exc.message})"
            details.append(f"--- {member.ip} journalctl -u etcd ---\n{journal}")
        return ClusterError(
            f"etcd not healthy after {waited:.0f}s on: {names}", details="\n".join(details)
        )


def leader_id(client: EtcdClient, urls: Iterable[str]) -> int:
    """The leader the first member that answers names (asked of each in turn)."""
    for url in urls:
        try:
            leader = client.status(url).leader
        except ClusterError:
            continue
        if leader:
            return leader
    raise ClusterError("no member names a leader: the cluster has no quorum now")


def _most_told(lists: Sequence[list[MemberInfo]]) -> list[MemberInfo]:
    """The member list most members give. etcd 3.4 serves it from each member's own
    state: one cut off from its peers, or back a moment ago, still lists a member the
    others removed (or lacks one they added); the majority has the committed list."""

    def shape(members: list[MemberInfo]) -> frozenset[tuple[int, bool]]:
        return frozenset((m.id, m.is_learner) for m in members)

    counts = Counter(shape(ms) for ms in lists)
    top = max(counts.values())
    return next(ms for ms in lists if counts[shape(ms)] == top)
