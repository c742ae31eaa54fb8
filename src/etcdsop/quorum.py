"""Pure quorum arithmetic for membership changes (shared/spec/etcd-rules.md)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from etcdsop.etcd import MemberInfo


def quorum_of(voters: int) -> int:
    return voters // 2 + 1


@dataclass(frozen=True)
class RemovalCheck:
    """Whether removing one member keeps the cluster able to decide, with the numbers."""

    allowed: bool
    voters: int
    started_voters: int
    healthy_voters: int
    quorum_now: int
    voters_after: int
    healthy_after: int
    quorum_after: int
    target_is_learner: bool

    def arithmetic(self) -> str:
        now = (
            f"voters {self.voters} ({self.started_voters} started, {self.healthy_voters} "
            f"healthy, quorum {self.quorum_now})"
        )
        if self.target_is_learner:
            return f"target is a learner: {now}, unchanged by its removal"
        return (
            f"{now} -> after removal {self.voters_after} voters, {self.healthy_after} healthy,"
            f" quorum {self.quorum_after}"
        )


def check_removal(
    members: Sequence[MemberInfo], healthy_ids: Collection[int], target_id: int
) -> RemovalCheck:
    """A voter may go when the cluster has quorum now and the healthy rest keep one.

    Removing a dead voter is the common case: allowed whenever the rest keep quorum.
    Removing a learner never changes the quorum.
    """
    voters = [m for m in members if not m.is_learner]
    healthy = [m for m in voters if m.id in healthy_ids]
    target = next((m for m in members if m.id == target_id), None)
    is_learner = target is not None and target.is_learner
    remaining = [m for m in voters if m.id != target_id]
    healthy_after = [m for m in remaining if m.id in healthy_ids]
    quorum_now = quorum_of(len(voters))
    quorum_after = quorum_of(len(remaining)) if remaining else 0
    has_quorum_now = len(healthy) >= quorum_now
    if is_learner:
        allowed = has_quorum_now
    else:
        allowed = has_quorum_now and bool(remaining) and len(healthy_after) >= quorum_after
    return RemovalCheck(
        allowed=allowed,
        voters=len(voters),
        started_voters=sum(1 for m in voters if m.started),
        healthy_voters=len(healthy),
        quorum_now=quorum_now,
        voters_after=len(remaining) if not is_learner else len(voters),
        healthy_after=len(healthy_after) if not is_learner else len(healthy),
        quorum_after=quorum_after if not is_learner else quorum_now,
        target_is_learner=is_learner,
    )


def check_restart(
    members: Sequence[MemberInfo], healthy_ids: Collection[int], target_id: int
) -> tuple[bool, str]:
    """A voter may restart only while the other healthy voters keep the quorum."""
    voters = [m for m in members if not m.is_learner]
    target = next((m for m in members if m.id == target_id), None)
    quorum = quorum_of(len(voters))
    healthy = [v for v in voters if v.id in healthy_ids]
    if target is not None and target.is_learner:
        return True, f"learner: quorum unaffected ({len(healthy)}/{len(voters)} voters healthy)"
    others = [v for v in healthy if v.id != target_id]
    text = (
        f"voters {len(voters)} ({len(healthy)} healthy, quorum {quorum}); while it restarts "
        f"{len(others)} healthy voter(s) remain"
    )
    return len(others) >= quorum, text
