"""A joiner whose catch-up outlasts a minute, on real hosts: the link to it is shaped
(tc tbf on its veth, the host side) to 175 KB/s, then freed after 70 s.

etcd (Type=notify) says READY only once it has published itself, which for a learner
is after it applied the leader's data: the unit must not time its start, etcdsop's
bounded waits (--promote-timeout) decide.

Why the link is freed rather than left slow to the end: on a link slower than one
raft message (up to 1 MiB) per heartbeat, etcd's leader re-sends its probe to a new
member after every heartbeat answer (raft's probe state) until the first one arrives,
and the copies queue up in the stream ahead of the rest: at 175 KB/s about 50 copies
of 5 s each. Left shaped, the learner needs over 5 minutes; freed at 70 s, the queue
drains in seconds. Either way it is still starting at 70 s, which is what this proves.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import SUBNET_INDEX, Bed, run_cli, spawn
from tests.e2e.test_create import client, unit_times

from etcdsop.etcd import EtcdClient
from etcdsop.sandbox.net import Layout

pytestmark = pytest.mark.e2e

VALUE_BYTES = 900_000  # under etcd's 1.5 MiB request limit, few puts to seed
VALUES = 15  # 13.5 MB of values
RATE_BYTES = 175_000  # per second to the joiner: 13.5 MB take >= 77 s
SLOW_FOR = 70.0  # seconds the link stays slow: past the 60 s an older unit allowed
SLOW = f"{RATE_BYTES * 8 // 1000}kbit"
STUCK = "100kbit"  # the data would take hours
OLD_UNIT_LINE = "TimeoutStartSec=60"  # the unit etcdsop wrote before 0.x


@contextlib.contextmanager
def shaped(ip: str, rate: str) -> Iterator[None]:
    """Traffic to the host (its veth's host side sends what the host receives) at rate."""
    dev = Layout(SUBNET_INDEX).veth(int(ip.rsplit(".", 1)[1]) - 10)
    tbf = ["tbf", "rate", rate, "burst", "16kb", "latency", "300ms"]
    subprocess.run(["tc", "qdisc", "replace", "dev", dev, "root", *tbf], check=True)
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], check=True)


@pytest.fixture(scope="module")
def seeded(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """A 1-member cluster on h1 holding 13.5 MB of values; h2 in the inventory."""
    first, joiner = bed.ips[:2]
    bed.wipe([first, joiner])
    inv = bed.inventory(tmp_path_factory.mktemp("slowjoin"), [first, joiner])
    run_cli("create", "-i", str(inv), "-l", first)
    c = client(inv, [first])
    for i in range(VALUES):
        c.put(f"/app/big/{i:02d}", os.urandom(VALUE_BYTES // 2).hex())
    yield inv, first, joiner
    bed.wipe([first, joiner])


def voters(c: EtcdClient) -> list[str]:
    return sorted(m.peer_urls[0] for m in c.member_list() if not m.is_learner)


def test_a_unit_change_of_the_start_timeout_only_is_reloaded_without_a_restart(
    bed: Bed, seeded: tuple[Path, str, str]
) -> None:
    """A member whose unit an older etcdsop wrote (TimeoutStartSec=60): a re-run of
    create rewrites it and reloads systemd, and etcd keeps running."""
    inv, first, _ = seeded
    unit = "/etc/systemd/system/etcd.service"
    bed.ssh(
        first, f"sed -i 's/^TimeoutStartSec=.*/{OLD_UNIT_LINE}/' {unit}; systemctl daemon-reload"
    )
    before = unit_times(bed, [first])[first][0]
    proc = run_cli("create", "-i", str(inv), "-l", first)
    assert "unit changed" not in proc.stdout + proc.stderr
    assert unit_times(bed, [first])[first][0] == before  # the same invocation: no restart
    out = bed.ssh(first, f"grep ^TimeoutStartSec= {unit}; systemctl show -p TimeoutStartUSec etcd")
    assert out.stdout.split() == ["TimeoutStartSec=0", "TimeoutStartUSec=infinity"]


def test_a_joiner_that_gets_nowhere_is_rolled_back_at_the_promote_timeout(
    bed: Bed, seeded: tuple[Path, str, str]
) -> None:
    inv, first, joiner = seeded
    with shaped(joiner, STUCK):
        began = time.monotonic()
        proc = run_cli("add", "-i", str(inv), joiner, "--promote-timeout", "20", check=False)
        took = time.monotonic() - began
    assert proc.returncode == 4, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert "not started and healthy after 20s" in line and "rolled back" in line
    assert took < 20 + 60, took  # the bound, plus the add and the rollback
    assert voters(client(inv, [first])) == [f"https://{first}:2380"]
    assert len(client(inv, [first]).member_list()) == 1


def test_a_learner_catching_up_for_more_than_a_minute_joins_unharmed(
    bed: Bed, seeded: tuple[Path, str, str]
) -> None:
    inv, first, joiner = seeded
    began = time.monotonic()
    with shaped(joiner, SLOW):
        proc = spawn("add", "-i", str(inv), joiner)
        while time.monotonic() - began < SLOW_FOR and proc.poll() is None:
            time.sleep(1)
        # Past the 60 s an older unit allowed: etcd still starting, never restarted.
        unit = bed.ssh(joiner, "systemctl show -p ActiveState -p NRestarts etcd").stdout
    try:
        _out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert sorted(unit.split()) == ["ActiveState=activating", "NRestarts=0"], (unit, err)
    restarts = bed.ssh(joiner, "systemctl show -p NRestarts --value etcd").stdout.strip()
    assert restarts == "0"  # never killed by systemd on the way
    c = client(inv, [first, joiner])
    assert voters(c) == sorted(f"https://{ip}:2380" for ip in (first, joiner))
    mine = client(inv, [joiner]).get_prefix("/app/big/")
    assert len(mine) == VALUES and all(len(v) == VALUE_BYTES for v in mine.values())
