"""`etcdsop add / promote / rm` on real hosts; 1000 user keys checked after every step."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.e2e.conftest import SANDBOX_DIR, Bed, run_cli
from tests.e2e.test_create import block_peer_port, client

from etcdsop import sandbox
from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient, MemberInfo
from etcdsop.snapshot import verify_snapshot
from etcdsop.waits import retry_etcd

pytestmark = [pytest.mark.e2e, pytest.mark.etcd_matrix]

KEYS = {f"/app/key/{i:04d}": f"value-{i}" for i in range(1000)}


class Cluster:
    """A live cluster created by etcdsop on the first `size` hosts of an inventory."""

    def __init__(self, bed: Bed, inventory: Path, ips: list[str]) -> None:
        self.bed, self.inventory, self.ips = bed, inventory, ips

    def client(self, ips: list[str] | None = None) -> EtcdClient:
        return client(self.inventory, ips or self.ips)

    def members(self) -> list[MemberInfo]:
        return sorted(self.client().member_list(), key=lambda m: m.peer_urls[0])

    def write_keys(self) -> None:
        c = self.client()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda kv: c.put(*kv), KEYS.items()))

    def assert_keys(self, ips: list[str] | None = None) -> None:
        got = self.client(ips).get_prefix("/app/key/")
        assert got == {k: v.encode() for k, v in KEYS.items()}

    def healthy(self) -> dict[str, bool]:
        c = self.client()
        return {m.name: c.health(m.client_urls[0]) for m in self.members() if m.client_urls}

    def cli(self, *args: str, check: bool = True, timeout: float = 300):  # type: ignore[no-untyped-def]
        return run_cli(*args, "-i", str(self.inventory), check=check, timeout=timeout)


def _cluster(bed: Bed, tmp_path: Path, members: int, size: int, **group_vars: object) -> Cluster:
    ips = bed.ips[:members]
    inventory = bed.inventory(tmp_path, ips, group_vars=dict(group_vars))
    run_cli("create", "-i", str(inventory), "-l", ",".join(ips[:size]))
    cluster = Cluster(bed, inventory, ips[:size])
    cluster.write_keys()
    return cluster


@pytest.fixture
def five(clean: Bed, tmp_path: Path) -> Iterator[Cluster]:
    """3 running members, 2 more hosts defined in the inventory (etcd_seq 4, 5)."""
    yield _cluster(clean, tmp_path, members=5, size=3)


def _watch_learner(
    cluster: Cluster, peer_url: str, seen: list[bool], stop: threading.Event
) -> None:
    c = cluster.client()
    while not stop.is_set():
        try:
            entry = next((m for m in c.member_list() if peer_url in m.peer_urls), None)
        except ClusterError:
            continue
        if entry is not None:
            seen.append(entry.is_learner)
        stop.wait(0.05)


def test_add_as_learner_then_voter_and_two_more_sequentially(five: Cluster) -> None:
    ip4, ip5 = five.bed.ips[3], five.bed.ips[4]
    seen: list[bool] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_learner, args=(five, f"https://{ip4}:2380", seen, stop)
    )
    watcher.start()
    try:
        result = json.loads(five.cli("add", ip4, "-y", "--json").stdout)
    finally:
        stop.set()
        watcher.join()
    assert [a["ip"] for a in result["added"]] == [ip4]
    assert True in seen, "the new member was never seen as a learner"
    assert seen[-1] is False
    members = five.members()
    assert len(members) == 4 and all(m.started and not m.is_learner for m in members)
    assert all(five.healthy().values())
    five.assert_keys([ip4])

    # 4 -> 5: two IPs in one call, one already a member: skipped, the other added.
    result = json.loads(five.cli("add", ip4, ip5, "-y", "--json").stdout)
    assert result["skipped"] == [ip4]
    assert [a["ip"] for a in result["added"]] == [ip5]
    assert len(five.members()) == 5 and not any(m.is_learner for m in five.members())
    five.assert_keys([ip5])
    # The existing members' etcd.conf now lists all five (file only, for a later restart).
    conf = five.bed.ssh(five.ips[0], "cat /etc/etcd/etcd.conf").stdout
    assert f"etcd-5=https://{ip5}:2380" in conf


def test_learner_stays_learner_until_promoted(five: Cluster) -> None:
    ip4 = five.bed.ips[3]
    five.cli("add", ip4, "-y", "-e", "etcd_learner=true")
    entry = next(m for m in five.members() if f"https://{ip4}:2380" in m.peer_urls)
    assert entry.started and entry.is_learner
    five.assert_keys()

    # A second add is refused while a learner is pending, naming it.
    proc = five.cli("add", five.bed.ips[4], "-y", check=False)
    assert proc.returncode == 3 and "pending member" in proc.stderr and "etcd-4" in proc.stderr

    five.cli("promote", ip4)
    entry = next(m for m in five.members() if f"https://{ip4}:2380" in m.peer_urls)
    assert not entry.is_learner
    assert all(five.healthy().values())
    five.assert_keys([ip4])


def test_failed_add_rolls_back_to_the_exact_member_list(five: Cluster) -> None:
    ip4 = five.bed.ips[3]
    block_peer_port(five.bed, ip4)
    try:
        before = [(m.id, m.name, m.is_learner) for m in five.members()]
        proc = five.cli("add", ip4, "-y", "--timeout", "15", check=False)
    finally:
        five.bed.ssh(ip4, "systemctl stop etcdsop-blocker", check=False)
    assert proc.returncode == 4, proc.stderr
    assert "rolled back" in proc.stderr and "journalctl" in proc.stderr
    assert [(m.id, m.name, m.is_learner) for m in five.members()] == before
    assert all(five.healthy().values())
    assert five.bed.ssh(ip4, "systemctl is-active etcd", check=False).stdout.strip() != "active"
    assert five.bed.ssh(ip4, "test -e /data/etcd/member", check=False).returncode != 0
    five.assert_keys()

    # With the port free again, the same command completes the job.
    five.cli("add", ip4, "-y")
    assert len(five.members()) == 4
    five.assert_keys([ip4])


def test_rm_follower_then_leader(five: Cluster) -> None:
    c = five.client()
    leader_id = c.status(f"https://{five.ips[0]}:2379").leader
    members = five.members()
    leader = next(m for m in members if m.id == leader_id)
    follower = next(m for m in members if m.id != leader_id)
    follower_ip = follower.peer_urls[0].split("//")[1].split(":")[0]
    leader_ip = leader.peer_urls[0].split("//")[1].split(":")[0]

    proc = five.cli("rm", follower_ip, "-y", "--json")
    result = json.loads(proc.stdout)
    assert [r["ip"] for r in result["removed"]] == [follower_ip]
    snapshot = Path(result["snapshot"])
    assert snapshot.stat().st_mode & 0o777 == 0o600
    verify_snapshot(snapshot)
    assert len(five.members()) == 2
    assert five.bed.ssh(follower_ip, "test -e /etc/etcd", check=False).returncode != 0
    remaining = [ip for ip in five.ips if ip != follower_ip]
    five.assert_keys(remaining)

    proc = five.cli("rm", leader_ip, "-y")
    assert "moving leadership" in proc.stderr
    members = five.members()
    assert [m.peer_urls[0] for m in members] == [
        f"https://{ip}:2380" for ip in remaining if ip != leader_ip
    ]
    five.assert_keys([ip for ip in remaining if ip != leader_ip])


def test_rm_member_of_powered_off_host(five: Cluster) -> None:
    dead = five.ips[2]
    sandbox.host_power_off(dead, state_dir=SANDBOX_DIR)
    proc = five.cli("rm", dead, "-y", "--json")
    result = json.loads(proc.stdout)
    assert result["cleanup_skipped"] == [dead]
    assert "unreachable" in proc.stderr
    assert len(five.members()) == 2
    assert all(five.healthy().values())
    five.assert_keys(five.ips[:2])

    # The host comes back (its etcd enabled, its old data there): a re-run of the same
    # rm cleans it, and the cluster is not touched again.
    sandbox.host_power_on(dead, state_dir=SANDBOX_DIR)
    assert five.bed.ssh(dead, "test -d /data/etcd/member", check=False).returncode == 0
    result = json.loads(five.cli("rm", dead, "-y", "--json").stdout)
    assert result["removed"] == [] and result["cleaned"] == [dead]
    leftovers = five.bed.ssh(
        dead, "ls -d /etc/etcd /data/etcd 2>/dev/null; systemctl is-enabled etcd", check=False
    ).stdout
    assert leftovers.strip() in ("disabled", "not-found", "")
    assert len(five.members()) == 2 and all(five.healthy().values())
    five.assert_keys(five.ips[:2])


def test_rm_unstarted_member_found_by_peer_url(five: Cluster) -> None:
    ip5 = five.bed.ips[4]
    c = five.client()
    retry_etcd(
        lambda: c.member_add([f"https://{ip5}:2380"], learner=False),
        transient=("unhealthy cluster",),
        timeout=30,
    )
    assert any(not m.started for m in five.members())
    five.cli("rm", ip5, "-y")
    assert len(five.members()) == 3 and all(m.started for m in five.members())
    five.assert_keys()


def test_rm_guards_refuse_before_touching_anything(five: Cluster) -> None:
    target = five.ips[0]
    proc = five.cli("rm", target, "-y", "-e", "etcd_safeguard=true", check=False)
    assert proc.returncode == 3
    assert "etcd-1" in proc.stderr and "-e etcd_safeguard=false" in proc.stderr
    for bad in ("10.0.0.300", "198.18.2.99", "not-an-ip"):
        proc = five.cli("rm", bad, "-y", check=False)
        assert proc.returncode == 1 and bad in proc.stderr and "Traceback" not in proc.stderr
    assert len(five.members()) == 3

    # 2 of 3 stopped: removing the running one would leave no quorum.
    five.bed.each(five.ips[1:], "systemctl stop etcd")
    proc = five.cli("rm", target, "-y", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "voters 3 (3 started, 0 healthy, quorum 2)" in proc.stderr
    five.bed.each(five.ips[1:], "systemctl start --no-block etcd")
    five.cli("status", timeout=60)  # healthy again: exit 0
    assert len(five.members()) == 3
    five.assert_keys()


def test_rm_without_ips_destroys_the_cluster(five: Cluster) -> None:
    proc = five.cli("rm", "-y", "--json")
    result = json.loads(proc.stdout)
    verify_snapshot(Path(result["snapshot"]))
    leftovers = five.bed.each(
        five.bed.ips[:5],
        "ls -d /etc/etcd /data/etcd /var/lib/etcd/member /etc/systemd/system/etcd.service "
        "/etc/profile.d/etcdctl.sh 2>/dev/null; systemctl is-active etcd; true",
    )
    assert all(out.strip() == "inactive" for out in leftovers.values()), leftovers


def test_destroy_with_a_host_powered_off_is_incomplete_until_run_again(five: Cluster) -> None:
    off = five.ips[2]
    sandbox.host_power_off(off, state_dir=SANDBOX_DIR)
    proc = five.cli("rm", "-y", "--json", check=False)
    # etcd may still run there on its data: never "removed", exit 0.
    assert proc.returncode == 2, proc.stderr
    assert f"destroy incomplete: {off} not cleaned" in proc.stderr
    snapshot = Path(json.loads(proc.stdout)["snapshot"])
    verify_snapshot(snapshot)

    sandbox.host_power_on(off, state_dir=SANDBOX_DIR)  # it boots with etcd on its data
    result = json.loads(five.cli("rm", "-y", "--json").stdout)
    assert result["cleanup_skipped"] == []
    leftovers = five.bed.each(
        five.bed.ips[:5], "ls -d /etc/etcd /data/etcd 2>/dev/null; systemctl is-active etcd; true"
    )
    assert all(out.strip() == "inactive" for out in leftovers.values()), leftovers


def test_destroy_keeping_the_data_stops_every_member_gracefully(five: Cluster) -> None:
    proc = five.cli("rm", "-y", "--json", "-e", "etcd_rm_data=false")
    verify_snapshot(Path(json.loads(proc.stdout)["snapshot"]))
    assert "data kept" in proc.stderr
    states = five.bed.each(
        five.ips, "systemctl is-active etcd; systemctl is-enabled etcd; ls /data/etcd/member"
    )
    for out in states.values():
        assert out.split()[:2] == ["inactive", "disabled"] and "wal" in out.split(), states
    # The data was left whole: started again as it was, the cluster has every key.
    five.bed.each(five.ips, "systemctl start etcd")
    retry_etcd(five.assert_keys, transient=("unhealthy cluster",), timeout=30)
