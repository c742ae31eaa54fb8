"""Rolling restarts: one member at a time, leader last, never below quorum.

The one guard `create` (a changed member) and `reload --restart` share, and the
check of every planned restart before any change.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.model import Member
from etcdsop.ops.common import ClusterView, Context
from etcdsop.plan import HostPlan, find_live
from etcdsop.quorum import check_restart


def leader_last(ctx: Context, members: Sequence[Member]) -> list[Member]:
    client = ctx.voter_client()
    leader_id = 0
    for member in members:
        try:
            leader_id = client.status(member.client_url).leader
            break
        except ClusterError:
            continue
    live = {mi.id: mi for mi in client.member_list()}
    leader = live.get(leader_id)
    return sorted(members, key=lambda m: leader is not None and m.peer_url in leader.peer_urls)


def guard_restart(ctx: Context, member: Member, done: Sequence[str] = ()) -> None:
    """Refuse (exit 3) when this member's restart would leave the rest below quorum."""
    client = ctx.voter_client()
    members = client.member_list()
    entry = find_live(member, members)
    if entry is None:
        return
    healthy = {m.id for m in members if m.client_urls and client.health(m.client_urls[0])}
    allowed, arithmetic = check_restart(members, healthy, entry.id)
    ctx.report.info(f"quorum: {arithmetic}")
    if not allowed:
        raise GuardRefused(
            f"refusing to restart {member.name} ({member.ip}): the cluster would lose its "
            f"quorum ({arithmetic}); members restarted: {', '.join(done) or 'none'}"
        )


def rolling_restart(ctx: Context, member: Member, done: Sequence[str] = ()) -> None:
    """One member at a time, healthy before the next: the cluster keeps its quorum."""
    guard_restart(ctx, member, done)
    ctx.report.host(member.ip, "restarting etcd", "start")
    # Blocking restart: with Type=notify it returns once this member serves again;
    # a --no-block restart could let the old process answer the health check below.
    host = ctx.host(member)
    try:
        host.run(["systemctl", "restart", "etcd"], timeout=ctx.options.wait_timeout + 30)
    except ClusterError as exc:
        raise ctx.unhealthy_error([member], ctx.options.wait_timeout) from exc
    ctx.wait_healthy([member])
    ctx.report.host(member.ip, "etcd restarted, healthy", "changed")


def check_planned_restarts(ctx: Context, plans: Sequence[HostPlan], view: ClusterView) -> None:
    """Before any change: each planned restart must leave the others a quorum (members
    this run starts count as up: they are started and healthy before any restart)."""
    restarts = [p for p in plans if p.service == "restart"]
    if not restarts or not view.live:
        return
    client = ctx.voter_client(view)
    starting = {p.member.peer_url for p in plans if p.service == "start"}
    healthy = {
        m.id
        for m in view.members
        if any(u in starting for u in m.peer_urls)
        or (m.client_urls and client.health(m.client_urls[0]))
    }
    for plan in restarts:
        entry = find_live(plan.member, view.members)
        if entry is None:
            continue
        allowed, arithmetic = check_restart(view.members, healthy, entry.id)
        if not allowed:
            raise GuardRefused(
                f"refusing to restart {plan.member.name} ({plan.member.ip}) for "
                f"{', '.join(plan.reasons)}: the cluster would lose its quorum "
                f"({arithmetic}); nothing was changed: bring the members that are down "
                "back first"
            )
