"""`etcdsop create` on real hosts: TLS, RBAC, files, idempotence, rolling restart, join."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.e2e.conftest import ETCD, PASSWORD, Bed, run_cli

from etcdsop.etcd import EtcdApiError, EtcdClient, TlsFiles
from etcdsop.pki import cert_sans

pytestmark = pytest.mark.e2e


def tls(inventory: Path) -> TlsFiles:
    pki = inventory.parent / "files" / "pki"
    return TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )


def client(
    inventory: Path, ips: list[str], *, user: str | None = "root", password: str | None = PASSWORD
) -> EtcdClient:
    return EtcdClient(
        [f"https://{ip}:2379" for ip in ips], tls(inventory), user=user, password=password
    )


def unit_times(bed: Bed, ips: list[str]) -> dict[str, tuple[str, int, int]]:
    """(InvocationID, ActiveEnter, InactiveEnter monotonic usec) of etcd.service per host.

    The InvocationID changes at every start however fast; the monotonic stamps are in
    microseconds on the one kernel clock all sandbox hosts share, so they order events
    across hosts (a rounded wall-clock second could not).
    """
    outs = bed.each(
        ips,
        "systemctl show -p InvocationID -p ActiveEnterTimestampMonotonic "
        "-p InactiveEnterTimestampMonotonic etcd",
    )
    times = {}
    for ip, text in outs.items():
        values = dict(line.split("=", 1) for line in text.strip().splitlines())
        times[ip] = (
            values.get("InvocationID", ""),
            int(values.get("ActiveEnterTimestampMonotonic") or 0),
            int(values.get("InactiveEnterTimestampMonotonic") or 0),
        )
    return times


@pytest.fixture
def trio(clean: Bed, tmp_path: Path) -> tuple[Bed, Path, list[str]]:
    ips = clean.ips[:3]
    return clean, clean.inventory(tmp_path, ips), ips


def test_create_three_members_tls_rbac_files(trio: tuple[Bed, Path, list[str]]) -> None:
    bed, inventory, ips = trio
    proc = run_cli("create", "-i", str(inventory), "--json")
    result = json.loads(proc.stdout)
    assert sorted(result["started"]) == sorted(ips)
    assert result["auth"] == "enabled"

    root = client(inventory, ips)
    members = root.member_list()
    assert sorted(m.name for m in members) == ["etcd-1", "etcd-2", "etcd-3"]
    assert all(m.started and not m.is_learner for m in members)
    assert sorted(m.peer_urls[0] for m in members) == sorted(f"https://{ip}:2380" for ip in ips)
    # Enabled (it comes back after a reboot) with our unit, not the package's.
    enabled = bed.each(ips, "systemctl is-enabled etcd; systemctl show -p FragmentPath etcd")
    assert set(enabled.values()) == {"enabled\nFragmentPath=/etc/systemd/system/etcd.service\n"}

    root.put("/etcdsop/e2e", "hello")
    assert client(inventory, ips[2:]).get("/etcdsop/e2e") == b"hello"
    with pytest.raises(EtcdApiError, match="user name is empty"):
        client(inventory, ips, user=None).put("/etcdsop/e2e", "anon")
    with pytest.raises(EtcdApiError, match="authentication failed"):
        client(inventory, ips, password="wrong").put("/etcdsop/e2e", "bad")

    # Every node file: owner, group, mode; the password file bare; SANs of the node cert.
    listing = bed.ssh(
        ips[1],
        "stat -c '%n %U:%G %a' /etc/etcd /var/lib/etcd /data/etcd "
        "/etc/etcd/etcd.conf /etc/etcd/etcd.pass /etc/etcd/ca.crt "
        "/etc/etcd/server.crt /etc/etcd/server.key "
        "/etc/systemd/system/etcd.service /etc/profile.d/etcdctl.sh",
    ).stdout
    assert dict(line.split(" ", 1) for line in listing.strip().splitlines()) == {
        "/etc/etcd": "etcd:etcd 750",
        "/var/lib/etcd": "etcd:etcd 770",
        "/data/etcd": "etcd:etcd 700",
        "/etc/etcd/etcd.conf": "etcd:etcd 644",
        "/etc/etcd/etcd.pass": "root:etcd 640",
        "/etc/etcd/ca.crt": "etcd:etcd 644",
        "/etc/etcd/server.crt": "etcd:etcd 644",
        "/etc/etcd/server.key": "etcd:etcd 600",
        "/etc/systemd/system/etcd.service": "root:root 644",
        "/etc/profile.d/etcdctl.sh": "root:root 644",
    }
    assert bed.ssh(ips[1], "cat /etc/etcd/etcd.pass").stdout == PASSWORD
    conf = bed.ssh(ips[1], "cat /etc/etcd/etcd.conf").stdout
    assert "name: etcd-2\n" in conf
    assert f"listen-client-urls: https://{ips[1]}:2379,https://127.0.0.1:2379\n" in conf
    node_cert = bed.ssh(ips[1], "cat /etc/etcd/server.crt").stdout.encode()
    assert cert_sans(node_cert) == {"IP:127.0.0.1", "DNS:localhost", f"IP:{ips[1]}", "DNS:etcd-2"}
    key_mode = (inventory.parent / "files/pki/etcd/etcd-2.key").stat().st_mode & 0o777
    assert key_mode == 0o600

    # The operator's etcdctl environment works as root on the node, password from the file.
    out = bed.ssh(
        ips[0],
        "bash -lc 'etcdctl put /etcdsop/ctl v1 && etcdctl get "
        "--print-value-only /etcdsop/ctl && etcdctl member list'",
    ).stdout
    assert out.splitlines()[:2] == ["OK", "v1"]
    assert out.count("started") == 3


def test_rerun_changes_and_restarts_nothing(trio: tuple[Bed, Path, list[str]]) -> None:
    bed, inventory, ips = trio
    run_cli("create", "-i", str(inventory))
    before = unit_times(bed, ips)
    proc = run_cli("create", "-i", str(inventory), "--json")
    result = json.loads(proc.stdout)
    assert [h["files"] for h in result["hosts"]] == [[], [], []]
    assert {h["service"] for h in result["hosts"]} == {"none"}
    assert result["restarted"] == [] and result["started"] == []
    assert result["auth"] == "already enabled"
    assert unit_times(bed, ips) == before


def test_changed_heartbeat_restarts_one_at_a_time_and_keeps_data(
    trio: tuple[Bed, Path, list[str]],
) -> None:
    bed, inventory, ips = trio
    run_cli("create", "-i", str(inventory))
    root = client(inventory, ips)
    for i in range(50):
        root.put(f"/etcdsop/keep/{i}", f"v{i}")
    before = unit_times(bed, ips)

    # Writes keep succeeding through the rolling restart: quorum is never lost.
    failures: list[str] = []
    written = [0]
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                client(inventory, ips).put("/etcdsop/live", str(n))
                written[0] += 1
            except Exception as exc:  # counted and asserted on, whatever it is
                failures.append(f"{type(exc).__name__}: {exc}")
            n += 1
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        proc = run_cli(
            "create",
            "-i",
            str(inventory),
            "-e",
            "etcd_heartbeat_interval=200",
            "-e",
            "etcd_election_timeout=2000",
            "--json",
        )
    finally:
        stop.set()
        thread.join()
    result = json.loads(proc.stdout)
    assert sorted(result["restarted"]) == sorted(ips)
    after = unit_times(bed, ips)
    order = result["restarted"]
    for ip in ips:
        assert after[ip][0] != before[ip][0], f"{ip} was not restarted"
    # One at a time: each member stops only after the previous one is active again.
    for prev, nxt in itertools.pairwise(order):
        assert after[nxt][2] >= after[prev][1], f"{nxt} stopped before {prev} was back"
    assert "heartbeat-interval: 200" in bed.ssh(ips[0], "cat /etc/etcd/etcd.conf").stdout
    assert client(inventory, ips).get_prefix("/etcdsop/keep/") == {
        f"/etcdsop/keep/{i}": f"v{i}".encode() for i in range(50)
    }
    assert len(failures) <= 2, failures  # a leader change may cost one in-flight write
    assert written[0] >= 5, f"the writer wrote only {written[0]} keys: it did not run"


def test_unreachable_host_stops_before_any_change(clean: Bed, tmp_path: Path) -> None:
    ips = [*clean.ips[:2], "198.18.2.250"]  # nobody answers there
    inventory = clean.inventory(tmp_path, ips)
    proc = run_cli("create", "-i", str(inventory), check=False, timeout=120)
    assert proc.returncode == 2
    assert "198.18.2.250" in proc.stderr and "nothing was changed" in proc.stderr
    assert "Traceback" not in proc.stderr
    for ip in ips[:2]:
        assert clean.ssh(ip, "test -e /etc/etcd", check=False).returncode != 0


def test_dry_run_changes_nothing(trio: tuple[Bed, Path, list[str]]) -> None:
    bed, inventory, ips = trio
    proc = run_cli("create", "-i", str(inventory), "--dry-run", "--json")
    result = json.loads(proc.stdout)
    assert {h["service"] for h in result["hosts"]} == {"start"}
    assert "+name: etcd-1" in proc.stderr  # the diff of etcd.conf is shown
    assert PASSWORD not in proc.stderr + proc.stdout
    for ip in ips:
        assert bed.ssh(ip, "test -e /etc/etcd", check=False).returncode != 0
    assert not (inventory.parent / "files").exists()

    run_cli("create", "-i", str(inventory))
    before = unit_times(bed, ips)
    conf = bed.ssh(ips[0], "cat /etc/etcd/etcd.conf").stdout
    proc = run_cli(
        "create",
        "-i",
        str(inventory),
        "--dry-run",
        "--json",
        "-e",
        "etcd_heartbeat_interval=300",
        "-e",
        "etcd_election_timeout=3000",
    )
    result = json.loads(proc.stdout)
    assert {h["service"] for h in result["hosts"]} == {"restart"}
    assert "+heartbeat-interval: 300" in proc.stderr
    assert bed.ssh(ips[0], "cat /etc/etcd/etcd.conf").stdout == conf
    assert unit_times(bed, ips) == before


def test_join_fourth_member_with_etcd_init_existing(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:4]
    inventory = clean.inventory(tmp_path, ips)
    run_cli("create", "-i", str(inventory), "-l", ",".join(ips[:3]))
    root = client(inventory, ips[:3])
    root.put("/etcdsop/before-join", "x")
    assert len(root.member_list()) == 3

    # Without etcd_init=existing the tool refuses and says how to join.
    proc = run_cli("create", "-i", str(inventory), "-l", ips[3], check=False)
    assert proc.returncode == 3 and "etcd_init=existing" in proc.stderr

    proc = run_cli(
        "create", "-i", str(inventory), "-l", ips[3], "-e", "etcd_init=existing", "--json"
    )
    assert json.loads(proc.stdout)["joined"] == [ips[3]]
    members = root.member_list()
    assert len(members) == 4 and all(m.started and not m.is_learner for m in members)
    assert client(inventory, [ips[3]]).get("/etcdsop/before-join") == b"x"
    conf = clean.ssh(ips[3], "cat /etc/etcd/etcd.conf").stdout
    assert "initial-cluster-state: existing" in conf


def test_password_never_in_any_process_argv(trio: tuple[Bed, Path, list[str]]) -> None:
    bed, inventory, ips = trio
    # A watcher on every node samples all command lines during create; the pattern
    # reaches it on stdin so the watcher's own argv stays clean.
    watcher = (
        "cat > /tmp/etcdsop-pw; : > /tmp/etcdsop-hits; rm -f /tmp/etcdsop-stop; "
        "(while [ ! -e /tmp/etcdsop-stop ]; do for f in /proc/[0-9]*/cmdline; do "
        "tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -F -f /tmp/etcdsop-pw "
        ">> /tmp/etcdsop-hits; done) >/dev/null 2>&1 &"
    )
    for ip in ips:
        bed.ssh(ip, watcher, stdin=PASSWORD)
    try:
        outputs = [
            run_cli("create", "-i", str(inventory), "-v", "--json"),
            run_cli("create", "-i", str(inventory), "-v", "-e", "etcd_heartbeat_interval=150"),
        ]
    finally:
        bed.each(ips, "touch /tmp/etcdsop-stop; sleep 0.5")
    for ip in ips:
        assert bed.ssh(ip, "cat /tmp/etcdsop-hits").stdout == "", f"password seen on {ip}"
    # Nor in what the tool prints, even with -v (every remote command) and --json.
    for proc in outputs:
        assert "$ sh -c" in proc.stderr  # -v did show the commands
        assert PASSWORD not in proc.stdout + proc.stderr


def test_create_refuses_a_host_of_another_cluster(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = clean.inventory(other_dir, ips[2:], group_vars={"etcd_cluster": "other"})
    run_cli("create", "-i", str(other))
    other_conf = clean.ssh(ips[2], "cat /etc/etcd/etcd.conf").stdout

    inventory = clean.inventory(tmp_path, ips)
    proc = run_cli("create", "-i", str(inventory), check=False)
    assert proc.returncode == 3, proc.stderr
    assert (
        ips[2] in proc.stderr
        and "'other'" in proc.stderr
        and "nothing was changed" in (proc.stderr)
    )
    # Nothing changed anywhere: the other cluster still runs, the new hosts are untouched.
    assert clean.ssh(ips[2], "cat /etc/etcd/etcd.conf").stdout == other_conf
    assert clean.ssh(ips[2], "systemctl is-active etcd").stdout.strip() == "active"
    for ip in ips[:2]:
        assert clean.ssh(ip, "test -e /etc/etcd", check=False).returncode != 0


def test_status_reports_members_and_fails_when_unhealthy(
    trio: tuple[Bed, Path, list[str]],
) -> None:
    bed, inventory, ips = trio
    run_cli("create", "-i", str(inventory))
    data = json.loads(run_cli("status", "-i", str(inventory), "--json").stdout)
    assert data["healthy"] is True
    assert (data["voters"], data["quorum"], data["tolerates"]) == (3, 2, 1)
    assert sorted(m["name"] for m in data["members"]) == ["etcd-1", "etcd-2", "etcd-3"]
    assert sum(m["leader"] for m in data["members"]) == 1
    assert all(m["version"].startswith(f"{ETCD}.") and m["raft_index"] > 0 for m in data["members"])
    assert data["cluster_version"] == f"{ETCD}.0"

    bed.ssh(ips[2], "systemctl stop etcd")
    proc = run_cli("status", "-i", str(inventory), "--json", check=False)
    assert proc.returncode == 2
    data = json.loads(proc.stdout)
    assert data["healthy"] is False and data["tolerates"] == 0
    assert [m["healthy"] for m in data["members"] if m["name"] == "etcd-3"] == [False]
    assert [m["problem"] for m in data["members"] if m["name"] == "etcd-3"] == ["down: refused"]

    # The table an operator reads at 100 columns: every name and client URL whole.
    proc = run_cli("status", "-i", str(inventory), check=False, env={"COLUMNS": "100"})
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    for seq, ip in enumerate(ips, start=1):
        row = next((x for x in lines if x.startswith(f"etcd-{seq} ") or f" etcd-{seq} " in x), "")
        assert f"https://{ip}:2379" in row, proc.stdout
    assert "down: refused" in next(x for x in lines if " etcd-3 " in x or x.startswith("etcd-3"))
    assert all(len(x) <= 100 for x in lines), proc.stdout

    # --watch, piped: one table per refresh; Ctrl-C ends it with 130 and no traceback.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "etcdsop", "status", "--watch", "0.5", "-i", str(inventory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    guard = threading.Timer(120, watcher.kill)  # a hung watch fails the test, never hangs it
    guard.start()
    seen: list[str] = []
    assert watcher.stdout is not None
    while sum("Ctrl-C to stop" in x for x in seen) < 2:
        line = watcher.stdout.readline()
        assert line, "".join(seen)
        seen.append(line)
    watcher.send_signal(signal.SIGINT)
    _, errors = watcher.communicate(timeout=60)
    guard.cancel()
    assert watcher.returncode == 130, errors
    assert "Traceback" not in errors and "error" not in errors
    assert any("+index" in x for x in seen)  # the second table shows raft index deltas


# SO_REUSEADDR: the port may still have TIME_WAIT connections of an earlier etcd.
BLOCKER = "import socket, sys, time\ns = socket.socket()\n"
BLOCKER += "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
BLOCKER += "s.bind(('0.0.0.0', int(sys.argv[1])))\ns.listen()\n"
BLOCKER += "time.sleep(600)\n"


def block_port(bed: Bed, ip: str, port: int) -> None:
    """Take a port on a host so that its etcd cannot start (`systemctl stop
    etcdsop-blocker` frees it)."""
    bed.ssh(
        ip,
        "systemctl reset-failed etcdsop-blocker 2>/dev/null; cat > /tmp/etcdsop-blocker.py && "
        f"systemd-run --collect --unit=etcdsop-blocker python3 /tmp/etcdsop-blocker.py {port} "
        f"&& for i in $(seq 100); do ss -ltn | grep -q ':{port} ' && exit 0; sleep 0.1; done; "
        "exit 1",
        stdin=BLOCKER,
    )


def block_peer_port(bed: Bed, ip: str) -> None:
    block_port(bed, ip, 2380)


def test_start_timeout_shows_journal_and_a_rerun_completes(
    trio: tuple[Bed, Path, list[str]],
) -> None:
    bed, inventory, ips = trio
    block_peer_port(bed, ips[2])
    try:
        proc = run_cli("create", "-i", str(inventory), "--timeout", "10", check=False)
    finally:
        bed.ssh(ips[2], "systemctl stop etcdsop-blocker", check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"not healthy after 10s on: etcd-3 ({ips[2]})" in proc.stderr
    assert "journalctl -u etcd" in proc.stderr and "address already in use" in proc.stderr

    data = json.loads(run_cli("create", "-i", str(inventory), "--json").stdout)
    assert data["auth"] == "enabled"
    members = client(inventory, ips).member_list()
    assert len(members) == 3 and all(m.started for m in members)


# The sandbox base keeps etcd-server's .deb in apt's cache: apt installs it with no network.
RESTORE_ETCD = (
    "test -x /usr/bin/etcd || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
    " etcd-server >/dev/null && systemctl disable --now etcd; }; rm -rf /var/lib/etcd/default"
)


def test_create_installs_etcd_when_missing_and_rm_pkg_removes_it(
    clean: Bed, tmp_path: Path
) -> None:
    ip = clean.ips[5]
    clean.ssh(ip, "ls /var/cache/apt/archives/etcd-server_*.deb && dpkg --purge etcd-server")
    try:
        assert clean.ssh(ip, "test -e /usr/bin/etcd", check=False).returncode != 0
        inventory = clean.inventory(tmp_path, [ip])

        proc = run_cli("create", "-i", str(inventory), "--json")
        assert "install etcd" in proc.stderr
        assert json.loads(proc.stdout)["started"] == [ip]
        installed = clean.ssh(ip, "dpkg-query -W -f '${Status}' etcd-server").stdout
        assert installed == "install ok installed"
        # Ours runs, not the default single-node etcd the package's postinst started.
        assert "--config-file" in clean.ssh(ip, "systemctl show -p ExecStart etcd").stdout
        members = client(inventory, [ip]).member_list()
        assert [(m.name, m.peer_urls) for m in members] == [("etcd-1", (f"https://{ip}:2380",))]

        run_cli("rm", "-i", str(inventory), "--yes", "--no-backup", "-e", "etcd_rm_pkg=true")
        assert clean.ssh(ip, "test -e /usr/bin/etcd", check=False).returncode != 0
        status = clean.ssh(ip, "dpkg-query -W -f '${Status}' etcd-server", check=False).stdout
        assert status != "install ok installed"
    finally:
        clean.ssh(ip, RESTORE_ETCD)
