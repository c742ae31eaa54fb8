"""`etcdsop add` / `etcdsop promote`: grow the cluster one member at a time, safely.

Each host goes through ops/join.py: learner first, promoted once in sync, a
failure undone only as far as that can never cost quorum.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from etcdsop.errors import InputError, MemberError
from etcdsop.etcd import MemberInfo
from etcdsop.model import Inventory, Member
from etcdsop.ops.common import Context
from etcdsop.ops.join import join_member, live_view, promote_in_sync, verify
from etcdsop.ops.register import register
from etcdsop.ops.stages import refresh_conf
from etcdsop.plan import find_live

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
        joined = join_member(ctx, member, promote_timeout=promote_timeout)
        if joined.skipped:
            result.skipped.append(member.ip)
        else:
            result.added.append({"ip": joined.ip, "id": joined.id, "learner": joined.learner})
    if result.added:
        ctx.report.phase("refresh etcd.conf on the members")
        result.refreshed = refresh_conf(ctx)
        result.next_steps = [RELOAD_HINT]
    register(ctx, members)  # every one is a member now: added, or found already
    return result


def promote(ctx: Context, member: Member, *, timeout: float) -> MemberInfo:
    view = live_view(ctx)
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
    voters = ctx.voter_client(view)
    promote_in_sync(ctx, voters, member, entry, timeout)
    return verify(ctx, voters, member, entry.id, learner=False)
