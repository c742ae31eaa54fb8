"""Pure logic of backup, restore and recover: pruning, sidecars, the recover source,
the restore command and the timer units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.factories import member as make_member

from etcdsop.backups import Sidecar, cluster_backups, parse_sidecar, to_prune
from etcdsop.errors import ClusterError, GuardRefused, InputError
from etcdsop.etcd import EtcdApiError, EtcdUnreachable
from etcdsop.etcdmetrics import MemberMetrics, parse_metrics
from etcdsop.model import Member
from etcdsop.ops.backuptimer import render_units
from etcdsop.ops.common import LeaderAnswer, leader_answer
from etcdsop.ops.drhost import BUMP_REVISION, bump_revisions, restore_argv
from etcdsop.ops.raftstate import RaftState
from etcdsop.ops.recover import (
    Candidate,
    check_unreachable,
    choose_source,
    losses,
    voter_count,
)
from etcdsop.ops.restore import describe_snapshot
from etcdsop.render import PeerRef

NAMES = [
    "etcd-20261201T100000.000001Z.db",
    "etcd-20261203T100000.000001Z.db",
    "etcd-20261202T100000.000001Z.db",
    "etcd-20261203T100000.000001Z.db.json",  # a sidecar, not a backup
    "etcd-a-20261201T090000.000001Z.db",  # cluster etcd-a, not etcd
    "etcd.destroying.json",
    "mine.db",
]


def test_backups_of_one_cluster_oldest_first() -> None:
    assert cluster_backups(NAMES, "etcd") == [
        "etcd-20261201T100000.000001Z.db",
        "etcd-20261202T100000.000001Z.db",
        "etcd-20261203T100000.000001Z.db",
    ]
    assert cluster_backups(NAMES, "etcd-a") == ["etcd-a-20261201T090000.000001Z.db"]


@pytest.mark.parametrize(
    ("keep", "pruned"),
    [
        (1, ["etcd-20261201T100000.000001Z.db", "etcd-20261202T100000.000001Z.db"]),
        (2, ["etcd-20261201T100000.000001Z.db"]),
        (3, []),
        (48, []),
    ],
)
def test_keep_prunes_the_oldest_of_this_cluster_only(keep: int, pruned: list[str]) -> None:
    assert to_prune(NAMES, "etcd", keep) == pruned


def test_keep_zero_is_refused() -> None:
    with pytest.raises(InputError, match="keep at least 1"):
        to_prune(NAMES, "etcd", 0)


def _sidecar() -> Sidecar:
    return Sidecar(
        cluster="etcd",
        cluster_id="9cb864b3fc8fd240",
        revision=201,
        members=("etcd-1=https://10.0.0.1:2380",),
        etcd_version="3.4.23",
        sha256="AB" * 32,
        size=40992,
        source="etcd-3",
        created="2026-12-03T11:58:06+00:00",
    )


def test_sidecar_round_trip(tmp_path: Path) -> None:
    doc = _sidecar().to_json()
    parsed = parse_sidecar(json.dumps(doc), tmp_path / "x.json")
    assert parsed == Sidecar(**{**doc, "members": tuple(doc["members"]), "sha256": "ab" * 32})


def test_sidecar_unknown_revision(tmp_path: Path) -> None:
    doc = {**_sidecar().to_json(), "revision": None}
    assert parse_sidecar(json.dumps(doc), tmp_path / "x.json").revision is None


@pytest.mark.parametrize("text", ["", "[]", '{"cluster": "etcd"}', '{"members": 3}'])
def test_a_broken_sidecar_is_named(text: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x\.json: not a backup sidecar"):
        parse_sidecar(text, tmp_path / "x.json")


# -- recover's source ------------------------------------------------------------------
def test_source_is_the_highest_raft_index() -> None:
    found = [Candidate("10.0.0.1", True, 40), Candidate("10.0.0.2", True, 52)]
    assert choose_source(found, None) == "10.0.0.2"


def test_source_the_only_member_with_data_even_stopped() -> None:
    found = [Candidate("10.0.0.1", True, None), Candidate("10.0.0.2", False, None)]
    assert choose_source(found, None) == "10.0.0.1"


def test_source_unknown_index_of_another_member_with_data_is_refused() -> None:
    found = [Candidate("10.0.0.1", True, 40), Candidate("10.0.0.2", True, None)]
    with pytest.raises(GuardRefused, match=r"10\.0\.0\.2 cannot be read"):
        choose_source(found, None)
    assert choose_source(found, "10.0.0.2") == "10.0.0.2"  # --from decides


def test_source_from_must_hold_data_and_be_reachable() -> None:
    found = [Candidate("10.0.0.1", True, 40), Candidate("10.0.0.2", False, None)]
    with pytest.raises(InputError, match="holds no etcd data"):
        choose_source(found, "10.0.0.2")
    with pytest.raises(InputError, match="not a reachable host"):
        choose_source(found, "10.0.0.9")


def test_no_member_with_data_points_to_restore() -> None:
    with pytest.raises(ClusterError, match="etcdsop restore FILE"):
        choose_source([Candidate("10.0.0.1", False, None)], None)


def test_unreachable_quorum_refused_unless_from_names_the_source() -> None:
    # 2 of 3 voters unreachable: they may be a live majority behind a partition.
    two = ["10.0.0.2", "10.0.0.3"]
    with pytest.raises(GuardRefused, match=r"10\.0\.0\.2, 10\.0\.0\.3 cannot be reached.*--from"):
        check_unreachable(3, 2, two, None)
    check_unreachable(3, 2, two, "10.0.0.1")  # the operator says they are gone
    check_unreachable(3, 1, ["10.0.0.3"], None)  # a minority cannot elect a leader
    check_unreachable(3, 0, [], None)
    with pytest.raises(GuardRefused):
        check_unreachable(5, 3, ["a", "b", "c"], None)
    check_unreachable(5, 2, ["a", "b"], None)


def _state(node: str, commit: int, voters: tuple[str, ...] | None) -> RaftState:
    return RaftState(node_id=node, term=3, commit=commit, voters=voters, learners=())


def test_a_spare_without_data_is_no_voter() -> None:
    # Voters a, b, c; spare d in the etcd group (no data); b and c behind a partition.
    states = {"10.0.0.1": _state("a", 90, ("a", "b", "c"))}
    assert voter_count(states, ["10.0.0.1"], [], ["10.0.0.2", "10.0.0.3"]) == (3, 2)
    # Without a readable membership: data holders (no learners) plus every unreachable host.
    unknown = {"10.0.0.1": RaftState(problem="no python3")}
    assert voter_count(unknown, ["10.0.0.1"], [], ["10.0.0.2", "10.0.0.3"]) == (3, 2)
    assert voter_count({}, ["10.0.0.1", "10.0.0.4"], ["10.0.0.4"], ["10.0.0.2"]) == (2, 1)


def test_a_learner_is_never_the_source() -> None:
    only = [Candidate("10.0.0.4", True, 90, is_learner=True), Candidate("10.0.0.1", False, None)]
    with pytest.raises(GuardRefused, match=r"10\.0\.0\.4 is a learner.*removed all voters"):
        choose_source(only, None)
    with pytest.raises(GuardRefused, match="is a learner"):
        choose_source(only, "10.0.0.4")
    # A learner ahead does not make the voter's unknown index matter, nor win.
    both = [Candidate("10.0.0.4", True, 95, is_learner=True), Candidate("10.0.0.1", True, 90)]
    assert choose_source(both, None) == "10.0.0.1"


def test_losses_name_members_ahead_of_the_source() -> None:
    indexes = {"10.0.0.1": 40, "10.0.0.2": 52, "10.0.0.3": None}
    found = losses("10.0.0.1", indexes, ["10.0.0.3"])
    assert found == [
        "10.0.0.2 reports raft index 52, above the source's (40): the writes only it holds "
        "are lost",
        "10.0.0.3 cannot be reached: it may hold writes the source lacks",
    ]
    assert losses("10.0.0.2", indexes, []) == []


def test_restore_names_the_snapshot_and_warns_of_another_cluster() -> None:
    ours = describe_snapshot(_sidecar(), "etcd")
    assert ours == [
        "the snapshot was taken 2026-12-03T11:58:06+00:00 from etcd-3 of cluster etcd "
        "(revision 201)"
    ]
    theirs = describe_snapshot(_sidecar(), "pg-meta-etcd")
    assert len(theirs) == 2 and "is of cluster 'etcd', not 'pg-meta-etcd'" in theirs[1]
    assert "no sidecar" in describe_snapshot(None, "etcd")[0]


# -- restore command -------------------------------------------------------------------
def _member() -> Member:
    return make_member("10.0.0.1", 1)


def test_bump_only_when_every_host_can() -> None:
    assert bump_revisions({"a": "etcdutl-bump", "b": "etcdutl-bump"})
    assert not bump_revisions({"a": "etcdutl-bump", "b": "etcdctl"})
    assert not bump_revisions({})


def test_restore_argv_34_and_35() -> None:
    peers = [PeerRef("etcd-1", "https://10.0.0.1:2380"), PeerRef("etcd-2", "https://10.0.0.2:2380")]
    old = restore_argv("etcdctl", "/s.db", _member(), peers, "/data/etcd.r", bump=False)
    assert old[:3] == ["env", "ETCDCTL_API=3", "etcdctl"]
    assert "--bump-revision" not in old
    joined = " ".join(old)
    assert "--initial-cluster etcd-1=https://10.0.0.1:2380,etcd-2=https://10.0.0.2:2380" in joined
    assert "--data-dir /data/etcd.r" in joined and "--name etcd-1" in joined
    new = restore_argv("etcdutl-bump", "/s.db", _member(), peers, "/d", bump=True)
    assert new[0] == "etcdutl"
    assert new[-3:] == ["--bump-revision", str(BUMP_REVISION), "--mark-compacted"]
    with pytest.raises(ClusterError, match="neither etcdutl nor etcdctl"):
        restore_argv("none", "/s.db", _member(), peers, "/d", bump=False)


# -- timer units -----------------------------------------------------------------------
def test_timer_units_run_this_etcdsop_on_this_inventory() -> None:
    units = render_units(
        "meta",
        Path("/srv/pigsty/pigsty.yml"),
        on_calendar="*-*-* *:00:00",
        keep=48,
        python="/usr/bin/python3",
        package_root=Path("/opt/etcdsop"),
    )
    assert units.timer == "etcdsop-backup-meta.timer"
    assert "OnCalendar=*-*-* *:00:00" in units.timer_text
    assert "Unit=etcdsop-backup-meta.service" in units.timer_text
    assert (
        "ExecStart=/usr/bin/python3 -m etcdsop backup -i /srv/pigsty/pigsty.yml --keep 48"
        in units.service_text
    )
    assert "Environment=PYTHONPATH=/opt/etcdsop" in units.service_text


def test_timer_refuses_paths_systemd_would_split() -> None:
    with pytest.raises(InputError, match="white space"):
        render_units("meta", Path("/my dir/pigsty.yml"), on_calendar="hourly", keep=1)


class _HardenedMember:
    """What etcd 3.5.28+ answers without a login (its code paths, not a transport)."""

    def __init__(
        self,
        health: tuple[bool, str],
        status: dict[str, object] | None = None,
        metrics: str | None = None,
    ):
        self._health = health
        self._status = status
        self._metrics = metrics

    def metrics(self, endpoint: str) -> MemberMetrics:
        if self._metrics is None:  # a proxy in front that serves no /metrics
            raise ClusterError(f"{endpoint}: /metrics answered HTTP 404")
        return parse_metrics(self._metrics)

    def call(self, path: str, body: object, *, endpoint: str, auth: bool) -> dict[str, object]:
        assert path == "/v3/maintenance/status" and auth is False
        if self._status is None:
            raise EtcdApiError(endpoint, 401, "etcdserver: user name is empty")
        return self._status

    def health_detail(self, endpoint: str) -> tuple[bool, str]:
        return self._health


@pytest.mark.parametrize(
    ("health", "leader"),
    [
        ((True, ""), True),
        ((False, "RAFT NO LEADER"), False),
        ((False, "ALARM NOSPACE"), None),  # a leader may well be there: never "no leader"
        ((False, ""), None),  # 3.4.42+: no reason given
    ],
)
def test_a_member_that_wants_a_login_for_status_is_read_through_health(
    health: tuple[bool, str], leader: bool | None
) -> None:
    answer = leader_answer(_HardenedMember(health), "https://10.0.0.1:2379")  # type: ignore[arg-type]
    assert (answer.leader, answer.raft_index) == (leader, None)


def test_a_member_that_answers_status_without_a_login_gives_its_raft_index() -> None:
    status = {"leader": "7", "raftIndex": "42", "header": {"cluster_id": "255"}}
    answer = leader_answer(_HardenedMember((False, ""), status), "https://10.0.0.1:2379")  # type: ignore[arg-type]
    assert answer == LeaderAnswer(True, 42, "ff")


# A real etcd 3.5.16 member's /metrics page (its etcd_server_* and db lines).
METRICS_3_5 = (Path(__file__).parent / "data/metrics-etcd-3.5.16.txt").read_text()


def test_metrics_page_of_a_real_member_is_read() -> None:
    m = parse_metrics(METRICS_3_5)
    assert m.member_id == 0x7C9C5DD32DABC28F and m.version == "3.5.16"
    assert (m.has_leader, m.is_leader, m.is_learner) == (True, False, False)
    assert (m.committed_index, m.db_size, m.db_size_in_use) == (13, 24576, 16384)


def test_a_member_that_wants_a_login_for_status_gives_its_raft_index_through_metrics() -> None:
    # etcd 3.5.28+ without a quorum: recover can still pick the member furthest ahead.
    answer = leader_answer(_HardenedMember((False, ""), metrics=METRICS_3_5), "https://x:2379")  # type: ignore[arg-type]
    assert answer == LeaderAnswer(True, 13, "")
    no_leader = METRICS_3_5.replace("etcd_server_has_leader 1", "etcd_server_has_leader 0")
    answer = leader_answer(_HardenedMember((False, ""), metrics=no_leader), "https://x:2379")  # type: ignore[arg-type]
    assert answer == LeaderAnswer(False, 13, "")


def test_metrics_give_leader_and_index_status_the_cluster_id() -> None:
    status = {"leader": "7", "raftIndex": "40", "header": {"cluster_id": "255"}}
    member = _HardenedMember((True, ""), status, metrics=METRICS_3_5)
    assert leader_answer(member, "https://x:2379") == LeaderAnswer(True, 13, "ff")  # type: ignore[arg-type]


def test_a_page_without_the_raft_lines_is_not_read_as_no_leader() -> None:
    page = "# HELP go_goroutines x\ngo_goroutines 42\n"
    assert parse_metrics(page).has_leader is None
    answer = leader_answer(_HardenedMember((False, ""), metrics=page), "https://x:2379")  # type: ignore[arg-type]
    assert answer == LeaderAnswer(None, None, "")


class _SilentMember(_HardenedMember):
    """Nothing answers there (a host powered off, a dropped port)."""

    def metrics(self, endpoint: str) -> MemberMetrics:
        raise EtcdUnreachable(f"{endpoint}: no answer (timed out)")

    def call(self, path: str, body: object, *, endpoint: str, auth: bool) -> dict[str, object]:
        raise AssertionError("asked again after no answer: a second timeout per member")


def test_a_member_that_does_not_answer_is_not_asked_twice() -> None:
    with pytest.raises(EtcdUnreachable):
        leader_answer(_SilentMember((False, "")), "https://x:2379")  # type: ignore[arg-type]
