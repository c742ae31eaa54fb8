"""The status table as a terminal of a given width shows it (a real Rich console)."""

from __future__ import annotations

import io

import pytest

from etcdsop.ops.status import MemberRow, StatusResult, problem_word
from etcdsop.statusview import StatusView, WatchState

REFUSED = (
    "https://198.18.12.13:2379: no answer (HTTPSConnection(host='198.18.12.13', port=2379): "
    "Failed to establish a new connection: [Errno 111] Connection refused)"
)
IDS = ("8e9e05c52164694d", "2f7a3c91d05be844", "b71c0e6a9d3f5512")


def member(
    i: int, *, leader: bool = False, error: str | None = None, index: int = 5000
) -> MemberRow:
    ip = f"198.18.12.{10 + i}"
    down = error is not None
    return MemberRow(
        id=IDS[i - 1],
        name=f"etcd-{i}",
        peer_urls=[f"https://{ip}:2380"],
        client_urls=[f"https://{ip}:2379"],
        started=True,
        learner=False,
        leader=leader,
        raft_term=None if down else 7,
        raft_index=None if down else index,
        db_size=None if down else 24576,
        version=None if down else "3.4.23",
        healthy=not down,
        latency_ms=None if down else 2.5,
        in_inventory=True,
        error=error,
        problem=problem_word(error, answered=False) if down else None,
    )


def cluster(*members: MemberRow) -> StatusResult:
    healthy = sum(m.healthy for m in members)
    return StatusResult(
        cluster="etcd",
        cluster_id="cdf818194e3a8c32",
        members=list(members),
        voters=len(members),
        healthy_voters=healthy,
        quorum=len(members) // 2 + 1,
        tolerates=max(0, healthy - (len(members) // 2 + 1)),
        leaders=1,
    )


def render(view: StatusView, width: int) -> list[str]:
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(view)
    return buf.getvalue().splitlines()


ONE_DOWN = cluster(member(1, leader=True), member(2), member(3, error=REFUSED))


@pytest.mark.parametrize("width", [80, 100, 200])
def test_one_member_down_keeps_every_name_and_client_url_whole(width: int) -> None:
    lines = render(StatusView(ONE_DOWN), width)
    table = lines[1 : lines.index(next(line for line in lines if "voters healthy" in line))]
    for i in (1, 2, 3):
        row = next(line for line in table if f"etcd-{i} " in line)
        assert f"https://198.18.12.{10 + i}:2379" in row
    assert all(len(line) <= width for line in table), table
    down = next(line for line in table if "etcd-3 " in line)
    assert "down: refused" in down and "Connection refused" not in down
    # The whole error, once, below the table, without urllib3's repetition of the host.
    below = lines[lines.index(next(x for x in lines if "voters healthy" in x)) + 1 :]
    detail = " ".join(" ".join(below).split())  # Rich wraps long lines
    assert "etcd-3 https://198.18.12.13:2379: no answer" in detail
    assert "[Errno 111] Connection refused" in detail and "HTTPSConnection" not in detail


def test_ids_are_whole_when_there_is_room_and_short_at_100_columns() -> None:
    wide = "\n".join(render(StatusView(ONE_DOWN), 200))
    assert all(i in wide for i in IDS) and "peer url" in wide and "hidden" not in wide
    narrow = render(StatusView(ONE_DOWN), 100)
    text = "\n".join(narrow)
    assert all(i[:8] in text and i not in text for i in IDS)
    assert "role" in text and "index" in text and "health" in text
    assert any(line.startswith("hidden at 100 columns: peer url") for line in narrow)


def test_an_unstarted_member_is_named_by_its_peer_url_when_that_column_is_hidden() -> None:
    unstarted = MemberRow(
        id="5a1b2c3d4e5f6071",
        name="",
        peer_urls=["https://198.18.12.14:2380"],
        client_urls=[],
        started=False,
        learner=True,
        leader=False,
        raft_term=None,
        raft_index=None,
        db_size=None,
        version=None,
        healthy=False,
        latency_ms=None,
        in_inventory=True,
        error="not started",
        problem=problem_word("not started", answered=False),
    )
    text = "\n".join(render(StatusView(cluster(member(1, leader=True), unstarted)), 80))
    assert "peer https://198.18.12.14:2380" in text and "unstarted" in text


@pytest.mark.parametrize(
    ("error", "answered", "word"),
    [
        (REFUSED, False, "down: refused"),
        ("https://h:2379: no answer (Read timed out. (read timeout=5.0))", False, "timeout"),
        (
            "https://h:2379: no answer ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: unable to get local issuer certificate (_ssl.c:1006))",
            False,
            "tls",
        ),
        ("https://h:2379: no answer ([Errno 113] No route to host)", False, "down: no route"),
        ("https://h:2379: etcd error: etcdserver: request timed out", False, "timeout"),
        ("https://h:2379: etcd error: etcdserver: no leader", False, "etcd error"),
        ("not started", False, "unstarted"),
        (None, True, "unhealthy"),
    ],
)
def test_problem_words(error: str | None, answered: bool, word: str) -> None:
    assert problem_word(error, answered=answered) == word


def test_watch_shows_index_deltas_and_leader_changes() -> None:
    state = WatchState(interval=2)
    first = cluster(member(1, leader=True, index=5000), member(2, index=5000))
    state.advance(first)
    second = cluster(member(1, index=5042), member(2, leader=True, index=5040))
    view = StatusView(second, state)
    state.advance(second)
    lines = render(view, 120)
    header = next(line for line in lines if "index" in line)
    assert "+index" in header
    assert "+42" in next(line for line in lines if line.startswith("8e9e05c5"))
    assert "+40" in next(line for line in lines if line.startswith("2f7a3c91"))
    assert any("leader etcd-1 (term 7) -> etcd-2 (term 7)" in line for line in lines)
    assert "Ctrl-C to stop" in lines[-1]


def test_watch_shows_an_error_and_tries_again_at_the_next_refresh() -> None:
    from rich.console import Console

    from etcdsop.console import _watch_view
    from etcdsop.errors import ClusterError

    state = WatchState(interval=2)
    answers: list[StatusResult | ClusterError] = [
        cluster(member(1, leader=True, index=10), member(2, index=10)),
        ClusterError("198.18.12.11: etcd refused the root password"),
        cluster(member(1, index=15), member(2, leader=True, index=14)),
    ]

    def poll() -> StatusResult:
        answer = answers.pop(0)
        if isinstance(answer, ClusterError):
            raise answer
        return answer

    shown = []
    for _ in range(3):
        buf = io.StringIO()
        Console(file=buf, width=120, color_system=None).print(_watch_view(poll, state))
        shown.append(buf.getvalue())
    assert "error: 198.18.12.11: etcd refused the root password" in shown[1]
    assert "trying again" in shown[1]
    # The refresh after the error compares with the last good one.
    assert "+5" in shown[2] and "leader etcd-1 (term 7) -> etcd-2 (term 7)" in shown[2]


def test_an_alarm_and_a_full_db_show_within_100_columns() -> None:
    import dataclasses

    rows = [
        dataclasses.replace(
            member(i, leader=i == 1),
            healthy=False,
            problem="alarm: NOSPACE",
            quota_bytes=16 << 20,
            db_size=(16 << 20) - 4096,
        )
        for i in (1, 2, 3)
    ]
    for width in (80, 100):
        lines = render(StatusView(cluster(*rows)), width)
        table = lines[1 : lines.index(next(x for x in lines if "voters healthy" in x))]
        assert all(len(line) <= width for line in table)
        assert sum("alarm: NOSPACE" in line for line in table) == 3
    wide = "\n".join(render(StatusView(cluster(*rows)), 200))
    assert "16.0M 100%" in wide  # db against the quota once half full
    half = dataclasses.replace(member(1, leader=True), quota_bytes=8 << 30)
    assert "24K 0%" not in "\n".join(render(StatusView(cluster(half)), 200))


def test_without_the_member_list_rows_come_from_metrics_and_say_why() -> None:
    # etcd 3.5.28+ without a quorum: no member list (a login needs a quorum); a real
    # 3.5.16 member's /metrics page, told it has no leader, stands for the survivor.
    from pathlib import Path

    from tests.unit.factories import member as inventory_member

    from etcdsop.errors import ClusterError
    from etcdsop.etcdmetrics import parse_metrics
    from etcdsop.ops.status import fill_from_metrics

    page = (Path(__file__).parent / "data/metrics-etcd-3.5.16.txt").read_text()
    page = page.replace("etcd_server_has_leader 1", "etcd_server_has_leader 0")
    hosts = [inventory_member(f"10.0.0.{i}", i) for i in (1, 2, 3)]
    result = StatusResult(cluster="etcd", cluster_id=None)
    fill_from_metrics(
        result,
        hosts,
        {"10.0.0.1": parse_metrics(page), "10.0.0.2": ClusterError(REFUSED), "10.0.0.3": None},
    )
    assert [(r.name, r.raft_index, r.version) for r in result.members] == [
        ("etcd-1", 13, "3.5.16"),
        ("etcd-2", None, None),
        ("etcd-3", None, None),
    ]
    assert [r.problem for r in result.members] == ["unhealthy", "down: refused", "down"]
    assert (result.voters, result.quorum, result.leaders, result.healthy) == (3, 2, 0, False)
    assert "1 of 3 inventory member(s) answer" in result.notes[0]
    assert "the quorum is lost" in result.notes[1]
    lines = render(StatusView(result), 200)
    assert any("etcd-1" in line and " 13 " in line and "3.5.16" in line for line in lines)
    assert any("no leader (no quorum)" in line for line in lines)
