"""`etcdsop create`: converge members to the inventory (what Pigsty's etcd.yml does).

Stages: validate -> connect -> gather -> guard -> plan -> (dry-run stops) -> apply
-> launch -> RBAC, composed from ops/stages.py, ops/launch.py, ops/join.py (members
that join a live cluster) and ops/register.py. Planning is pure (plan.py); only
apply/launch touch hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.inventory import select
from etcdsop.model import DEFAULT_ROOT_PASSWORD, Member
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.destroying import clear_record
from etcdsop.ops.join import join_member
from etcdsop.ops.launch import launch
from etcdsop.ops.register import register
from etcdsop.ops.restart import check_planned_restarts
from etcdsop.ops.stages import (
    apply_plans,
    check_guards,
    check_pki,
    ensure_root_auth,
    gather_facts,
    issue_certificates,
    plan_member,
    report_plans,
)
from etcdsop.plan import HostPlan, find_live


@dataclass
class CreateResult:
    cluster: str
    dry_run: bool
    plans: list[HostPlan] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    auth: str = "unchanged"  # "enabled" | "would enable" | "unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "dry_run": self.dry_run,
            "hosts": [
                {
                    "ip": p.member.ip,
                    "name": p.member.name,
                    "install_package": p.install_package,
                    "files": [{"path": c.path, "change": c.kind} for c in p.changes],
                    "dirs": [d.path for d in p.dirs],
                    "service": p.service,
                    "reasons": list(p.reasons),
                }
                for p in self.plans
            ],
            "started": self.started,
            "restarted": self.restarted,
            "joined": self.joined,
            "certificates": self.certificates,
            "auth": self.auth,
        }


def create(ctx: Context, *, promote_timeout: float = 300.0) -> CreateResult:
    inventory, options = ctx.inventory, ctx.options
    targets = select(inventory, options.limit or None)
    report = ctx.report
    if inventory.root_password == DEFAULT_ROOT_PASSWORD:
        report.warn("etcd_root_password is the default 'Etcd.Root': set your own in the inventory")
    result = CreateResult(cluster=inventory.cluster, dry_run=options.dry_run)

    ctx.connect(targets)
    report.phase("gather facts")
    facts = gather_facts(ctx, targets)
    view = ctx.probe(tls_refusals=True)
    check_guards(targets, facts, view)  # another cluster's host: named as such first
    check_pki(ctx, targets, facts)
    if view.tls_refused:
        raise ctx.tls_refusal(view.tls_refused)
    joiners = _joiners(targets, view)

    report.phase("certificates")
    certs = issue_certificates(ctx, targets, result.certificates)
    plans = [plan_member(ctx, m, targets, facts[m.ip], view, certs) for m in targets]
    result.plans = plans
    report_plans(ctx, plans)
    check_planned_restarts(ctx, plans, view)
    if options.dry_run:
        live_auth = view.live and ctx.voter_client(view).auth_enabled()
        result.auth = "already enabled" if live_auth else "would enable"
        report.info(f"auth: {result.auth}")
        register(ctx, targets)
        return result

    clear_record(inventory)  # a destroy's snapshot no longer stands for what comes now
    report.phase("apply")
    apply_plans(ctx, [p for p in plans if p.member not in joiners])
    report.phase("launch")
    launch(ctx, plans, view, result.started, result.restarted)
    for member in joiners:
        # add's path: one host at a time, learner first, undone only where that is safe.
        join_member(ctx, member, promote_timeout=promote_timeout, promote_announced=False)
        result.joined.append(member.ip)
    report.phase("rbac")
    result.auth = ensure_root_auth(ctx.voter_client(), inventory.root_password)
    report.info(f"auth: {result.auth}")
    register(ctx, targets)
    return result


def _joiners(targets: Sequence[Member], view: ClusterView) -> list[Member]:
    """Targets that are not started members of the live cluster: absent from the
    list, or announced there (by hand, or by an earlier run) but never started."""
    for member in targets:
        if member.init == "existing" and not view.live:
            raise ClusterError(
                f"host {member.ip}: etcd_init=existing but no member of cluster "
                f"{member.cluster!r} answers: start the cluster first (etcdsop create)"
            )
    if not view.live:
        return []
    joiners = []
    for member in targets:
        entry = find_live(member, view.members)
        if entry is None or not entry.started:
            joiners.append(member)
    own = {find_live(m, view.members) for m in joiners} - {None}
    pending = [m for m in view.members if (not m.started or m.is_learner) and m not in own]
    if joiners and pending:
        who = ", ".join(p.name or p.peer_urls[0] for p in pending)
        raise GuardRefused(
            f"cluster has a pending member ({who}: unstarted or learner); finish it first "
            "(etcdsop promote, or remove it) before joining another"
        )
    return joiners
