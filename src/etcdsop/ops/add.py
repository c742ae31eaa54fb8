"""`etcdsop add` / `etcdsop promote`: grow the cluster one member at a time, safely.

Each new member joins as a learner (it cannot hurt the quorum while it catches
up), is promoted once in sync, and anything failing after the member add is
rolled back so the member list is exactly as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from etcdsop.errors import ClusterError, EtcdsopError, GuardRefused, InputError, MemberError
from etcdsop.etcd import EtcdApiError, EtcdClient, MemberInfo
from etcdsop.model import Inventory, Member
from etcdsop.ops import hostops
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.create import (
    apply_plans,
    check_guards,
    gather_facts,
    issue_certificates,
    plan_member,
    refresh_conf,
)
from etcdsop.ops.register import register
from etcdsop.plan import find_live
from etcdsop.waits import poll_until, retry_etcd

NOT_IN_SYNC = (
    "can only promote a learner member which is in sync with leader",
    "not in sync",
    "request timed out",
)
RELOAD_HINT = "etcdsop reload --target etcd,etcdctl,patroni,vip"


@dataclass
class AddResult:
    added: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def members_for_ips(inventory: Inventory, ips: Sequence[str]) -> list[Member]:
    """Strictly parsed IPs that the inventory's etcd group defines, in the given order."""
    members: list[Member] = []
    for arg in ips:
        try:
            address = ipaddress.ip_address(arg.strip())
        except ValueError:
            raise InputError(f"{arg!r} is not an IP address") from None
        member = next((m for m in inventory.members if ipaddress.ip_address(m.ip) == address), None)
        if member is None:
            raise InputError(
                f"{arg} is not a host of the etcd group in {inventory.path}: "
                "add it there first (with its etcd_seq)"
            )
        if member not in members:
            members.append(member)
    return members


def add(ctx: Context, members: Sequence[Member], *, promote_timeout: float) -> AddResult:
    result = AddResult()
    for member in members:
        _add_one(ctx, member, result, promote_timeout)
    if result.added:
        ctx.report.phase("refresh etcd.conf on the members")
        result.refreshed = refresh_conf(ctx)
        result.next_steps = [RELOAD_HINT]
    register(ctx, members)  # every one is a member now: added, or found already
    return result


def promote(ctx: Context, member: Member, *, timeout: float) -> MemberInfo:
    view = _live_view(ctx)
    entry = find_live(member, view.members)
    if entry is None:
        raise InputError(f"{member.ip} is not a member of cluster {member.cluster!r}")
    if not entry.is_learner:
        ctx.report.host(member.ip, "already a voter", "ok")
        return entry
    if not entry.started:
        raise MemberError(
            f"{member.ip}: learner {entry.hex_id} has not started yet: start "
            "etcd on it (or remove it with etcdsop rm) first"
        )
    _promote_when_in_sync(ctx, member, entry, timeout)
    return _verify(ctx, member, entry.id, learner=False)


# -- one member -----------------------------------------------------------------------
def _add_one(ctx: Context, member: Member, result: AddResult, promote_timeout: float) -> None:
    ctx.report.phase(f"add {member.name} ({member.ip})")
    view = _live_view(ctx)
    entry = find_live(member, view.members)
    if entry is not None and entry.started:
        if not entry.is_learner or member.learner:
            kind = "learner" if entry.is_learner else "member"
            ctx.report.host(member.ip, f"already a {kind}, skipped", "skipped")
            result.skipped.append(member.ip)
            return
        ctx.report.host(member.ip, "already a learner: promoting it", "info")
        _promote_when_in_sync(ctx, member, entry, promote_timeout)
        _verify(ctx, member, entry.id, learner=False)
        result.added.append({"ip": member.ip, "id": entry.hex_id, "learner": False})
        return
    client = ctx.client(view.voter_endpoints())
    if entry is not None:  # announced by an earlier run that died before the start
        ctx.report.host(
            member.ip,
            f"removing unstarted member {entry.hex_id} left by an earlier attempt",
            "changed",
        )
        _remove_member(ctx, client, entry.id)
        view = _live_view(ctx)
    _preflight(ctx, view, member)

    joiner = dataclasses.replace(member, init="existing")
    facts = gather_facts(ctx, [joiner])
    check_guards([joiner], facts, view)
    certs = issue_certificates(ctx, [joiner], [])
    plan = plan_member(ctx, joiner, [joiner], facts[joiner.ip], view, certs)
    apply_plans(ctx, [plan])

    before = sorted(m.id for m in view.members)
    added = retry_etcd(
        lambda: client.member_add([member.peer_url], learner=True),
        transient=("unhealthy cluster",),
        timeout=ctx.options.wait_timeout,
    )
    ctx.report.host(member.ip, f"member {added.hex_id} added as learner", "changed")
    try:
        ctx.host(member).run(["systemctl", "start", "--no-block", "etcd"], timeout=60)
        _verify(ctx, member, added.id, learner=True)
        if not member.learner:
            _promote_when_in_sync(
                ctx, member, dataclasses.replace(added, name=member.name), promote_timeout
            )
        _verify(ctx, member, added.id, learner=member.learner)
    except (EtcdsopError, KeyboardInterrupt) as exc:
        why = exc.message if isinstance(exc, EtcdsopError) else "interrupted"
        raise _rollback(ctx, client, member, added.id, before, why) from exc
    result.added.append({"ip": member.ip, "id": added.hex_id, "learner": member.learner})


def _live_view(ctx: Context) -> ClusterView:
    view = ctx.probe()
    if not view.live:
        raise ClusterError(
            f"no member of cluster {ctx.inventory.cluster!r} answers: "
            "nothing to add to (create it with etcdsop create)"
        )
    return view


def _preflight(ctx: Context, view: ClusterView, member: Member) -> None:
    """Every voter answers and knows the leader; nothing else pending; the host answers."""
    pending = [m for m in view.members if not m.started or m.is_learner]
    if pending:
        who = ", ".join(f"{p.name or 'unstarted'} {p.hex_id} ({p.peer_urls[0]})" for p in pending)
        raise GuardRefused(
            f"a pending member must be finished first: {who}: promote it "
            "(etcdsop promote IP) or remove it (etcdsop rm IP)"
        )
    client = ctx.client()
    for voter in view.members:
        url = voter.client_urls[0] if voter.client_urls else ""
        try:
            status = client.status(url)
        except ClusterError as exc:
            raise GuardRefused(
                f"voter {voter.name} ({url}) does not answer: a new member "
                f"would lower the fault tolerance further ({exc.message})"
            ) from exc
        if not status.leader:
            raise GuardRefused(f"voter {voter.name} knows no leader: cluster not healthy")
    ctx.connect([member])


def _leader(ctx: Context) -> tuple[int, str]:
    """(leader id, its client URL), from Maintenance Status of the voters."""
    client = ctx.client()
    members = client.member_list()
    for m in members:
        if m.is_learner or not m.client_urls:
            continue
        try:
            leader_id = client.status(m.client_urls[0]).leader
        except ClusterError:
            continue
        leader = next((x for x in members if x.id == leader_id and x.client_urls), None)
        if leader is not None:
            return leader.id, leader.client_urls[0]
    raise ClusterError("no voter reports a leader")


def _promote_when_in_sync(ctx: Context, member: Member, entry: MemberInfo, timeout: float) -> None:
    """Promote through the leader (a follower times out with auth on: etcd #20757),
    retrying 'not in sync' until the learner caught up or the bound is reached."""
    client = ctx.client()
    shown = [0.0]

    def promote_once() -> None:
        _leader_id, leader_url = _leader(ctx)  # asked each time: leadership may move
        client.member_promote(entry.id, endpoint=leader_url)

    def show_progress(_exc: EtcdApiError) -> None:
        if time.monotonic() - shown[0] < 1.0:
            return
        shown[0] = time.monotonic()
        with contextlib.suppress(ClusterError):
            _leader_id, leader_url = _leader(ctx)
            learner_index = client.status(member.client_url).raft_index
            leader_index = client.status(leader_url).raft_index
            ctx.report.host(
                member.ip,
                f"catching up: raft index {learner_index} / {leader_index} (leader)",
                "info",
            )

    try:
        retry_etcd(promote_once, transient=NOT_IN_SYNC, timeout=timeout, on_retry=show_progress)
    except EtcdApiError as exc:
        in_sync_problem = any(t in exc.etcd_message for t in NOT_IN_SYNC)
        hint = (
            f"; raise --promote-timeout or promote later with: etcdsop promote {member.ip}"
            if in_sync_problem
            else ""
        )
        raise MemberError(f"{member.ip}: promote failed: {exc.etcd_message}{hint}") from exc
    ctx.report.host(member.ip, f"promoted {entry.hex_id} to voter", "changed")


def _verify(ctx: Context, member: Member, member_id: int, *, learner: bool) -> MemberInfo:
    """Bounded wait until the member is started, of the wanted kind, and healthy."""
    client = ctx.client()
    kind = "learner" if learner else "voter"

    def ready() -> MemberInfo | None:
        entry = next((m for m in client.member_list() if m.id == member_id), None)
        ok = entry is not None and entry.started and entry.is_learner == learner
        return entry if ok and client.health(member.client_url) else None

    found = poll_until(ready, timeout=ctx.options.wait_timeout)
    if found is None:
        raise MemberError(
            f"{member.ip}: not a healthy {kind} after {ctx.options.wait_timeout:.0f}s"
        )
    ctx.report.host(member.ip, f"healthy {kind}", "ok")
    return found


def _remove_member(ctx: Context, client: EtcdClient, member_id: int) -> None:
    try:
        retry_etcd(
            lambda: client.member_remove(member_id),
            transient=("unhealthy cluster",),
            timeout=ctx.options.wait_timeout,
        )
    except EtcdApiError as exc:
        if "member not found" not in exc.etcd_message:
            raise


def _rollback(
    ctx: Context, client: EtcdClient, member: Member, member_id: int, before: list[int], why: str
) -> MemberError:
    """Undo the add: stop etcd there, remove the member, wipe its data dir."""
    ctx.report.host(member.ip, f"failed ({why}); rolling back", "failed")
    host = ctx.host(member)
    journal = ""
    with contextlib.suppress(ClusterError):
        journal = host.journal_tail("etcd", 20)
    problems: list[str] = []
    steps: list[Callable[[], None]] = [
        lambda: hostops.stop_etcd(host),
        lambda: _remove_member(ctx, client, member_id),
        lambda: hostops.wipe_data(host, member),
    ]
    for step in steps:
        try:
            step()
        except EtcdsopError as exc:
            problems.append(exc.message)
    after = sorted(m.id for m in client.member_list())
    if after != before:
        problems.append(f"member list differs from before ({len(after)} vs {len(before)})")
    state = (
        "rolled back, member list as before"
        if not problems
        else ("ROLLBACK INCOMPLETE: " + "; ".join(problems))
    )
    return MemberError(
        f"{member.ip}: adding {member.name} failed: {why}; {state}",
        details=f"--- {member.ip} journalctl -u etcd ---\n{journal}" if journal else None,
    )
