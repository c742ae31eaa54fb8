"""reload's Patroni failure paths on the real sandbox Patroni (the unit tests use a fake
whose restart is instant): a Patroni that does not come back, a failing resume, a cluster
the operator paused, a unit whose KillMode would stop PostgreSQL with Patroni.

Each test: etcd on h1-h3; pg-test on h5 (primary) and h6 (replica), Pigsty v4.5 layout,
its Patroni and vip-manager set up when etcd had only h1 and h2, so `reload -t all` must
restart Patroni under maintenance mode. Outcomes are read from the hosts: GET /patroni,
patroni's MainPID, PostgreSQL's postmaster start time, the leader key in etcd.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e import pgbed
from tests.e2e.conftest import PASSWORD, Bed, run_cli
from tests.e2e.test_reload import root

pytestmark = pytest.mark.e2e

CTL = f"patronictl -c {pgbed.PATRONI_CONF}"
RESUME = re.compile(r"run on (\S+): (patronictl -c \S+ resume --wait)")


def rest(ip: str) -> dict[str, Any]:
    """GET /patroni from the admin node; {} when Patroni does not answer."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8008/patroni", timeout=5) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def postmaster(bed: Bed, ip: str) -> str:
    """PostgreSQL's own start time, asked of PostgreSQL (Patroni may be down)."""
    sql = "select pg_postmaster_start_time()"
    return bed.ssh(ip, f"psql -h /var/run/postgresql -U postgres -Atc '{sql}'").stdout.strip()


def patroni_pid(bed: Bed, ip: str) -> str:
    return bed.ssh(ip, "systemctl show -p MainPID --value patroni").stdout.strip()


@pytest.fixture
def pg(clean: Bed, tmp_path: Path) -> Iterator[tuple[Bed, Path]]:
    bed, ips = clean, clean.ips
    pgbed.wipe(bed, ips)
    inv = pgbed.inventory(bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6])
    run_cli("create", "-i", str(inv))
    run_cli("rbac", "sync", "-i", str(inv))
    pgbed.provision(bed, inv, ips[4:6], ips[:2])  # clients set up before h3 joined
    yield bed, inv
    bed.each(
        ips[4:6],
        "rm -rf /etc/patroni_env.conf /usr/local/bin/patronictl"
        " /etc/systemd/system/patroni.service.d && systemctl daemon-reload",
    )
    pgbed.wipe(bed, ips)


class State:
    """What must not move: who leads, PostgreSQL's processes, the timeline."""

    def __init__(self, bed: Bed, inv: Path) -> None:
        self.bed, self.inv = bed, inv
        self.primary, self.replica = bed.ips[4], bed.ips[5]
        self.postmasters = {ip: postmaster(bed, ip) for ip in self.pg}
        self.pids = {ip: patroni_pid(bed, ip) for ip in self.pg}
        doc = rest(self.primary)
        assert (doc.get("role"), doc.get("timeline")) == ("master", 1), doc
        assert rest(self.replica).get("role") == "replica"
        assert self.leader() == b"pg-test-1"

    @property
    def pg(self) -> list[str]:
        return [self.primary, self.replica]

    def leader(self) -> bytes | None:
        return root(self.inv, self.bed.ips[:3], PASSWORD).get("/pg/pg-test/leader")

    def mark(self) -> bytes | None:
        """etcdsop's record of a pause it took and has not ended."""
        return root(self.inv, self.bed.ips[:3], PASSWORD).get("/etcdsop/pause/pg-test")

    def paused(self) -> dict[str, bool]:
        """Each running Patroni's view of the maintenance mode."""
        return {ip: bool(rest(ip).get("pause")) for ip in self.pg if rest(ip)}

    def assert_same_primary(self) -> None:
        """No failover, no PostgreSQL restart: leader key, role, timeline, postmasters."""
        assert self.leader() == b"pg-test-1"
        assert {ip: postmaster(self.bed, ip) for ip in self.pg} == self.postmasters
        doc = rest(self.primary)
        assert (doc.get("role"), doc.get("timeline")) == ("master", 1), doc
        listed = pgbed.members(self.bed, self.primary)
        assert [m["Member"] for m in listed if m["Role"] == "Leader"] == ["pg-test-1"], listed


def reload(inv: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = run_cli("reload", "-t", "all", "-i", str(inv), "--json", *extra, check=False)
    return proc.returncode, json.loads(proc.stdout or "{}"), " ".join(proc.stderr.split())


def test_a_patroni_that_does_not_come_back_stops_the_restarts_and_keeps_the_pause(
    pg: tuple[Bed, Path],
) -> None:
    """The replica (restarted first) dies at its start: its EnvironmentFile (read only at
    start) moves the REST API to an address the host does not have."""
    bed, inv = pg
    s = State(bed, inv)
    bed.ssh(s.replica, "echo PATRONI_RESTAPI_LISTEN=198.18.255.1:8008 > /etc/patroni_env.conf")
    began = time.monotonic()
    code, out, err = reload(inv, "--timeout", "20")
    took = time.monotonic() - began
    assert code == 2, err
    failed = {h["host"]: h["message"] for h in out["hosts"] if h["status"] == "failed"}
    assert "not back after 20s" in failed[s.replica], failed
    assert "LEFT IN MAINTENANCE MODE" in failed[s.replica]
    assert "not restarted (an earlier step failed)" in failed[s.primary]
    assert f"Patroni on {s.replica} is not back" in err
    assert f"run on {s.primary}: {CTL} resume --wait" in err
    assert out["patroni_restarted"] == []
    assert took < 90
    # Stopped there: the leader's Patroni untouched, the replica's down, pg-test paused
    # (no failover while a Patroni is missing), PostgreSQL running on both.
    assert patroni_pid(bed, s.primary) == s.pids[s.primary]
    assert bed.ssh(s.replica, "systemctl is-active patroni", check=False).stdout.strip() != "active"
    assert rest(s.replica) == {}
    assert s.paused() == {s.primary: True}
    assert s.mark() is not None  # etcdsop's own pause, for the next run to end
    s.assert_same_primary()

    # Fixed, Patroni started again there: a re-run restarts the leader's Patroni (still on
    # the old hosts) under the pause it left, then ends that pause.
    bed.ssh(s.replica, "rm /etc/patroni_env.conf && systemctl start patroni")
    pgbed.wait_members(bed, s.primary, {"pg-test-2": ("Replica", "running")})
    code, out, err = reload(inv)
    assert code == 0, err
    assert "still in the maintenance mode an earlier etcdsop run took" in err
    assert out["patroni_restarted"] == [s.primary]  # the replica already runs the new hosts
    assert s.paused() == {s.primary: False, s.replica: False}
    assert s.mark() is None
    s.assert_same_primary()


def test_a_failing_resume_says_the_cluster_is_paused_and_how_to_resume(
    pg: tuple[Bed, Path],
) -> None:
    """patronictl on the host that paused pg-test (its leader) refuses `resume`."""
    bed, inv = pg
    s = State(bed, inv)
    wrapper = (
        "#!/bin/sh\n"
        'case " $* " in *" resume "*) echo "Error: resume refused by the test" >&2; exit 1;; esac\n'
        'exec /usr/bin/patronictl "$@"\n'
    )
    pgbed.put(bed, s.primary, "/usr/local/bin/patronictl", wrapper, "755", "root:root")
    code, out, err = reload(inv)
    assert code == 2, err
    assert out["patroni_restarted"] == [s.replica, s.primary]  # the restarts went through
    assert "cluster pg-test is STILL IN MAINTENANCE MODE" in err
    assert "resume refused by the test" in err
    match = RESUME.search(err)
    assert match is not None, err
    assert match.groups() == (s.primary, f"{CTL} resume --wait")
    assert s.paused() == {s.primary: True, s.replica: True}
    assert all(patroni_pid(bed, ip) != s.pids[ip] for ip in s.pg)
    s.assert_same_primary()

    # Once patronictl works again, the exact command given resumes the cluster.
    bed.ssh(s.primary, "rm /usr/local/bin/patronictl")
    host, command = match.groups()
    assert "Success: cluster management is resumed" in bed.ssh(host, command).stdout
    assert s.paused() == {s.primary: False, s.replica: False}
    s.assert_same_primary()
    # The next run finds its record of that pause stale: dropped, nothing paused again.
    again = json.loads(run_cli("reload", "-t", "all", "-i", str(inv), "--json").stdout)
    assert again["patroni_restarted"] == [] and again["failed"] == 0
    assert s.mark() is None and s.paused() == {s.primary: False, s.replica: False}


def test_a_cluster_the_operator_paused_stays_paused(pg: tuple[Bed, Path]) -> None:
    bed, inv = pg
    s = State(bed, inv)
    bed.ssh(s.primary, f"{CTL} pause --wait")
    code, out, err = reload(inv)
    assert code == 0, err
    assert "pg-test is already in maintenance mode: restarting under it, left paused" in err
    assert out["patroni_restarted"] == [s.replica, s.primary]
    assert all(patroni_pid(bed, ip) != s.pids[ip] for ip in s.pg)
    time.sleep(2)  # what a late resume would have changed by now
    assert s.paused() == {s.primary: True, s.replica: True}
    assert s.mark() is None  # not etcdsop's pause: no later run ends it
    s.assert_same_primary()
    again = run_cli("reload", "-t", "all", "-i", str(inv), "--json")
    assert json.loads(again.stdout)["patroni_restarted"] == []
    assert s.paused() == {s.primary: True, s.replica: True}


def test_a_kill_mode_that_would_stop_postgresql_is_refused_before_any_restart(
    pg: tuple[Bed, Path],
) -> None:
    """KillMode=control-group (a drop-in, as an operator might add): stopping Patroni
    would stop PostgreSQL with it."""
    bed, inv = pg
    s = State(bed, inv)
    dropin = "/etc/systemd/system/patroni.service.d/killmode.conf"
    for ip in s.pg:
        pgbed.put(bed, ip, dropin, "[Service]\nKillMode=control-group\n", "644", "root:root")
        bed.ssh(ip, "systemctl daemon-reload")
    since = bed.ssh(s.primary, "date +%s").stdout.strip()
    code, out, err = reload(inv)
    assert code == 2, err
    failed = {h["host"]: h["message"] for h in out["hosts"] if h["status"] == "failed"}
    assert set(failed) == set(s.pg)
    assert all("patroni.service has KillMode=control-group" in m for m in failed.values())
    assert out["patroni_restarted"] == []
    # Nothing restarted, never paused (a paused Patroni logs "PAUSE: no action" each
    # loop); PostgreSQL untouched.
    assert {ip: patroni_pid(bed, ip) for ip in s.pg} == s.pids
    assert s.paused() == {s.primary: False, s.replica: False} and s.mark() is None
    assert all("PAUSE:" not in pgbed.patroni_log(bed, ip, since) for ip in s.pg)
    s.assert_same_primary()

    # KillMode fixed: a re-run sees that Patroni still runs the old hosts and restarts it.
    bed.each(s.pg, f"rm {dropin} && systemctl daemon-reload")
    code, out, err = reload(inv)
    assert code == 0, err
    assert out["patroni_restarted"] == [s.replica, s.primary]
    assert s.paused() == {s.primary: False, s.replica: False}
    s.assert_same_primary()
