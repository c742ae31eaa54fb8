"""`etcdsop reload`: point every etcd client at the live membership (the SOP's 重载配置).

Targets: etcd (etcd.conf + the root password), etcdctl (etcdctl.sh) on the members
(ops/memberfiles.py); patroni and vip on the PostgreSQL hosts (clients/reload.py;
Patroni restarts under maintenance mode in clients/restart.py). Endpoints are the live
VOTERS (learners serve no clients), cross-checked with the inventory (ops/voters.py).
Only files whose content differs are written, each after a backup beside it
(ops/filebackup.py); a failed host never stops the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.clients.jobs import plan_jobs
from etcdsop.clients.password import guard as guard_password_changes
from etcdsop.clients.reload import reload_pg_hosts
from etcdsop.clients.restart import PauseMarks, restart_clusters
from etcdsop.errors import ClusterError, InputError
from etcdsop.etcd import EtcdClient
from etcdsop.events import Status as ReportStatus
from etcdsop.ops import rbac
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.filebackup import run_stamp
from etcdsop.ops.memberfiles import MemberFacts, reload_members
from etcdsop.ops.outcomes import ReloadResult, Status
from etcdsop.ops.restart import leader_last, rolling_restart
from etcdsop.ops.voters import cross_check, live_password, live_root, root_client, voter_urls
from etcdsop.render import ETCD_CONF

TARGETS = ("etcd", "etcdctl", "patroni", "vip")


def parse_targets(values: Sequence[str]) -> tuple[str, ...]:
    """`--target etcd --target patroni,vip` or `all`; canonical order, no duplicates."""
    wanted: set[str] = set()
    for value in values:
        for word in (w.strip().lower() for w in value.split(",")):
            if word == "all":
                wanted.update(TARGETS)
            elif word in TARGETS:
                wanted.add(word)
            elif word:
                raise InputError(
                    f"unknown reload target {word!r}: choose from {', '.join(TARGETS)} or all"
                )
    if not wanted:
        raise InputError(f"no reload target: choose from {', '.join(TARGETS)} or all")
    return tuple(t for t in TARGETS if t in wanted)


# -- rolling restart ------------------------------------------------------------------
def restart_members(
    ctx: Context, view: ClusterView, facts: dict[str, MemberFacts], result: ReloadResult
) -> None:
    """Members running an older etcd.conf, one at a time, the leader last, quorum-guarded."""
    changed_conf = {o.host for o in result.outcomes if o.target == "etcd" and ETCD_CONF in o.files}
    stale = [
        m
        for m in ctx.inventory.members
        if m.ip in facts and (m.ip in changed_conf or facts[m.ip].stale)
    ]
    if not stale:
        ctx.report.info("restart: every member already runs its current etcd.conf")
        return
    for member in leader_last(ctx, stale):
        rolling_restart(ctx, member, result.restarted)
        result.restarted.append(member.ip)


# -- the command ----------------------------------------------------------------------
def reload(ctx: Context, targets: Sequence[str], *, restart: bool = False) -> ReloadResult:
    inventory, report = ctx.inventory, ctx.report
    result = ReloadResult(tuple(targets), ctx.options.dry_run)
    pg = "patroni" in targets or "vip" in targets
    accounts = rbac.accounts(inventory) if pg else []
    jobs = plan_jobs(inventory, targets) if pg else []
    if restart and "etcd" not in targets:
        raise InputError("--restart restarts etcd members: it needs --target etcd (or all)")

    plans: list[tuple[rbac.PgAccount, list[rbac.Action]]] = []

    def check(root: EtcdClient) -> None:
        """Before any change: a password change no client of its cluster would miss."""
        if pg:
            plans[:] = rbac.plan(root, accounts)
            guard_password_changes(inventory, rbac.password_changes(plans), targets)

    report.phase("live membership")
    if ctx.pki.ca_cert_path.exists() and (warning := ctx.pki.ca_warning()):
        report.warn(warning)
    view = live_root(ctx, result, rotate="etcd" in targets, check=check)
    if not view.live:
        raise ClusterError(
            f"no member of cluster {inventory.cluster!r} answers: nothing to point clients at"
        )
    urls = voter_urls(view)
    if not urls:
        raise ClusterError("the live cluster has no started voter: nothing to point clients at")
    result.endpoints = urls
    report.info(f"voters: {', '.join(urls)}")
    result.notes = cross_check(inventory, view)
    for note in result.notes:
        report.warn(note)

    stamp = run_stamp()
    facts: dict[str, MemberFacts] = {}
    if "etcd" in targets or "etcdctl" in targets:
        report.phase("etcd members")
        facts = reload_members(ctx, view, targets, urls, result, stamp)
        _report(ctx, result, ("etcd", "etcdctl"))
    if pg:
        report.phase("etcd users of the PostgreSQL clusters")
        root = ctx.voter_client(view)
        if result.root_password == "would change":  # dry run: the old one still rules
            root = root_client(ctx, live_password(ctx))
        later: list[rbac.PasswordChange] = []
        result.rbac = rbac.sync(
            root, accounts, report, dry_run=ctx.options.dry_run, deferred=later, plans=plans
        )
        report.phase("Patroni and vip-manager")

        def change(item: rbac.PasswordChange) -> None:
            rbac.apply(root, *item)

        pending = reload_pg_hosts(
            ctx, jobs, accounts, urls, result, stamp, passwords=later, change_password=change
        )
        _report(ctx, result, ("patroni", "vip"))
        # After the new passwords: a restarted Patroni (and the patronictl that pauses
        # its cluster) authenticates with what its file now says.
        # A cluster an interrupted run left paused is ended here too (see clients/restart.py).
        marks = PauseMarks(root)
        if pending.restarts or any(marks.get(c) for c in {n.cluster for n in pending.nodes}):
            report.phase("Patroni restarts under maintenance mode (etcd3 hosts changed)")
            restart_clusters(ctx, pending.nodes, result, marks)
    if restart and not ctx.options.dry_run:
        report.phase("rolling restart")
        restart_members(ctx, view, facts, result)
    return result


_MARK: dict[Status, ReportStatus] = {
    "unchanged": "ok",
    "changed": "changed",
    "failed": "failed",
    "skipped": "skipped",
}


def _report(ctx: Context, result: ReloadResult, targets: Sequence[str]) -> None:
    for o in result.outcomes:
        if o.target in targets:
            ctx.report.host(o.host, f"{o.target}: {o.message}", _MARK[o.status])
            if ctx.options.dry_run and o.diff:
                ctx.report.info(o.diff.rstrip())
