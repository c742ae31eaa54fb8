"""`etcdsop upgrade`: a rolling minor upgrade through the hosts' package manager.

Before any host changes: every member in the inventory, started, every voter healthy,
no alarm, the package version available on every host, a verified snapshot. Then one
member at a time, learners and followers first, the leader last (its leadership handed
to an upgraded member first): install without letting the package restart etcd,
restart, wait until it serves the new version, healthy, caught up with the leader.
Members already on the target are skipped, so the same command continues a run that
stopped; it stops at the first failure with the cluster on a mixed version, which
etcd serves during a rolling upgrade.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from etcdsop.errors import ClusterError, GuardRefused, MemberError
from etcdsop.etcd import (
    EndpointStatus,
    EtcdApiError,
    EtcdClient,
    EtcdOutcomeUnknown,
    MemberInfo,
)
from etcdsop.model import Member, PgCluster
from etcdsop.ops import packages
from etcdsop.ops.common import ClusterView, Context, leader_id
from etcdsop.quorum import check_restart
from etcdsop.remote import run_parallel
from etcdsop.versions import (
    PATRONI_AUTH_READY,
    Candidate,
    Target,
    Version,
    auth_gated,
    check_before_36,
    check_not_older,
    choose_target,
    cluster_reached,
    next_member,
    parse_target,
    patroni_refusal,
    pick_package_version,
    planned_order,
)
from etcdsop.waits import poll_until


@dataclass
class MemberUpgrade:
    name: str
    ip: str
    from_version: str
    to_version: str
    skipped: bool = False  # already on the target when the run began
    done: bool = False
    role: str = ""  # follower, leader, learner: when it was upgraded
    install_seconds: float = 0.0  # the package install (all hosts at once)
    seconds: float = 0.0  # restart until healthy and caught up
    notes: list[str] = field(default_factory=list)


@dataclass
class UpgradeResult:
    cluster: str
    cluster_version_before: str
    target: str = ""  # the etcd version, "3.5.30"
    package_version: str = ""  # the package manager's, "3.5.30-2"
    packages: list[str] = field(default_factory=list)
    snapshot: str | None = None
    cluster_version_after: str = ""
    leader_before: str = ""
    leader_after: str = ""
    members: list[MemberUpgrade] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # the plan: followers first, leader last
    warnings: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[MemberUpgrade]:
        return [m for m in self.members if not m.skipped and not m.done]

    @property
    def next_steps(self) -> list[str]:
        return []

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Upgrade:
    """One run: prepare() checks everything and returns the plan, apply() carries it out."""

    client: EtcdClient  # the voters', once prepare() found them

    def __init__(self, ctx: Context, *, to: str | None) -> None:
        self.ctx = ctx
        self.asked: Target | None = parse_target(to) if to else None  # exit 1 before any host
        self.view = ClusterView()
        self.result = UpgradeResult(ctx.inventory.cluster, "")
        self.target = Version(0, 0, 0)
        self.live: dict[str, MemberInfo] = {}  # inventory member ip -> live entry
        self.members: list[Member] = []
        self.facts: dict[str, packages.PackageFacts] = {}

    # -- before any change ---------------------------------------------------------
    def prepare(self) -> UpgradeResult:
        ctx, inventory = self.ctx, self.ctx.inventory
        ctx.report.phase(f"check cluster {inventory.cluster} for an upgrade")
        self.view = ctx.probe()
        if not self.view.live:
            raise ClusterError(
                f"no member of cluster {inventory.cluster!r} answers: nothing to upgrade"
            )
        self.client = ctx.voter_client(self.view)
        self._match_inventory()
        statuses = self._check_health()
        alarms = self.client.alarms()
        if alarms:
            names = ", ".join(f"{a.alarm} on {a.hex_id}" for a in alarms)
            raise GuardRefused(
                f"refusing to upgrade: alarm(s) {names}: clear them first (etcdsop defrag "
                "for NOSPACE; etcdsop check says more)"
            )
        cluster = self._cluster_version()
        line = choose_target(self.asked, cluster)
        running = {m.name: _parse(statuses[m.ip].version, m) for m in self.members}
        if line.exact is not None:
            check_not_older(line.exact, running)  # a downgrade is bad input, said at once
        self._gather_hosts()
        available = {m.ip: self.facts[m.ip].installable() for m in self.members}
        package_version = pick_package_version(line, available)
        target = Version.parse(package_version)
        assert target is not None  # pick_package_version picked a parsable one
        self.target = target
        check_not_older(target, running)
        self.result.warnings = check_before_36(target, running)
        if target.line == (3, 6):
            self._check_for_36()
        if auth_gated(target) and not all(auth_gated(v) for v in running.values()):
            self._check_patroni(target)
        self._check_installs(
            package_version, [m for m in self.members if running[m.name] != target]
        )
        self.result.target = str(target)
        self.result.package_version = package_version
        self.result.packages = sorted({p for f in self.facts.values() for p in f.packages})
        leader = self._leader_id()
        self.result.leader_before = self._name(leader)
        for member in self.members:
            status = statuses[member.ip]
            self.result.members.append(
                MemberUpgrade(
                    member.name,
                    member.ip,
                    status.version,
                    str(target),
                    skipped=running[member.name] == target,
                )
            )
        todo = [m for m, e in zip(self.members, self.result.members, strict=True) if not e.skipped]
        self._check_quorum(todo)
        candidates = [self._candidate(m) for m in todo]
        self.result.order = [c.name for c in planned_order(candidates, leader)]
        for line_ in self.result.warnings:
            ctx.report.warn(line_)
        return self.result

    def _check_quorum(self, todo: list[Member]) -> None:
        """The rolling restart's rule (quorum.check_restart), before anything changes:
        every member is healthy here, so a restart keeps the quorum only from 3 voters on;
        a 1- or 2-voter cluster would lose it at each restart."""
        live = list(self.view.members)
        healthy = {m.id for m in live}  # _check_health passed
        for member in todo:
            allowed, arithmetic = check_restart(live, healthy, self.live[member.ip].id)
            if not allowed:
                raise GuardRefused(
                    f"refusing to upgrade: restarting {member.name} ({member.ip}) would cost "
                    f"the quorum ({arithmetic}); nothing was changed. Grow the cluster first "
                    "(etcdsop add IP), upgrade, then etcdsop rm IP"
                )

    def _match_inventory(self) -> None:
        """Every live member is an inventory host (the only hosts etcdsop reaches), and
        started: an announced member that never started would join on the old version."""
        inventory = self.ctx.inventory
        for info in self.view.members:
            member = next((m for m in inventory.members if m.peer_url in info.peer_urls), None)
            where = info.name or info.peer_urls[0]
            if member is None:
                raise GuardRefused(
                    f"refusing to upgrade: member {where} ({', '.join(info.peer_urls)}) is not "
                    "in the inventory's etcd group, so etcdsop cannot reach its host: add it to "
                    "the inventory, or remove the member first"
                )
            if not info.started:
                raise GuardRefused(
                    f"refusing to upgrade: member {info.peer_urls[0]} ({member.ip}) was added "
                    f"but never started: start it (etcdsop create -l {member.ip} -e "
                    f"etcd_init=existing) or remove it (etcdsop rm {member.ip}) first"
                )
            self.live[member.ip] = info
            self.members.append(member)
        # The inventory's order (etcd-1, etcd-2...) for the followers, as operators read it.
        self.members.sort(key=lambda m: inventory.members.index(m))
        for member in inventory.members:
            if member.ip not in self.live:
                self.ctx.report.info(f"{member.ip} ({member.name}) is not a member: not upgraded")

    def _check_health(self, done: list[str] | None = None) -> dict[str, EndpointStatus]:
        """Every member answers its status and every voter /health (a leader), else
        refused (exit 3): a member restarting must never cost the quorum."""
        statuses: dict[str, EndpointStatus] = {}
        sick: list[str] = []

        def ask(member: Member) -> EndpointStatus:
            return self.client.status(member.client_url)

        answers = self.ctx.parallel(self.members, ask)
        for member in self.members:
            answer = answers[member.ip]
            learner = self.live[member.ip].is_learner
            if isinstance(answer, EndpointStatus) and (
                learner or self.client.health(member.client_url)
            ):
                statuses[member.ip] = answer
            else:
                why = answer.message if isinstance(answer, ClusterError) else "no leader"
                sick.append(f"{member.name} ({member.ip}: {why})")
        if sick:
            so_far = f"; upgraded so far: {', '.join(done)}" if done else ""
            raise GuardRefused(
                f"refusing to upgrade: member(s) not healthy: {'; '.join(sick)} (every "
                f"member must be healthy before one is restarted){so_far}"
            )
        return statuses

    def _cluster_version(self) -> Version:
        for member in self.members:
            try:
                _, cluster = self.client.versions(member.client_url)
            except ClusterError:
                continue
            found = Version.parse(cluster)
            if found is not None:
                self.result.cluster_version_before = cluster
                return found
        raise ClusterError(
            "no member says the cluster version yet (GET /version: not_decided): "
            "wait a few seconds and run etcdsop upgrade again"
        )

    def _gather_hosts(self) -> None:
        self.ctx.connect(self.members)
        self.ctx.report.phase("gather the etcd packages on every host")
        answers = self.ctx.parallel(self.members, lambda m: packages.gather(self.ctx.host(m)))
        for member in self.members:
            answer = answers[member.ip]
            if isinstance(answer, ClusterError):
                raise answer
            assert isinstance(answer, packages.PackageFacts)
            refusal = answer.refusal()
            if refusal:
                raise GuardRefused(f"refusing to upgrade: {refusal}; nothing was changed")
            self.facts[member.ip] = answer
            installed = ", ".join(f"{p} {v}" for p, v in sorted(answer.installed.items()))
            self.ctx.report.host(member.ip, installed or "no etcd package")

    def _check_installs(self, version: str, members: list[Member]) -> None:
        """apt would change nothing but etcd's packages on the hosts still to go: a
        removal, or another package upgraded while service restarts are forbidden, is
        refused before any change (apt's simulation, no lock)."""

        def ask(member: Member) -> str | None:
            facts = self.facts[member.ip]
            return packages.install_refusal(self.ctx.host(member), facts.packages, version)

        answers = self.ctx.parallel(members, ask)
        for member in members:
            answer = answers[member.ip]
            if isinstance(answer, ClusterError):
                raise answer
            if answer:
                raise GuardRefused(f"refusing to upgrade: {answer}")

    def _check_for_36(self) -> None:
        """3.6 has no v2 API: no enable-v2 (or renamed experimental flag) in etcd.conf,
        and no custom data in the v2 store where etcdutl can tell."""
        for member in self.members:
            facts = self.facts[member.ip]
            if facts.conf_lines:
                raise GuardRefused(
                    f"refusing to upgrade to 3.6: {member.ip}: /etc/etcd/etcd.conf carries "
                    f"{facts.conf_lines[0]!r}, which 3.6 does not know: run etcdsop reload -t "
                    "etcd --restart (etcdsop's etcd.conf has none) and run etcdsop upgrade again"
                )
            if facts.etcdutl:
                refusal = packages.v2store_refusal(self.ctx.host(member), member.data_dir)
                if refusal:
                    raise GuardRefused(f"refusing to upgrade to 3.6: {refusal}")

    def _check_patroni(self, target: Version) -> None:
        """The inventory's Patroni must authenticate where the target etcd asks it to."""
        hosts = [(c, h) for c in self.ctx.inventory.pg_clusters for h in c.hosts]
        if not hosts:
            return
        self.ctx.report.phase(f"check Patroni on {len(hosts)} PostgreSQL host(s)")

        def ask(item: tuple[PgCluster, str]) -> Version | None:
            cluster, name = item
            return packages.patroni_version(self.ctx.remote(name, cluster.ssh[name]))

        answers = run_parallel(hosts, ask, forks=self.ctx.options.forks, key=lambda i: i[1])
        found: dict[str, Version] = {}
        for cluster, name in hosts:
            answer = answers[name]
            if isinstance(answer, ClusterError):
                raise GuardRefused(
                    f"refusing to upgrade to {target}: cannot ask {name} ({cluster.name}) "
                    f"which Patroni it runs ({answer.message}); etcd {target} needs Patroni "
                    f"{PATRONI_AUTH_READY} or later: bring the host back, or remove it from "
                    "the inventory if it is gone"
                )
            if isinstance(answer, Version):
                found[f"{name} ({cluster.name})"] = answer
                self.ctx.report.host(name, f"Patroni {answer}")
        refusal = patroni_refusal(target, found)
        if refusal:
            raise GuardRefused(refusal)

    # -- the leader ----------------------------------------------------------------
    def _leader_id(self) -> int:
        return leader_id(self.client, [m.client_url for m in self.members])

    def _name(self, member_id: int) -> str:
        found = next((m for m in self.view.members if m.id == member_id), None)
        return found.name if found is not None and found.name else f"{member_id:x}"

    def _candidate(self, member: Member) -> Candidate:
        info = self.live[member.ip]
        return Candidate(info.id, member.name, info.is_learner)

    def _by_id(self, member_id: int) -> Member | None:
        return next((m for m in self.members if self.live[m.ip].id == member_id), None)

    def _move_leader(self, leader: Member) -> None:
        """Hand the leadership to the upgraded voter furthest ahead, and wait until it
        leads: the leader's restart then costs no election at all."""
        leader_id = self.live[leader.ip].id
        ready: list[tuple[int, Member]] = []
        for member in self.members:
            info = self.live[member.ip]
            if info.id == leader_id or info.is_learner:
                continue
            try:
                status = self.client.status(member.client_url)
            except ClusterError:
                continue
            if status.version == str(self.target) and self.client.health(member.client_url):
                ready.append((status.raft_index, member))
        if not ready:
            self.ctx.report.warn(
                f"no upgraded voter to hand the leadership to: {leader.name} restarts as the "
                "leader (writes wait for the next election)"
            )
            return
        successor = max(ready, key=lambda r: r[0])[1]
        successor_id = self.live[successor.ip].id
        self.ctx.report.host(
            leader.ip, f"moving the leadership from {leader.name} to {successor.name}", "start"
        )
        try:
            self.client.move_leader(successor_id, leader_endpoint=leader.client_url)
        except (EtcdOutcomeUnknown, EtcdApiError) as exc:
            # Sent or refused (no longer the leader): what counts is who leads now.
            self.ctx.report.info(f"move-leader: {exc.message}; asking who leads")
        wait = self.ctx.options.wait_timeout

        def moved() -> bool | None:
            try:
                return self._leader_id() != leader_id or None
            except ClusterError:
                return None

        if poll_until(moved, timeout=wait) is None:
            raise ClusterError(f"{leader.name} still leads {wait:.0f}s after the move-leader")
        self.ctx.report.host(leader.ip, f"{self._name(self._leader_id())} leads now", "changed")

    # -- the changes ---------------------------------------------------------------
    def apply(self) -> UpgradeResult:
        ctx, result = self.ctx, self.result
        self._restore_guards()
        if result.todo:
            self._wait_dpkg([m for m in self.members if m.ip in {e.ip for e in result.todo}])
            backup_result = _backup(ctx)
            result.snapshot = backup_result
            ctx.report.info(f"snapshot before the upgrade: {backup_result}")
            self._install_all()
            ctx.report.phase(
                f"restart {len(result.todo)} member(s) on {result.target}, one at a time, "
                "leader last"
            )
        done: list[str] = []
        while result.todo:
            entries = {e.ip: e for e in result.todo}
            pending = [m for m in self.members if m.ip in entries]
            current: Member | None = None
            try:
                # Before every restart, the first too: the install may have taken
                # minutes (apt's lock), long enough for another member to go down.
                self._check_health(done)
                leader = self._leader_id()
                chosen = next_member([self._candidate(m) for m in pending], leader)
                assert chosen is not None
                current = next(m for m in pending if self.live[m.ip].id == chosen.id)
                entry = entries[current.ip]
                entry.role = (
                    "leader" if chosen.id == leader else "learner" if chosen.learner else "follower"
                )
                if chosen.id == leader and len(self.members) > 1:
                    self._move_leader(current)
                self._upgrade_one(current, entry)
            except ClusterError as exc:
                raise self._stopped(current, exc) from exc
            done.append(current.name)
        for entry in result.members:
            if entry.skipped:
                ctx.report.info(
                    f"{entry.name} ({entry.ip}) runs {entry.to_version} already: skipped"
                )
        result.cluster_version_after = self._wait_cluster_version()
        result.leader_after = self._name(self._leader_id())
        return result

    def _restore_guards(self) -> None:
        """An install that was killed (its shell, or the host) left our policy-rc.d,
        which keeps every package from (re)starting any service: put back what was
        there, also on a host whose member runs the target already."""
        left = [m for m in self.members if self.facts[m.ip].guard_left]
        self._wait_dpkg(left)
        for member in left:
            kept = packages.restore_guard(self.ctx.host(member))
            if kept:  # a dpkg started since the wait
                raise GuardRefused(
                    f"refusing to upgrade: host {member.ip}: {kept}; no package was installed, "
                    "no member restarted: run the same command again once it ends"
                )
            self.ctx.report.host(
                member.ip, "put back /usr/sbin/policy-rc.d as before an interrupted run", "changed"
            )

    def _wait_dpkg(self, members: list[Member]) -> None:
        """No dpkg or apt runs on these hosts (one an earlier, killed run started goes
        on), waited for up to --timeout: removing our policy-rc.d under it would let its
        maintainer scripts restart etcd everywhere, and our install would wait on it."""
        wait = self.ctx.options.wait_timeout
        running = self.ctx.parallel(members, lambda m: packages.wait_dpkg_idle(self.ctx.host(m), 0))
        busy = [m for m in members if running[m.ip] is not None]
        for member in busy:
            held = running[member.ip]
            if isinstance(held, ClusterError):
                raise held
            self.ctx.report.host(member.ip, f"{held}: waiting up to {wait:.0f}s", "info")
        answers = self.ctx.parallel(busy, lambda m: packages.wait_dpkg_idle(self.ctx.host(m), wait))
        for member in busy:
            answer = answers[member.ip]
            if isinstance(answer, ClusterError):
                raise answer
            if answer:
                guard = (
                    " (etcdsop's /usr/sbin/policy-rc.d stays, no service restarts there)"
                    if self.facts[member.ip].guard_left
                    else ""
                )
                raise GuardRefused(
                    f"refusing to upgrade: host {member.ip}: {answer} after {wait:.0f}s: "
                    f"a dpkg/apt still runs there{guard}; let it finish (an earlier etcdsop "
                    "upgrade killed mid-install leaves it running) and run the same command "
                    "again; no package was installed, no member restarted"
                )

    def _install_all(self) -> None:
        """The packages on every host still to go, at once: nothing restarts etcd (the
        package is kept from it), which runs its current binary until our restart."""
        todo = {e.ip: e for e in self.result.todo}
        members = [m for m in self.members if m.ip in todo]
        version = self.result.package_version
        names = ", ".join(f"{p}={version}" for p in self.result.packages)
        self.ctx.report.phase(f"install {names} on {len(members)} host(s) at once")

        def install(member: Member) -> list[str]:
            started = time.monotonic()
            facts = self.facts[member.ip]
            notes = packages.install(self.ctx.host(member), facts.packages, version)
            todo[member.ip].install_seconds = round(time.monotonic() - started, 2)
            return notes

        answers = self.ctx.parallel(members, install)
        failed = [(m, a) for m in members if isinstance(a := answers[m.ip], ClusterError)]
        for member in members:
            answer = answers[member.ip]
            if isinstance(answer, list):
                todo[member.ip].notes += answer
                for note in answer:
                    self.ctx.report.warn(f"{member.ip}: {note}")
                self.ctx.report.host(
                    member.ip,
                    f"installed, etcd still runs {todo[member.ip].from_version}",
                    "changed",
                )
        if failed:
            member, exc = failed[0]
            installed = [m.name for m in members if not isinstance(answers[m.ip], ClusterError)]
            raise MemberError(
                f"upgrade stopped before any restart: {exc.message}"
                + (f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else "")
                + f"; no member was restarted: every one runs the version it ran; the new "
                f"package is on {', '.join(installed) or 'none'} (etcd runs it once "
                f"restarted); fix the cause and run the same command again (etcdsop upgrade "
                f"--to {self.result.target})",
                details="\n".join(f"--- {m.ip} ---\n{e.details or e.message}" for m, e in failed),
            )

    def _upgrade_one(self, member: Member, entry: MemberUpgrade) -> None:
        host = self.ctx.host(member)
        started = time.monotonic()
        self.ctx.report.host(member.ip, f"{member.name}: restarting etcd", "start")
        wait = self.ctx.options.wait_timeout
        # Blocking: with Type=notify systemctl returns once the new binary serves.
        try:
            host.run(["systemctl", "restart", "etcd"], timeout=wait + 30)
        except ClusterError as exc:
            raise self.ctx.unhealthy_error([member], wait) from exc
        self._wait_upgraded(member)
        entry.done = True
        entry.seconds = round(time.monotonic() - started, 2)
        self.ctx.report.host(
            member.ip,
            f"{member.name}: {entry.from_version} -> {entry.to_version} in {entry.seconds:.1f}s, "
            "healthy, caught up",
            "changed",
        )

    def _wait_upgraded(self, member: Member) -> None:
        """Serving the target version with a leader, then its raft index at least the
        leader's at that moment (the entries it missed while down are applied)."""
        wait = self.ctx.options.wait_timeout
        url = member.client_url
        deadline = time.monotonic() + wait

        def serving() -> EndpointStatus | None:
            try:
                status = self.client.status(url)
            except ClusterError:
                return None
            if status.version != str(self.target) or not self.client.health(url):
                return None
            return status

        status = poll_until(serving, timeout=wait)
        if status is None:
            raise self.ctx.unhealthy_error([member], wait)
        leader = self._by_id(status.leader)
        goal = self.client.status(leader.client_url).raft_index if leader else status.raft_index

        def caught_up() -> bool | None:
            try:
                return self.client.status(url).raft_index >= goal or None
            except ClusterError:
                return None

        if poll_until(caught_up, timeout=max(deadline - time.monotonic(), 1.0)) is None:
            raise ClusterError(f"{member.name} did not catch up with the leader's index {goal}")

    def _wait_cluster_version(self) -> str:
        """etcd's leader raises the cluster version once every member runs the new minor
        (it checks every few seconds)."""
        wait = self.ctx.options.wait_timeout
        self.ctx.report.phase(f"wait for the cluster version {self.target.line_text}")

        def reached() -> str | None:
            for member in self.members:
                try:
                    _, cluster = self.client.versions(member.client_url)
                except ClusterError:
                    continue
                return cluster if cluster_reached(cluster, self.target) else None
            return None

        found = poll_until(reached, timeout=wait, interval=1.0)
        if found is None:
            raise ClusterError(
                f"every member runs {self.target} but the cluster version did not reach "
                f"{self.target.line_text} in {wait:.0f}s: see etcdsop status in a minute; "
                "the leader's journal says why (journalctl -u etcd)"
            )
        self.ctx.report.info(f"cluster version {found}")
        return found

    def _stopped(self, member: Member | None, exc: ClusterError) -> MemberError:
        """Where the run stopped, what runs which version, the health, how to go on."""
        done = [e.name for e in self.result.members if e.done or e.skipped]
        left = [e.name for e in self.result.members if not (e.done or e.skipped)]
        down = [m for m in self.members if not self.client.health(m.client_url)]
        voters = [m for m in self.members if not self.live[m.ip].is_learner]
        up = sum(1 for m in voters if m not in down)
        if not down:
            health = (
                "the cluster is healthy on a mixed version (etcd serves one during a "
                "rolling upgrade)"
            )
        else:
            quorum = "keeps its quorum" if up >= len(voters) // 2 + 1 else "has NO quorum"
            health = (
                f"not healthy now: {', '.join(m.name for m in down)}; the cluster {quorum} "
                f"({up} of {len(voters)} voters healthy)"
            )
        start = (
            f", start etcd on {member.name} again (systemctl start etcd on {member.ip})"
            if member is not None and member in down
            else ""
        )
        where = f" at {member.name} ({member.ip})" if member else ""
        target = self.result.target
        return MemberError(
            f"upgrade stopped{where}: {exc.message}; on {target}: {', '.join(done) or 'none'}; "
            f"not yet: {', '.join(left) or 'none'}; {health}; fix the cause{start} and run the "
            f"same command again (etcdsop upgrade --to {target}): members on {target} are "
            "skipped",
            details=exc.details,
        )


def _parse(text: str, member: Member) -> Version:
    version = Version.parse(text)
    if version is None:
        raise ClusterError(f"{member.name} ({member.ip}) reports no etcd version ({text!r})")
    return version


def _backup(ctx: Context) -> str:
    from etcdsop.ops.backup import backup

    return backup(ctx).path


def upgrade(ctx: Context, *, to: str | None) -> UpgradeResult:
    run = Upgrade(ctx, to=to)
    run.prepare()
    return run.apply()
