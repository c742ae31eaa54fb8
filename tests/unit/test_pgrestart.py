"""Pure decisions of the Patroni restart under maintenance mode: data-driven cases."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

import pytest

from etcdsop.clients.hostfacts import parse_host_facts
from etcdsop.clients.restart import (
    PatroniNode,
    PauseMarks,
    RestStatus,
    backup_stamp,
    check_back,
    etcd3_changes,
    etcd3_of,
    loaded_version,
    parse_status,
    rest_url,
    restart_clusters,
    restart_order,
    restart_reason,
)
from etcdsop.events import SilentReporter
from etcdsop.model import Inventory
from etcdsop.ops.common import Context, RunOptions
from etcdsop.ops.outcomes import HostOutcome, ReloadResult
from etcdsop.remote import CommandResult

OLD = {
    "hosts": "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379",
    "protocol": "https",
    "cacert": "/etc/etcd-client/ca.crt",
    "username": "pg-test",
    "password": "old",
}
CONF = "/pg/bin/patroni.yml"


def _with(**changes: Any) -> dict[str, Any]:
    return {**OLD, **changes}


@pytest.mark.parametrize(
    ("new", "changed"),
    [
        (OLD, []),
        (_with(password="new"), []),  # SIGHUP re-reads the credentials
        (_with(username="other", password="new"), []),
        (_with(hosts="10.0.0.3:2379, 10.0.0.1:2379,10.0.0.2:2379"), []),  # order, spaces
        (_with(hosts=["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"]), []),  # a list
        (_with(hosts="10.0.0.2:2379,10.0.0.3:2379,10.0.0.4:2379"), ["hosts"]),
        (_with(hosts="10.0.0.1:2379,10.0.0.2:2379"), ["hosts"]),
        (_with(protocol="http"), ["protocol"]),
        (_with(cacert="/other/ca.crt", password="new"), ["cacert"]),
        ({k: v for k, v in OLD.items() if k != "cacert"}, ["cacert"]),
        (_with(cert="/c.crt", key="/c.key"), ["cert", "key"]),
    ],
)
def test_etcd3_changes_that_sighup_does_not_apply(new: dict[str, Any], changed: list[str]) -> None:
    assert etcd3_changes(OLD, new) == changed


@pytest.mark.parametrize(
    ("old", "new", "running", "reason"),
    [
        (OLD, OLD, None, None),
        (OLD, _with(password="new"), None, None),  # reload only
        (OLD, _with(hosts="10.0.0.4:2379"), None, "etcd3 hosts changed"),
        (None, OLD, None, "etcd3 cacert, hosts, protocol changed"),
        # The file is current, but the process started on an older one.
        (OLD, OLD, _with(hosts="10.0.0.9:2379"), "Patroni still runs the etcd3 hosts of B"),
        (OLD, OLD, _with(password="older"), None),
    ],
)
def test_restart_reason(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    running: dict[str, Any] | None,
    reason: str | None,
) -> None:
    got = restart_reason(old, new, running, "B")
    assert (got is None) == (reason is None)
    if reason is not None:
        assert got is not None and got.startswith(reason)


def _epoch(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))


T0 = _epoch("20250101T000000Z")
B1 = f"{CONF}.20250101T000100Z.bak"  # the version of T0, replaced at +60 s
B2 = f"{CONF}.20250101T000200Z.bak"  # the version of +60 s, replaced at +120 s


@pytest.mark.parametrize(
    ("started", "mtimes", "loaded"),
    [
        (T0 + 10, {CONF: T0}, CONF),  # started after the last write
        (T0, {CONF: T0}, CONF),  # the same second: a restart follows its write
        (T0 + 70, {CONF: T0 + 120, B1: T0, B2: T0 + 60}, B2),  # ran the +60 version
        (T0 + 10, {CONF: T0 + 120, B1: T0, B2: T0 + 60}, B1),  # ran the first version
        # Rewritten since without a backup (B2 was replaced before the start): unknown.
        (T0 + 130, {CONF: T0 + 200, B1: T0, B2: T0 + 60}, None),
        (T0 + 10, {CONF: T0 + 20}, None),
        (T0 + 10, {CONF: T0 + 20, f"{CONF}.orig.bak": T0}, None),  # not ours: no stamp
    ],
)
def test_loaded_version(started: int, mtimes: dict[str, int], loaded: str | None) -> None:
    assert loaded_version(started, mtimes, CONF) == loaded


def test_backup_stamp() -> None:
    assert backup_stamp(B1) == T0 + 60
    assert backup_stamp(CONF) is None


def _status(role: str = "replica", **kw: Any) -> RestStatus:
    values: dict[str, Any] = {
        "state": "running",
        "role": role,
        "paused": True,
        "postmaster": "2025-01-01 00:00:00+00",
        "timeline": 1,
        "dcs_last_seen": 1000.0,
        "now": 1000.0,
    }
    values.update(kw)
    return RestStatus(**values)


@pytest.mark.parametrize(
    ("roles", "order", "refused"),
    [
        (
            {"10.0.0.6": _status("master"), "10.0.0.5": _status(), "10.0.0.10": _status()},
            ["10.0.0.5", "10.0.0.10", "10.0.0.6"],  # replicas by IP (not as text), leader last
            [],
        ),
        ({"10.0.0.5": _status("primary"), "10.0.0.6": _status()}, ["10.0.0.6", "10.0.0.5"], []),
        ({"10.0.0.5": _status("standby_leader"), "db1": _status()}, ["db1", "10.0.0.5"], []),
        (
            {"10.0.0.5": RestStatus(error="refused"), "10.0.0.6": _status()},
            ["10.0.0.6"],
            ["10.0.0.5"],
        ),
        ({"10.0.0.5": _status(role="")}, [], ["10.0.0.5"]),
    ],
)
def test_restart_order_replicas_first_leader_last(
    roles: dict[str, RestStatus], order: list[str], refused: list[str]
) -> None:
    got, why = restart_order(roles)
    assert got == order
    assert sorted(why) == refused


LEADER = _status("master", now=1000.0)


@pytest.mark.parametrize(
    ("after", "verdict", "why"),
    [
        (_status("master", dcs_last_seen=1005.0), "ok", "back"),
        (RestStatus(error="URLError: refused"), "wait", "REST API"),
        (_status("master", dcs_last_seen=0.0), "wait", "has not read the cluster"),
        (_status("master", dcs_last_seen=999.0), "wait", "has not read the cluster"),
        (_status("master", dcs_last_seen=None), "ok", "back"),  # too old a Patroni to say
        (_status("master", dcs_last_seen=1005.0, paused=False), "wait", "maintenance"),
        (_status("master", dcs_last_seen=1005.0, unlocked=True), "wait", "leader key"),
        (_status("master", dcs_last_seen=1005.0, state="starting"), "wait", "state starting"),
        (_status("replica", dcs_last_seen=1005.0), "broken", "role changed"),
        (
            _status("master", dcs_last_seen=1005.0, postmaster="2025-01-02 00:00:00+00"),
            "broken",
            "PostgreSQL restarted",
        ),
    ],
)
def test_check_back(after: RestStatus, verdict: str, why: str) -> None:
    got, text = check_back(LEADER, after, LEADER.now)
    assert got == verdict
    assert why in text


def test_check_back_replica_needs_no_lock() -> None:
    replica = _status()
    assert check_back(replica, _status(unlocked=True, dcs_last_seen=1001.0), 1000.0)[0] == "ok"


def test_parse_status_of_patroni_3() -> None:
    doc = {
        "state": "running",
        "postmaster_start_time": "2025-01-01 00:00:00.1+00:00",
        "role": "master",
        "timeline": 1,
        "pause": True,
        "dcs_last_seen": 1700000000,
        "cluster_unlocked": True,
        "patroni": {"version": "3.0.2", "scope": "pg-test"},
        "now": 1700000001.5,
    }
    status = parse_status(json.dumps(doc))
    assert status.ok and status.leader and status.paused and status.unlocked
    assert (status.timeline, status.dcs_last_seen, status.now) == (1, 1700000000.0, 1700000001.5)
    assert parse_status('{"error": "URLError: refused", "now": 5}') == RestStatus(
        error="URLError: refused", now=5.0
    )
    assert not parse_status("Traceback ...").ok
    assert parse_status('{"state": "running"}').dcs_last_seen is None


@pytest.mark.parametrize(
    ("restapi", "url"),
    [
        ("restapi:\n  listen: 0.0.0.0:8008\n", "http://127.0.0.1:8008/patroni"),
        ("restapi:\n  listen: 10.0.0.5:8009\n", "http://10.0.0.5:8009/patroni"),
        ("restapi:\n  listen: ':8008'\n", "http://127.0.0.1:8008/patroni"),
        ("restapi:\n  listen: '[::]:8008'\n", "http://[::1]:8008/patroni"),
        (
            "restapi:\n  listen: 0.0.0.0:8008\n  certfile: /pg/cert/server.crt\n",
            "https://127.0.0.1:8008/patroni",
        ),
        ("scope: x\n", "http://127.0.0.1:8008/patroni"),
        ("restapi: [broken\n", "http://127.0.0.1:8008/patroni"),
    ],
)
def test_rest_url(restapi: str, url: str) -> None:
    assert rest_url(restapi.encode()) == url


def test_etcd3_of() -> None:
    assert etcd3_of(b"etcd3:\n  hosts: a:1\n") == {"hosts": "a:1"}
    assert etcd3_of(b"etcd3: [broken\n") is None
    assert etcd3_of(b"scope: x\n") is None
    assert etcd3_of(None) is None


def test_host_facts_carry_patroni_start_mtimes_and_kill_mode() -> None:
    facts = parse_host_facts(
        f"mtime 1700000100 {CONF}\nmtime 1700000000 {B1}\nactive patroni active\n"
        "started 1700000050\nkillmode process\n"
    )
    assert facts.mtimes == {CONF: 1700000100, B1: 1700000000}
    assert (facts.started, facts.kill_mode) == (1700000050, "process")
    assert facts.active == {"patroni": "active"}


# -- the orchestration, against fake hosts ---------------------------------------------------
class FakeCluster:
    """Patroni on a few hosts as the REST API, patronictl and systemctl show it."""

    def __init__(self, roles: dict[str, str], *, paused: bool = False) -> None:
        self.roles = roles
        self.paused = paused
        self.down: set[str] = set()  # Patroni that will not come back after a restart
        self.clock = 1000.0
        self.seen = dict.fromkeys(roles, 999.0)
        self.log: list[str] = []
        self.resume_fails = False
        self.broken: set[str] = set()  # Patroni that dies when restarted
        self.pause_answer = ""  # what patronictl pause prints instead of "Success"
        self.pause_sets = False  # ...after setting the pause all the same

    def run(self, ip: str, argv: list[str]) -> CommandResult:
        self.clock += 1
        text = " ".join(argv[:1] + argv[3:]) if argv[0] == "patronictl" else argv[0]
        out = ""
        if argv[0] == "python3":
            doc: dict[str, Any] = {"now": self.clock}
            if ip in self.down:
                doc["error"] = "URLError: refused"
            else:
                doc.update(
                    state="running",
                    role=self.roles[ip],
                    postmaster_start_time="pm-" + ip,
                    dcs_last_seen=self.seen[ip],
                    pause=self.paused or None,
                )
            return CommandResult(ip, text, 0, json.dumps(doc), "")
        self.log.append(f"{ip} {' '.join(argv)}")
        if argv[:2] == ["systemctl", "restart"]:
            self.seen[ip] = self.clock + 0.5
            if ip in self.broken:
                self.down.add(ip)
        elif argv[0] == "patronictl" and argv[3] == "pause":
            if self.pause_answer:  # exits 0 all the same, as patronictl does
                if "already paused" in self.pause_answer or self.pause_sets:
                    self.paused = True
                return CommandResult(ip, text, 0, self.pause_answer, "")
            self.paused, out = True, "Success: cluster management is paused"
        elif argv[0] == "patronictl" and argv[3] == "resume":
            if self.resume_fails:
                return CommandResult(ip, text, 1, "", "etcd unreachable")
            self.paused, out = False, "Success: cluster management is resumed"
        return CommandResult(ip, text, 0, out, "")

    def host(self, ip: str) -> Any:
        cluster = self

        class Host:
            def run(self, argv: list[str], **_: Any) -> CommandResult:
                return cluster.run(ip, list(argv))

            def journal_tail(self, unit: str, lines: int = 20) -> str:
                return "journal"

        return Host()


def _nodes(fake: FakeCluster, restart: set[str], kill_mode: str = "process") -> list[PatroniNode]:
    return [
        PatroniNode(
            cluster="pg-test",
            ip=ip,
            host=fake.host(ip),
            conf=CONF,
            url="http://127.0.0.1:8008/patroni",
            kill_mode=kill_mode,
            reason="etcd3 hosts changed" if ip in restart else None,
            outcome=HostOutcome("patroni", ip, "changed", "wrote patroni.yml"),
        )
        for ip in fake.roles
    ]


def _ctx(*, dry_run: bool = False) -> tuple[Context, SilentReporter]:
    report = SilentReporter()
    options = RunOptions(dry_run=dry_run, wait_timeout=0.6)
    ctx = Context(Inventory(path=Path("/x/pigsty.yml"), members=()), options, report)
    return ctx, report


ROLES = {"10.0.0.5": "master", "10.0.0.6": "replica", "10.0.0.7": "replica"}
ALL = set(ROLES)


class FakeMarks(PauseMarks):
    """The /etcdsop/pause/ keys; logs their changes into the cluster's log."""

    def __init__(self, fake: FakeCluster, marked: bool = False) -> None:
        super().__init__(None)
        self.fake, self.marked = fake, {"pg-test"} if marked else set()

    def get(self, cluster: str) -> bool:
        return cluster in self.marked

    def put(self, cluster: str) -> None:
        self.marked.add(cluster)
        self.fake.log.append(f"mark {cluster}")

    def drop(self, cluster: str) -> None:
        self.marked.discard(cluster)
        self.fake.log.append(f"unmark {cluster}")


def _run(fake: FakeCluster, restart: set[str], **kw: Any) -> tuple[ReloadResult, SilentReporter]:
    ctx, report = _ctx(dry_run=kw.pop("dry_run", False))
    marks = kw.pop("marks", None)
    result = ReloadResult(("patroni",), ctx.options.dry_run)
    nodes = _nodes(fake, restart, **kw)
    result.outcomes = [n.outcome for n in nodes]
    restart_clusters(ctx, nodes, result, marks)
    return result, report


def test_pause_restart_replicas_first_leader_last_resume() -> None:
    fake = FakeCluster(dict(ROLES))
    result, _ = _run(fake, ALL)
    assert fake.log == [
        f"10.0.0.5 patronictl -c {CONF} pause --wait",
        "10.0.0.6 systemctl restart patroni",
        "10.0.0.7 systemctl restart patroni",
        "10.0.0.5 systemctl restart patroni",
        f"10.0.0.5 patronictl -c {CONF} resume --wait",
    ]
    assert result.patroni_restarted == ["10.0.0.6", "10.0.0.7", "10.0.0.5"]
    assert not fake.paused and not result.failed
    assert all("restarted under pause (etcd3 hosts changed)" in o.message for o in result.outcomes)


def test_only_the_hosts_that_need_it_restart_but_all_must_see_the_pause() -> None:
    fake = FakeCluster(dict(ROLES))
    result, _ = _run(fake, {"10.0.0.7"})
    assert [line.split(" ", 1)[1] for line in fake.log][1:-1] == ["systemctl restart patroni"]
    assert result.patroni_restarted == ["10.0.0.7"]
    fake = FakeCluster(dict(ROLES))
    assert _run(fake, set())[0].patroni_restarted == [] and fake.log == []


def test_leader_not_back_leaves_the_cluster_paused_loudly() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.broken = {"10.0.0.5"}
    result, report = _run(fake, ALL)
    assert not any("resume" in line for line in fake.log)  # never resumed
    assert fake.paused
    assert result.patroni_restarted == ["10.0.0.6", "10.0.0.7"]
    [failed] = result.failed
    assert failed.host == "10.0.0.5"
    assert "not back after 1s" in failed.message
    assert "LEFT IN MAINTENANCE MODE" in failed.message
    assert f"run on 10.0.0.6: patronictl -c {CONF} resume --wait" in failed.message
    assert any("LEFT IN MAINTENANCE MODE" in w for w in report.warnings)


def test_a_replica_not_back_stops_the_rest_and_stays_paused() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.broken = {"10.0.0.6"}
    result, _ = _run(fake, ALL)
    assert [line for line in fake.log if "restart" in line] == [
        "10.0.0.6 systemctl restart patroni"
    ]
    assert fake.paused
    assert {o.host for o in result.failed} == ALL  # the others: not restarted, re-run


def test_an_already_paused_cluster_is_left_paused() -> None:
    fake = FakeCluster(dict(ROLES), paused=True)
    result, report = _run(fake, ALL)
    assert not any("patronictl" in line for line in fake.log)
    assert fake.paused and result.patroni_restarted == ["10.0.0.6", "10.0.0.7", "10.0.0.5"]
    assert any("already in maintenance mode" in w for w in report.warnings)


def test_a_failed_pause_is_neither_resumed_nor_called_maintenance_mode() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.pause_answer = "Failed: pause cluster management, status code=401, (no auth)"
    result, report = _run(fake, ALL)
    assert fake.log == [f"10.0.0.5 patronictl -c {CONF} pause --wait"]  # no resume
    assert not fake.paused and result.patroni_restarted == []
    assert not any("MAINTENANCE" in w for w in report.warnings)
    assert any("status code=401" in o.message for o in result.failed)


def test_a_pause_whose_patronictl_wait_ran_out_is_still_ours_and_resumed() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.pause_answer = "10.0.0.7 members didn't recognized pause state after 10 seconds"
    fake.pause_sets = True
    result, _ = _run(fake, ALL)
    assert fake.log[-1] == f"10.0.0.5 patronictl -c {CONF} resume --wait"
    assert not fake.paused and not result.failed


def test_a_pause_someone_else_took_meanwhile_is_never_resumed_by_us() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.pause_answer = "Error: Cluster is already paused"
    result, report = _run(fake, ALL)
    assert not any("resume" in line for line in fake.log)
    assert fake.paused and result.patroni_restarted == ["10.0.0.6", "10.0.0.7", "10.0.0.5"]
    assert any("paused meanwhile by someone else" in w for w in report.warnings)


def test_resume_failure_names_the_cluster_and_the_command() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.resume_fails = True
    result, _ = _run(fake, ALL)
    [failed] = result.failed
    assert "cluster pg-test is STILL IN MAINTENANCE MODE" in failed.message
    assert f"run on 10.0.0.5: patronictl -c {CONF} resume --wait" in failed.message


def test_dry_run_plans_and_changes_nothing() -> None:
    fake = FakeCluster(dict(ROLES))
    result, report = _run(fake, ALL, dry_run=True)
    assert fake.log == []  # only REST reads
    assert result.patroni_restarted == ["10.0.0.6", "10.0.0.7", "10.0.0.5"]
    assert all("would restart Patroni under pause" in o.message for o in result.outcomes)
    assert any("would pause it" in line for line in report.lines)


def test_kill_mode_that_would_stop_postgres_refuses_the_restart() -> None:
    fake = FakeCluster(dict(ROLES))
    result, _ = _run(fake, ALL, kill_mode="control-group")
    assert fake.log == []
    assert {o.host for o in result.failed} == ALL
    assert "KillMode=control-group" in result.failed[0].message


def test_unknown_role_is_not_restarted() -> None:
    fake = FakeCluster(dict(ROLES))
    fake.down = {"10.0.0.7"}
    result, _ = _run(fake, {"10.0.0.7"})
    assert fake.log == []
    assert "gave no role" in result.failed[0].message


# -- a run stopped inside its pause (Ctrl-C, a lost SSH session): the next one ends it -------
def test_our_pause_is_marked_before_it_is_taken_and_unmarked_once_resumed() -> None:
    fake = FakeCluster(dict(ROLES))
    marks = FakeMarks(fake)
    result, _ = _run(fake, ALL, marks=marks)
    assert fake.log[:2] == ["mark pg-test", f"10.0.0.5 patronictl -c {CONF} pause --wait"]
    assert fake.log[-2:] == [f"10.0.0.5 patronictl -c {CONF} resume --wait", "unmark pg-test"]
    assert not marks.marked and not fake.paused and not result.failed


def test_a_pause_an_interrupted_run_left_is_ended_by_the_next_run() -> None:
    fake = FakeCluster(dict(ROLES), paused=True)
    marks = FakeMarks(fake, marked=True)
    result, report = _run(fake, {"10.0.0.5"}, marks=marks)  # the leader was not restarted yet
    assert fake.log == [
        "10.0.0.5 systemctl restart patroni",
        f"10.0.0.5 patronictl -c {CONF} resume --wait",
        "unmark pg-test",
    ]
    assert not fake.paused and not marks.marked and not result.failed
    assert any("an earlier etcdsop run took" in w for w in report.warnings)


def test_that_pause_is_ended_even_when_nothing_is_left_to_restart() -> None:
    fake = FakeCluster(dict(ROLES), paused=True)
    marks = FakeMarks(fake, marked=True)
    result, _ = _run(fake, set(), marks=marks)
    assert fake.log == [f"10.0.0.5 patronictl -c {CONF} resume --wait", "unmark pg-test"]
    assert not fake.paused and result.patroni_restarted == []


def test_that_pause_is_kept_while_no_running_patroni_holds_the_leader_key() -> None:
    fake = FakeCluster(dict(ROLES), paused=True)
    fake.down = {"10.0.0.5"}  # the leader's Patroni did not come back
    marks = FakeMarks(fake, marked=True)
    result, report = _run(fake, set(), marks=marks)
    assert not any("resume" in line for line in fake.log)
    assert fake.paused and marks.marked
    assert any("LEFT IN MAINTENANCE MODE" in o.message for o in result.failed)
    assert any("no running Patroni of it holds the leader key" in w for w in report.warnings)


def test_a_mark_whose_pause_someone_ended_is_dropped_and_a_new_pause_taken() -> None:
    fake = FakeCluster(dict(ROLES))
    marks = FakeMarks(fake, marked=True)
    result, _ = _run(fake, ALL, marks=marks)
    assert fake.log[:3] == [
        "unmark pg-test",
        "mark pg-test",
        f"10.0.0.5 patronictl -c {CONF} pause --wait",
    ]
    assert not fake.paused and not marks.marked and not result.failed


def test_no_mark_is_left_by_a_failed_pause_or_someone_elses() -> None:
    for answer in ("Failed: pause cluster management, status code=401", "Error: already paused"):
        fake = FakeCluster(dict(ROLES))
        fake.pause_answer = answer
        marks = FakeMarks(fake)
        _run(fake, ALL, marks=marks)
        assert not marks.marked and "unmark pg-test" in fake.log
        assert not any("resume" in line for line in fake.log)
