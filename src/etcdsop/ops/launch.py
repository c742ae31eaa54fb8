"""The launch stage: start etcd where the plans say so, then the planned restarts.

Shared by every command that applies plans (today `etcdsop create`).
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.errors import ClusterError
from etcdsop.model import Member
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.restart import leader_last, rolling_restart
from etcdsop.plan import HostPlan
from etcdsop.waits import poll_until


def launch(
    ctx: Context,
    plans: Sequence[HostPlan],
    view: ClusterView,
    started: list[str],
    restarted: list[str],
) -> None:
    """Start what the plans start (healthy before going on), then restart what they
    restart, one at a time, the leader last; the IPs are appended as each is done."""
    starts = [p.member for p in plans if p.service == "start"]
    if starts:
        # Type=notify: a lone start blocks until quorum, so start without blocking
        # on every host at once, then wait for health through the API.
        ctx.report.info(f"starting etcd on {len(starts)} host(s)")
        if not view.live and len(starts) > 1:
            lead = _start_lead(ctx, starts)
            rest = [m for m in starts if m is not lead]
        else:
            rest = starts
        _run_all(ctx, rest, START)
        ctx.wait_healthy(starts)
        for m in starts:
            ctx.report.host(m.ip, "etcd started, healthy", "changed")
        started += [m.ip for m in starts]
    restarts = [p.member for p in plans if p.service == "restart"]
    if restarts:
        for member in leader_last(ctx, restarts):
            rolling_restart(ctx, member, restarted)
            restarted.append(member.ip)


START = ["systemctl", "start", "--no-block", "etcd"]
LEAD_WAIT = 3.0  # seconds; past it the others start anyway (only slower)


def _start_lead(ctx: Context, starts: Sequence[Member]) -> Member:
    """Start one member of a new cluster first and wait until it serves its peer port.

    Before bootstrapping, a new member asks each peer, in peer-URL order, whether it
    is already a member, one second each. A peer started at the same moment has its
    port open but not yet served, so with everyone started together each member
    waits (members - 1) seconds. Started first, the member whose URL sorts first is
    asked first by every other one and answers at once.
    """
    lead = min(starts, key=lambda m: m.peer_url)
    _run_all(ctx, [lead], START)
    client = ctx.client(timeout=1.0)

    def settled() -> str | None:  # "serving", or "unreachable": no use waiting then
        state = client.peer_state(lead.peer_url)
        return None if state == "starting" else state

    poll_until(settled, timeout=LEAD_WAIT, interval=0.05)
    return lead


def _run_all(ctx: Context, members: Sequence[Member], argv: list[str]) -> None:
    results = ctx.parallel(members, lambda m: ctx.host(m).run(argv, timeout=90))
    failed = [v for v in results.values() if isinstance(v, ClusterError)]
    if failed:
        raise failed[0]
