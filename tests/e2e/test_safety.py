"""The SOP paths that could hurt a cluster (issue: any host IP, any size, any admin dir).

Each test is named after its scenario and asserts what the cluster really looks
like afterwards: the member list, health, keys, files and units on the hosts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import Bed, run_cli, spawn
from tests.e2e.test_create import block_port, client, tls

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdApiError, EtcdClient, MemberInfo
from etcdsop.pki import Pki

pytestmark = pytest.mark.e2e

KEYS = {f"/app/safety/{i:03d}": f"value-{i}" for i in range(200)}


class Cluster:
    def __init__(self, bed: Bed, inventory: Path, ips: list[str]) -> None:
        self.bed, self.inventory, self.ips = bed, inventory, ips

    def client(self, ips: list[str] | None = None) -> EtcdClient:
        return client(self.inventory, ips or self.ips)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "-i", str(self.inventory), check=check, timeout=timeout)

    def members(self, via: list[str] | None = None) -> list[MemberInfo]:
        return sorted(self.client(via).member_list(), key=lambda m: m.peer_urls[0])

    def voters(self, via: list[str] | None = None) -> list[str]:
        """Client URLs of started voters, sorted."""
        return sorted(m.client_urls[0] for m in self.members(via) if m.started and not m.is_learner)

    def write_keys(self) -> None:
        c = self.client()
        for key, value in KEYS.items():
            c.put(key, value)

    def assert_keys(self, ips: list[str]) -> None:
        assert self.client(ips).get_prefix("/app/safety/") == {
            k: v.encode() for k, v in KEYS.items()
        }


def make(
    bed: Bed, tmp_path: Path, members: list[str], started: list[str], **vars_: object
) -> Cluster:
    inventory = bed.inventory(tmp_path, members, group_vars=dict(vars_))
    run_cli("create", "-i", str(inventory), "-l", ",".join(started))
    cluster = Cluster(bed, inventory, started)
    cluster.write_keys()
    return cluster


def flat(text: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(text.split())


def url(ip: str, port: int = 2379) -> str:
    return f"https://{ip}:{port}"


def invocation_ids(bed: Bed, ips: list[str]) -> dict[str, str]:
    """systemd's InvocationID changes at every (re)start, however fast."""
    return {
        ip: out.strip()
        for ip, out in bed.each(ips, "systemctl show -p InvocationID --value etcd").items()
    }


class Writer:
    """Puts a key every 50 ms through the given endpoints; counts every outcome."""

    def __init__(self, cluster: Cluster, ips: list[str]) -> None:
        self.client = cluster.client(ips)
        self.ok = 0
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.client.put(f"/app/writer/{i:05d}", "x")
                self.ok += 1
            except ClusterError as exc:
                self.refused.append(exc.message)
            i += 1
            self.stop.wait(0.05)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def run_until_line(
    args: list[str], pattern: str, sig: int, timeout: float = 180
) -> tuple[int, str]:
    """Run the real command, send `sig` right after it prints a line matching `pattern`."""
    proc = spawn(*args)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        lines.append(line)
        if re.search(pattern, line):
            proc.send_signal(sig)
            break
        if time.monotonic() > deadline:
            break
    rest = proc.stderr.read()  # what the loop's buffer holds is only in this file object
    proc.wait(timeout=timeout)
    return proc.returncode, "".join(lines) + rest


# -- 1. the lowest IP is not special ----------------------------------------------------
def test_replace_the_lowest_ip_member_with_rm_then_add(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    cluster = make(clean, tmp_path, ips, ips)
    cluster.cli("rm", ips[0], "-y")
    assert cluster.voters(ips[1:]) == [url(ips[1]), url(ips[2])]
    clean.wipe([ips[0]])  # a replaced node comes back empty
    cluster.cli("add", ips[0], "-y")
    members = cluster.members(ips[1:])
    assert [m.started and not m.is_learner for m in members] == [True] * 3
    assert cluster.voters(ips[1:]) == sorted(url(ip) for ip in ips)
    cluster.assert_keys([ips[0]])
    assert cluster.cli("status").returncode == 0


def test_create_without_the_lowest_ip_host_enables_auth(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    inventory = clean.inventory(tmp_path, ips)
    run_cli("create", "-i", str(inventory), "-l", f"{ips[1]},{ips[2]}")
    anonymous = client(inventory, ips[1:], user=None, password=None)
    with pytest.raises(EtcdApiError, match="user name is empty"):
        anonymous.put("/open", "door")
    assert client(inventory, ips[1:]).auth_enabled()
    # The re-run is as quiet as on any cluster (the lowest IP still answers nothing).
    again = run_cli("create", "-i", str(inventory), "-l", f"{ips[1]},{ips[2]}")
    assert "auth: already enabled" in again.stderr


# -- 2. joins through create take add's path --------------------------------------------
def test_two_hosts_joined_at_once_with_etcd_init_existing(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:4]
    cluster = make(clean, tmp_path, ips, ips[:2])
    cluster.cli("create", "-l", f"{ips[2]},{ips[3]}", "-e", "etcd_init=existing")
    members = cluster.members(ips[:2])
    assert len(members) == 4
    assert all(m.started and not m.is_learner for m in members), members
    cluster.assert_keys([ips[3]])


def test_sop_manual_path_verbatim_announce_learner_create_promote(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips[:1])
    # The SOP, on the first node, with the etcdctl environment etcdsop wrote there.
    clean.ssh(
        ips[0],
        f"bash -lc 'etcdctl member add etcd-2 --learner=true --peer-urls=https://{ips[1]}:2380'",
    )
    announced = [m for m in cluster.members() if not m.started]
    assert len(announced) == 1 and announced[0].is_learner

    cluster.cli("create", "-l", ips[1], "-e", "etcd_init=existing")
    members = cluster.members()
    assert len(members) == 2, "the announced member was added a second time"
    joined = next(m for m in members if m.id == announced[0].id)
    assert joined.started and joined.is_learner  # a learner stays one until promoted

    cluster.cli("promote", ips[1])
    assert cluster.voters() == sorted(url(ip) for ip in ips)
    cluster.assert_keys([ips[1]])


def test_a_voter_announced_by_hand_on_a_1_member_cluster_is_started(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips[:1])
    # Without --learner: the quorum is 2 at once and waits for this member.
    clean.ssh(ips[0], f"bash -lc 'etcdctl member add etcd-2 --peer-urls=https://{ips[1]}:2380'")
    cluster.cli("create", "-l", ips[1], "-e", "etcd_init=existing")
    assert cluster.voters() == sorted(url(ip) for ip in ips)
    assert all(cluster.client().health(url(ip)) for ip in ips)
    cluster.assert_keys([ips[1]])


# -- 3. a rollback never costs quorum ---------------------------------------------------
def test_grow_one_member_onto_a_host_whose_client_port_is_taken(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips[:1])
    block_port(clean, ips[1], 2379)
    try:
        with Writer(cluster, ips[:1]) as writer:
            add = cluster.cli("add", ips[1], "-y", check=False)
            join = cluster.cli("create", "-l", ips[1], "-e", "etcd_init=existing", check=False)
    finally:
        clean.ssh(ips[1], "systemctl stop etcdsop-blocker", check=False)
    for proc in (add, join):
        assert proc.returncode == 4, proc.stderr
        assert "rolled back, member list as before" in flat(proc.stderr), proc.stderr
    assert writer.ok > 20 and writer.refused == []
    members = cluster.members()
    assert [(m.name, m.is_learner) for m in members] == [("etcd-1", False)]
    assert clean.ssh(ips[1], "test -e /data/etcd/member", check=False).returncode != 0
    cluster.assert_keys(ips[:1])


def test_promoted_member_interrupted_in_its_final_wait_on_a_1_to_2_cluster(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips[:1])
    code, output = run_until_line(
        ["add", ips[1], "-y", "-i", str(cluster.inventory)],
        r"promoted [0-9a-f]+ to voter",
        signal.SIGINT,
    )
    assert code == 130, output
    assert "a voter already and is kept" in flat(output), output
    # Both voters run: the quorum of 2 holds, nothing was stopped or wiped.
    assert cluster.voters() == sorted(url(ip) for ip in ips)
    assert all(cluster.client().health(url(ip)) for ip in ips)
    cluster.client().put("/app/after", "ok")
    cluster.assert_keys([ips[1]])
    rerun = cluster.cli("add", ips[1], "-y", "--json")
    assert '"skipped": [\n    "' + ips[1] in rerun.stdout


# -- 5. an admin directory without the cluster's PKI ------------------------------------
def test_copied_inventory_in_another_directory_changes_nothing(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    first = tmp_path / "admin-1"
    first.mkdir()
    cluster = make(clean, first, clean.ips[:4], ips)
    second = tmp_path / "admin-2"
    second.mkdir()
    shutil.copy(cluster.inventory, second / "pigsty.yml")
    ca_before = clean.each(ips, "sha256sum /etc/etcd/ca.crt")
    units_before = invocation_ids(clean, ips)

    spare = clean.ips[3]  # in the inventory, not a member: -l on it alone
    cases = (
        ["create", "--dry-run", "-l", ",".join(ips)],
        ["create", "-l", ",".join(ips)],
        ["create", "-l", spare, "-e", "etcd_init=existing"],
        ["rm", ips[2], "-y"],
        ["rm", "-y"],
    )
    for args in cases:
        proc = run_cli(*args, "-i", str(second / "pigsty.yml"), check=False)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "files/pki" in flat(proc.stderr), proc.stderr
    assert not (second / "files" / "pki" / "ca").exists()
    assert clean.ssh(spare, "test -e /etc/etcd/etcd.conf", check=False).returncode != 0
    assert clean.each(ips, "sha256sum /etc/etcd/ca.crt") == ca_before
    assert invocation_ids(clean, ips) == units_before
    assert cluster.voters() == sorted(url(ip) for ip in ips)

    # A second admin directory with a copy of files/ works as the first one.
    shutil.copytree(first / "files" / "pki", second / "files" / "pki")
    status = run_cli("status", "-i", str(second / "pigsty.yml"))
    assert status.returncode == 0


# -- 6. rm on a host that is not a member -----------------------------------------------
FOREIGN = (
    "mkdir -p /var/lib/etcd/default/member/snap /var/lib/etcd/default/member/wal && "
    "echo precious > /var/lib/etcd/default/member/snap/db && "
    "rm -rf /etc/etcd /data/etcd"
)


def test_rm_of_a_non_member_holding_foreign_etcd_data(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:4]
    cluster = make(clean, tmp_path, ips, ips[:3])
    clean.ssh(ips[3], FOREIGN)
    proc = cluster.cli("rm", ips[3], "-y", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "/var/lib/etcd holding default" in flat(proc.stderr), proc.stderr
    found = clean.ssh(ips[3], "cat /var/lib/etcd/default/member/snap/db").stdout
    assert found == "precious\n"
    assert len(cluster.members()) == 3


def test_rm_of_a_non_member_running_a_standalone_etcd(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:4]
    cluster = make(clean, tmp_path, ips, ips[:3])
    # Debian's own etcd (its unit, /var/lib/etcd/default), with a key of its own.
    standalone = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379"
    clean.ssh(
        ips[3],
        f"rm -rf /etc/etcd /data/etcd && systemctl start etcd && {standalone} put /mine 1",
    )
    try:
        for extra in ([], ["-e", "etcd_rm_data=false"]):
            proc = cluster.cli("rm", ips[3], "-y", *extra, check=False)
            assert proc.returncode == 3, proc.stderr
            assert "an etcd running without /etc/etcd/etcd.conf" in flat(proc.stderr)
        assert clean.ssh(ips[3], "systemctl is-active etcd").stdout.strip() == "active"
        assert clean.ssh(ips[3], f"{standalone} get /mine --print-value-only").stdout == "1\n"
    finally:
        clean.ssh(ips[3], "systemctl stop etcd; rm -rf /var/lib/etcd/default", check=False)


def test_rm_when_the_inventory_peer_url_no_longer_matches_and_a_wiped_member(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips)
    # The inventory's peer port was edited: the member is not found by its peer URL.
    proc = cluster.cli("rm", ips[1], "-y", "-e", "etcd_peer_port=2381", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "does not match the cluster" in flat(proc.stderr), proc.stderr
    assert cluster.voters() == sorted(url(ip) for ip in ips)
    assert clean.ssh(ips[1], "test -d /data/etcd/member", check=False).returncode == 0
    # A member whose data dir is gone is never started empty: rm, then add.
    clean.ssh(ips[1], "systemctl stop etcd && rm -rf /data/etcd/member")
    proc = cluster.cli("create", "-l", ips[1], check=False)
    assert proc.returncode == 3 and "holds no etcd data" in flat(proc.stderr), proc.stderr
    assert clean.ssh(ips[1], "systemctl is-active etcd", check=False).stdout.strip() != "active"


# -- 7. restarts are quorum-guarded in create too -----------------------------------------
def test_create_with_a_changed_runtime_key_and_one_member_down(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    cluster = make(clean, tmp_path, ips, ips)
    clean.ssh(ips[2], "systemctl stop etcd")
    conf_before = clean.each(ips[:2], "sha256sum /etc/etcd/etcd.conf")
    units_before = invocation_ids(clean, ips[:2])
    proc = cluster.cli(
        "create", "-l", f"{ips[0]},{ips[1]}", "-e", "etcd_heartbeat_interval=150", check=False
    )
    assert proc.returncode == 3, proc.stderr
    assert "would lose its quorum" in flat(proc.stderr) and "nothing was changed" in flat(
        proc.stderr
    )
    assert invocation_ids(clean, ips[:2]) == units_before
    assert clean.each(ips[:2], "sha256sum /etc/etcd/etcd.conf") == conf_before
    cluster.assert_keys(ips[:2])


# -- 8. the catch-up is bounded by --promote-timeout ------------------------------------
def test_learner_catch_up_outlasting_timeout_but_not_promote_timeout_joins(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips[:1])
    big = cluster.client()
    for i in range(24):  # 24 MiB the new member must receive
        big.put(f"/app/blob/{i:02d}", os.urandom(1 << 20))
    veth = host_veth(clean, ips[1])
    # Traffic into the joining host at 16 Mbit/s: ~12 s to receive the data.
    subprocess.run(
        [
            "tc",
            "qdisc",
            "add",
            "dev",
            veth,
            "root",
            "tbf",
            "rate",
            "16mbit",
            "burst",
            "64kb",
            "latency",
            "2s",
        ],
        check=True,
    )
    try:
        started = time.monotonic()
        proc = cluster.cli("add", ips[1], "-y", "--timeout", "4", "--promote-timeout", "120")
        took = time.monotonic() - started
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
    assert took > 8, f"the catch-up took {took:.1f}s: not longer than --timeout, no proof"
    assert "catching up" in proc.stderr or "receive the leader's data" in proc.stderr
    assert cluster.voters() == sorted(url(ip) for ip in ips)
    assert len(cluster.client([ips[1]]).get_prefix("/app/blob/")) == 24


def host_veth(bed: Bed, ip: str) -> str:
    """The root-namespace end of a sandbox host's link (traffic into that host)."""
    seq = bed.ips.index(ip) + 1
    index = int(ip.split(".")[2])
    return f"es{index}h{seq}"


# -- 9. etcd_data must hold etcd data or nothing -------------------------------------------
def test_create_refuses_a_data_dir_holding_other_files(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:1]
    clean.ssh(ips[0], "mkdir -p /data/etcd && echo 15 > /data/etcd/PG_VERSION")
    inventory = clean.inventory(tmp_path, ips)
    proc = run_cli("create", "-i", str(inventory), check=False)
    assert proc.returncode == 3, proc.stderr
    assert "holds no etcd data (PG_VERSION)" in flat(proc.stderr), proc.stderr
    kept = clean.ssh(ips[0], "stat -c '%U %a' /data/etcd; cat /data/etcd/PG_VERSION").stdout
    assert kept == "root 755\n15\n"
    assert clean.ssh(ips[0], "test -e /etc/etcd/etcd.conf", check=False).returncode != 0


# -- 10. security defaults --------------------------------------------------------------
def test_peer_port_refuses_a_tls_client_without_a_ca_signed_certificate(
    clean: Bed, tmp_path: Path
) -> None:
    ips = clean.ips[:2]
    cluster = make(clean, tmp_path, ips, ips, etcd_client_cert_auth=True)
    files = tls(cluster.inventory)

    def answer(cert: tuple[Path, Path] | None) -> str:
        context = ssl.create_default_context(cafile=str(files.ca_cert))
        context.check_hostname = False
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        try:
            with (
                socket.create_connection((ips[0], 2380), timeout=5) as raw,
                context.wrap_socket(raw) as conn,
            ):
                conn.sendall(b"GET /version HTTP/1.0\r\n\r\n")
                return conn.recv(200).decode(errors="replace")
        except (ssl.SSLError, ConnectionError) as exc:  # TLS 1.3 refuses on the first read
            return f"refused: {exc}"

    other = Pki(tmp_path / "other-pki")
    other.ensure_admin()  # a client certificate from a CA the cluster does not trust
    other_cert = (
        tmp_path / "other-pki/etcdsop/admin.crt",
        tmp_path / "other-pki/etcdsop/admin.key",
    )
    assert answer(None).startswith("refused"), "peer port served a client without a cert"
    assert answer(other_cert).startswith("refused"), "peer port served another CA's cert"
    assert "HTTP/1" in answer((files.client_cert, files.client_key))
    conf = yaml.safe_load(clean.ssh(ips[0], "cat /etc/etcd/etcd.conf").stdout)
    assert conf["peer-transport-security"]["client-cert-auth"] is True
    # etcd_client_cert_auth: the client port too; the CN-less admin cert still works.
    assert conf["client-transport-security"]["client-cert-auth"] is True
    assert cluster.cli("status").returncode == 0


def test_status_reports_auth_disabled_and_create_enables_it(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:1]
    cluster = make(clean, tmp_path, ips, ips)
    root = cluster.client()
    root.call("/v3/auth/disable", {})
    status = cluster.cli("status", check=False)
    assert status.returncode == 2 and "auth is disabled" in status.stdout + status.stderr
    cluster.cli("create")
    assert cluster.cli("status").returncode == 0
    assert client(cluster.inventory, ips, user=None, password=None).auth_enabled()


@pytest.fixture(autouse=True)
def _no_leftover_shaping(clean: Bed) -> Iterator[None]:
    yield
    for ip in clean.ips:
        subprocess.run(
            ["tc", "qdisc", "del", "dev", host_veth(clean, ip), "root"],
            check=False,
            capture_output=True,
        )
