"""Quorum arithmetic for removals, data-driven."""

from __future__ import annotations

import pytest

from etcdsop.etcd import MemberInfo
from etcdsop.quorum import check_removal, quorum_of


def _members(voters: int, learners: int = 0, unstarted: tuple[int, ...] = ()) -> list[MemberInfo]:
    out = [
        MemberInfo(
            i, "" if i in unstarted else f"etcd-{i}", (f"https://10.0.0.{i}:2380",), (), False
        )
        for i in range(1, voters + 1)
    ]
    out += [
        MemberInfo(100 + i, f"learner-{i}", (f"https://10.0.1.{i}:2380",), (), True)
        for i in range(learners)
    ]
    return out


@pytest.mark.parametrize(("voters", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_quorum_of(voters: int, quorum: int) -> None:
    assert quorum_of(voters) == quorum


@pytest.mark.parametrize(
    ("voters", "healthy", "target", "allowed", "why"),
    [
        (3, {1, 2, 3}, 3, True, "healthy follower of 3"),
        (3, {1, 2}, 3, True, "dead member, the rest keep quorum"),
        (3, {1}, 1, False, "2 of 3 down: no quorum now"),
        (3, {1, 2}, 1, False, "one dead, removing a healthy one leaves 1 of 2"),
        (2, {1, 2}, 2, True, "2-member cluster, the other healthy"),
        (2, {1}, 2, False, "2-member cluster, the other dead"),
        (5, {1, 2, 3}, 5, True, "5 with 2 dead, removing a dead one"),
        (5, {1, 2, 3}, 1, False, "5 with 2 dead, removing a healthy one: 2 of 4"),
        (1, {1}, 1, False, "the last member: use destroy instead"),
    ],
)
def test_voter_removal(
    voters: int, healthy: set[int], target: int, allowed: bool, why: str
) -> None:
    check = check_removal(_members(voters), healthy, target)
    assert check.allowed is allowed, why


def test_unstarted_voter_counts_as_unhealthy_and_may_be_removed() -> None:
    members = _members(4, unstarted=(4,))
    check = check_removal(members, {1, 2, 3}, 4)
    assert check.allowed
    assert check.started_voters == 3
    assert "voters 4 (3 started, 3 healthy, quorum 3) -> after removal 3 voters" in (
        check.arithmetic()
    )


def test_learner_removal_never_changes_quorum() -> None:
    members = _members(3, learners=1)
    check = check_removal(members, {1, 2, 3}, 100)
    assert check.allowed and check.target_is_learner
    assert check.quorum_after == check.quorum_now == 2
    assert "learner" in check.arithmetic()
    assert not check_removal(members, {1}, 100).allowed  # no quorum now: refuse anything
