"""Rolling restarts: one member at a time, leader last, never below quorum.

The one guard `create` (a changed member) and `reload --restart` share.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.model import Member
from etcdsop.ops.common import Context
from etcdsop.plan import find_live
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
