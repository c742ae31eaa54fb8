"""`etcdsop add` / `etcdsop promote`: grow the cluster one member at a time, safely.

Each host goes through ops/join.py: learner first, promoted once in sync, a
failure undone only as far as that can never cost quorum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from etcdsop.errors import InputError, MemberError
from etcdsop.etcd import MemberInfo
from etcdsop.model import Member
from etcdsop.ops.common import Context
from etcdsop.ops.join import join_member, live_view, promote_in_sync, verify
from etcdsop.ops.register import register
from etcdsop.ops.stages import RELOAD_HINT, refresh_conf
from etcdsop.plan import find_live


@dataclass
class AddResult:
    added: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
