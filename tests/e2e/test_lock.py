"""One operator at a time: the cluster lock and the audit trail, on real hosts."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from tests.e2e.conftest import PASSWORD, Bed, run_cli, spawn
from tests.e2e.test_create import block_port
from tests.e2e.test_safety import Cluster, flat, make, url

pytestmark = pytest.mark.e2e


def start(*args: str) -> subprocess.Popen[str]:
    return spawn(*args, stdout=subprocess.PIPE)  # --json runs are read from stdout


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> list[str]:
    """Read the command's progress until a line holds needle (the lock is held then)."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"never printed {needle!r}:\n{''.join(seen)}")


def finish(proc: subprocess.Popen[str], seen: list[str]) -> tuple[int, str, str]:
    assert proc.stderr is not None and proc.stdout is not None
    rest = proc.stderr.read()
    out = proc.stdout.read()
    return proc.wait(timeout=300), out, "".join(seen) + rest


@pytest.fixture
def four(clean: Bed, tmp_path: Path) -> Cluster:
    """3 voters and a fourth inventory host to add."""
    return make(clean, tmp_path, clean.ips[:4], clean.ips[:3])


def test_two_adds_at_once_and_add_with_rm_at_once(four: Cluster) -> None:
    ips = four.bed.ips
    # The first add holds the lock ~15 s: its host's client port is taken, so its etcd
    # fails to start and the add is rolled back (the lock is held through that too).
    block_port(four.bed, ips[3], 2379)
    try:
        first = start("add", ips[3], "-y", "-i", str(four.inventory))
        seen = wait_for_line(first, "lock held: /etcdsop/lock/etcd")
        second = four.cli("add", ips[3], "-y", check=False)
        rm = four.cli("rm", ips[2], "-y", check=False)
        code, _out, output = finish(first, seen)
    finally:
        four.bed.ssh(ips[3], "systemctl stop etcdsop-blocker", check=False)
    assert code == 4 and "rolled back" in flat(output), output
    for proc in (second, rm):
        assert proc.returncode == 3, proc.stderr
        text = flat(proc.stderr)
        assert "is locked by" in text and "running `etcdsop add" in text, text
    assert len(four.members()) == 3
    # Free again: the add goes through; --wait makes the rm queue behind it.
    adder = start("add", ips[3], "-y", "-i", str(four.inventory))
    seen = wait_for_line(adder, "lock held: /etcdsop/lock/etcd")
    queued = four.cli("rm", ips[2], "-y", "--wait", "120")
    assert finish(adder, seen)[0] == 0
    assert "lock held by root@" in flat(queued.stderr)  # the admin node's: same directory
    members = four.members()
    assert sorted(m.client_urls[0] for m in members) == sorted(url(ip) for ip in [*ips[:2], ips[3]])
    assert not any(m.is_learner for m in members)


def test_a_second_admin_directory_meets_the_same_lock(four: Cluster, tmp_path: Path) -> None:
    ips = four.bed.ips
    other = tmp_path / "admin-2"
    other.mkdir()
    shutil.copy(four.inventory, other / "pigsty.yml")
    shutil.copytree(four.inventory.parent / "files", other / "files")
    block_port(four.bed, ips[3], 2379)  # the holder's add runs ~15 s, then rolls back
    try:
        holder = start("add", ips[3], "-y", "-i", str(four.inventory))
        seen = wait_for_line(holder, "lock held: /etcdsop/lock/etcd")
        # Its own admin-node lock is free: only etcd's lock stands between them.
        proc = run_cli("rm", ips[1], "-y", "-i", str(other / "pigsty.yml"), check=False)
        code, _out, output = finish(holder, seen)
    finally:
        four.bed.ssh(ips[3], "systemctl stop etcdsop-blocker", check=False)
    assert code == 4, output
    assert proc.returncode == 3 and "is locked by" in flat(proc.stderr), proc.stderr
    assert len(four.members()) == 3


def test_two_rolling_restarts_at_once_never_overlap(four: Cluster) -> None:
    # The same new runtime key for both: the first restarts all three, the second
    # waits for it and then finds nothing left to restart.
    args = ["reload", "-t", "etcd", "--restart", "-e", "etcd_heartbeat_interval=150", "--json"]
    first = start(*args, "-i", str(four.inventory))
    seen = wait_for_line(first, "lock held")
    second = four.cli(*args, "--wait", "240")
    code, out, output = finish(first, seen)
    assert code == 0, output
    assert sorted(json.loads(out)["restarted"]) == sorted(four.ips)
    assert json.loads(second.stdout)["restarted"] == []
    assert "waiting for the admin-node lock held by" in flat(second.stderr)
    assert four.voters() == sorted(url(ip) for ip in four.ips)


def test_a_holder_killed_with_sigkill_on_this_admin_node_is_seen_gone_at_once(
    four: Cluster,
) -> None:
    holder = start("create", "-i", str(four.inventory), "-l", ",".join(four.ips))
    wait_for_line(holder, "lock held: /etcdsop/lock/etcd")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    # Its pid names no process in the pid namespace it ran in (ours): no need to wait
    # out its lease.
    now = four.cli("create", "-l", ",".join(four.ips))
    assert f"pid {holder.pid}" in flat(now.stderr) and "is gone" in flat(now.stderr), now.stderr


def test_a_crashed_holder_elsewhere_frees_the_lock_when_its_lease_expires(
    four: Cluster,
) -> None:
    # A holder on another admin node that stopped renewing: its lease alone can tell.
    c = four.client()
    lease = c.call("/v3/lease/grant", {"TTL": 15})["ID"]
    other = {"host": "admin-2", "user": "ops", "pid": os.getpid(), "command": "etcdsop add"}
    other |= {"started": "2026-12-03T00:00:00+00:00", "token": "0", "pid_space": "elsewhere"}
    c.call(
        "/v3/kv/put",
        {"key": b64("/etcdsop/lock/etcd"), "value": b64(json.dumps(other)), "lease": lease},
    )
    now = four.cli("create", "-l", ",".join(four.ips), check=False)
    assert now.returncode == 3 and "is locked by ops@admin-2" in flat(now.stderr), now.stderr
    later = four.cli("create", "-l", ",".join(four.ips), "--wait", "60")
    assert "expired (its holder stopped renewing it" in flat(later.stderr), later.stderr


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_audit_trail_records_every_changing_command_with_secrets_masked(
    four: Cluster,
) -> None:
    # Every way to spell -e: the option's value next, attached, after `=`, after flags.
    given = [f"-eetcd_root_password={PASSWORD}", "--extra-vars=pg_etcd_password=NotInTheLog.41"]
    given += ["-e", "pg_etcd_password=NotInTheLog.42", "--json"]
    four.cli("create", "-l", ",".join(four.ips), *given)
    four.cli("create", "--dry-run", "-l", ",".join(four.ips))  # read-only: no lock, no line
    refused = four.cli("rm", four.ips[0], "-y", "-e", "etcd_safeguard=true", check=False)
    assert refused.returncode == 3
    records = json.loads(four.cli("log", "-n", "3", "--json").stdout)
    assert [r["outcome"] for r in records] == ["ok", "ok", "refused"]  # make's create first
    assert "pg_etcd_password=******" in records[1]["command"]
    assert "-eetcd_root_password=******" in records[1]["command"]
    assert "--extra-vars=pg_etcd_password=******" in records[1]["command"]
    log = four.inventory.parent / "files" / "log" / "etcdsop.jsonl"
    assert "NotInTheLog" not in log.read_text() and PASSWORD not in log.read_text()
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    table = four.cli("log").stdout
    assert "refused" in table and "etcdsop rm" in table
