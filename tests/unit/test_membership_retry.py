"""Retry decisions of ops/membership.py: after an unknown outcome, read, then decide.

A scripted stand-in for the etcd client: pure logic, no etcd. That these calls do
the right thing against real etcd is proven by the e2e tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from etcdsop.errors import ClusterError, MemberError
from etcdsop.etcd import EtcdApiError, EtcdOutcomeUnknown, EtcdUnreachable, MemberInfo
from etcdsop.ops.membership import add_member, promote_member, remove_member

PEER = "https://10.0.0.4:2380"
VOTER = MemberInfo(1, "etcd-1", ("https://10.0.0.1:2380",), ("https://10.0.0.1:2379",), False)


class Script:
    """member_list answers from `lists` in turn (the last repeats); each change call
    pops its outcome from `outcomes`: an exception to raise, or a value to return."""

    def __init__(self, lists: list[list[MemberInfo] | Exception], outcomes: list[Any]) -> None:
        self.lists, self.outcomes = lists, outcomes
        self.sent: list[str] = []

    def member_list(self) -> list[MemberInfo]:
        answer = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _outcome(self, name: str) -> Any:
        self.sent.append(name)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def member_add(self, peer_urls: list[str], *, learner: bool) -> MemberInfo:
        return self._outcome("add")  # type: ignore[no-any-return]

    def member_remove(self, member_id: int) -> None:
        self._outcome("remove")

    def member_promote(self, member_id: int, *, endpoint: str | None = None) -> None:
        self._outcome("promote")


def learner(started: bool = True, is_learner: bool = True) -> MemberInfo:
    return MemberInfo(4, "etcd-4" if started else "", (PEER,), (), is_learner)


def api(message: str) -> EtcdApiError:
    return EtcdApiError("https://10.0.0.1:2379", 9, message)


def lost() -> EtcdOutcomeUnknown:
    return EtcdOutcomeUnknown("https://10.0.0.1:2379: no answer in time")


FAST: dict[str, Callable[..., Any]] = {"sleep": lambda _s: None}


def test_add_after_a_lost_reply_reads_the_list_and_never_sends_twice() -> None:
    script = Script([[VOTER], [VOTER, learner(False)]], [lost()])
    added = add_member(script, PEER, learner=True, timeout=10, **FAST)  # type: ignore[arg-type]
    assert script.sent == ["add"]
    assert added.member.id == 4 and added.created


def test_add_of_an_announced_peer_url_sends_nothing() -> None:
    script = Script([[VOTER, learner(False)]], [])
    added = add_member(script, PEER, learner=True, timeout=10, **FAST)  # type: ignore[arg-type]
    assert script.sent == [] and not added.created


def test_add_retries_unhealthy_cluster_and_reads_after_peer_exists() -> None:
    script = Script(
        [[VOTER], [VOTER], [VOTER], [VOTER, learner(False)]],
        [api("etcdserver: unhealthy cluster"), lost(), api("etcdserver: Peer URLs already exists")],
    )
    added = add_member(script, PEER, learner=True, timeout=10, **FAST)  # type: ignore[arg-type]
    assert script.sent == ["add", "add", "add"] and added.member.id == 4


def add_until_the_deadline(script: Script) -> ClusterError:
    """add_member against a clock that moves a second per look, 3 s allowed."""
    clock = iter(range(100))
    with pytest.raises(ClusterError) as caught:
        add_member(
            script,  # type: ignore[arg-type]
            PEER,
            learner=True,
            timeout=3,
            sleep=lambda _s: None,
            clock=lambda: float(next(clock)),
        )
    return caught.value


def test_add_gives_up_at_its_deadline_with_the_last_reason() -> None:
    error = add_until_the_deadline(Script([[VOTER]], [lost()] * 50))
    assert "not done after 3s" in error.message


def test_other_errors_are_not_retried() -> None:
    script = Script([[VOTER]], [api("etcdserver: too many learner members in cluster")])
    with pytest.raises(EtcdApiError, match="too many learner"):
        add_member(script, PEER, learner=True, timeout=10, **FAST)  # type: ignore[arg-type]
    assert script.sent == ["add"]


def test_remove_after_a_lost_reply_is_done_when_the_member_is_gone() -> None:
    script = Script([[VOTER, learner()], [VOTER]], [lost()])
    assert remove_member(script, 4, timeout=10, **FAST) is True  # type: ignore[arg-type]
    assert script.sent == ["remove"]


def test_remove_of_an_absent_member_sends_nothing_and_says_so() -> None:
    script = Script([[VOTER]], [])
    assert remove_member(script, 4, timeout=10, **FAST) is False  # type: ignore[arg-type]
    assert script.sent == []


def test_remove_reads_again_after_member_not_found() -> None:
    script = Script([[VOTER, learner()], [VOTER]], [api("etcdserver: member not found")])
    remove_member(script, 4, timeout=10, **FAST)  # type: ignore[arg-type]
    assert script.sent == ["remove"]


def test_promote_stops_once_the_list_shows_a_voter() -> None:
    # Not in sync, then a lost reply (it did commit), then the list says voter.
    script = Script(
        [[VOTER, learner()], [VOTER, learner()], [VOTER, learner(is_learner=False)]],
        [api("etcdserver: can only promote a learner member which is in sync with leader"), lost()],
    )
    waited: list[int] = []
    done = promote_member(
        script,  # type: ignore[arg-type]
        4,
        leader_url=lambda: "https://10.0.0.1:2379",
        timeout=10,
        on_waiting=lambda: waited.append(1),
        **FAST,
    )
    assert not done.is_learner and script.sent == ["promote", "promote"] and waited == [1]


def test_promote_reads_again_after_not_a_learner_and_sends_nothing_more() -> None:
    script = Script(
        [[VOTER, learner()], [VOTER, learner(is_learner=False)]],
        [api("etcdserver: can only promote a learner member")],
    )
    done = promote_member(
        script,  # type: ignore[arg-type]
        4,
        leader_url=lambda: "https://10.0.0.1:2379",
        timeout=10,
        **FAST,
    )
    assert not done.is_learner and script.sent == ["promote"]


def test_promote_of_a_vanished_member_fails() -> None:
    script = Script([[VOTER]], [])
    with pytest.raises(MemberError, match="not in the cluster"):
        promote_member(
            script,  # type: ignore[arg-type]
            4,
            leader_url=lambda: "x",
            timeout=10,
            **FAST,
        )


def test_an_unreadable_list_is_retried_not_taken_as_absent() -> None:
    script = Script([EtcdUnreachable("no voter"), [VOTER, learner()], [VOTER]], [lost()])
    assert remove_member(script, 4, timeout=10, **FAST) is True  # type: ignore[arg-type]
    assert script.sent == ["remove"]


class Statuses(Script):
    """Also answers Maintenance Status: the leader each voter knows (None: no answer)."""

    def __init__(
        self,
        lists: list[list[MemberInfo] | Exception],
        outcomes: list[Any],
        leaders: dict[str, int | None],
    ) -> None:
        super().__init__(lists, outcomes)
        self.leaders = leaders

    def with_timeout(self, _timeout: float) -> Statuses:
        return self

    def status(self, endpoint: str) -> Any:
        lead = self.leaders[endpoint]
        if lead is None:
            raise EtcdUnreachable(f"{endpoint}: refused")
        return type("S", (), {"leader": lead})()


def voter(n: int) -> MemberInfo:
    return MemberInfo(
        n, f"etcd-{n}", (f"https://10.0.0.{n}:2380",), (f"https://10.0.0.{n}:2379",), False
    )


@pytest.mark.parametrize(
    ("leaders", "named"),
    [
        ({1: 1, 2: 0, 3: 1}, ["etcd-2 (10.0.0.2)"]),  # cut off: campaigning, no leader
        ({1: 1, 2: 1, 3: None}, ["etcd-3 (10.0.0.3)"]),  # client port does not answer
        ({1: 1, 2: 1, 3: 1}, []),  # all follow one leader: nothing to name
    ],
)
def test_an_add_refused_as_unhealthy_until_its_deadline_names_the_cut_off_voters(
    leaders: dict[int, int | None], named: list[str]
) -> None:
    members = [voter(1), voter(2), voter(3)]
    script = Statuses(
        [members],
        [api("etcdserver: unhealthy cluster")] * 50,
        {f"https://10.0.0.{n}:2379": lead for n, lead in leaders.items()},
    )
    message = add_until_the_deadline(script).message
    assert "not done after 3s (etcdserver: unhealthy cluster)" in message
    for name in named:
        assert f"not connected to the leader: {name}" in message
    if not named:
        assert "not connected" not in message
