"""Which member list a probe believes when members disagree."""

from __future__ import annotations

from etcdsop.etcd import MemberInfo
from etcdsop.ops.common import _most_told


def member(i: int, learner: bool = False) -> MemberInfo:
    url = f"https://10.0.0.{i}"
    return MemberInfo(i, f"etcd-{i}", (f"{url}:2380",), (f"{url}:2379",), learner)


def test_a_member_cut_off_during_a_removal_is_outvoted_whoever_answers_first() -> None:
    stale = [member(1), member(2), member(3), member(4)]  # still lists the removed etcd-4
    committed = [member(1), member(2), member(3)]
    assert _most_told([stale, committed, committed]) == committed
    assert _most_told([committed, stale, committed]) == committed


def test_a_learner_promoted_since_counts_as_another_list() -> None:
    before = [member(1), member(2, learner=True)]
    after = [member(1), member(2)]
    assert _most_told([before, after, after]) == after
