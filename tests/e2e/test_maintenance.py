"""`etcdsop defrag`, alarms in `status`, and `etcdsop check` on real hosts.

One 3-member cluster for the module, created with a 16 MiB quota so that NOSPACE is
reached in seconds; each test leaves it healthy and without alarms for the next.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.e2e.conftest import PASSWORD, Bed, run_cli

from etcdsop import snapshot
from etcdsop.etcd import EtcdApiError, EtcdClient, TlsFiles
from etcdsop.pki import Pki

pytestmark = pytest.mark.e2e

QUOTA = 16 * 1024 * 1024
VALUE = "v" * 100_000


@dataclass
class Cluster:
    bed: Bed
    inv: Path
    ips: list[str]

    @property
    def files(self) -> Path:
        return self.inv.parent / "files"

    def client(self) -> EtcdClient:
        pki = self.files / "pki"
        tls = TlsFiles(
            pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
        )
        urls = [f"https://{ip}:2379" for ip in self.ips]
        return EtcdClient(urls, tls, user="root", password=PASSWORD)

    def status(self) -> tuple[int, dict]:  # type: ignore[type-arg]
        proc = run_cli("status", "-i", str(self.inv), "--json", check=False)
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cluster(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    ips = bed.ips[:3]
    bed.wipe()
    where = tmp_path_factory.mktemp("maint")
    inv = bed.inventory(where, ips, group_vars={"etcd_quota_backend_bytes": QUOTA})
    run_cli("create", "-i", str(inv))
    conf = bed.ssh(ips[0], "grep quota-backend-bytes /etc/etcd/etcd.conf").stdout
    assert conf.strip() == f"quota-backend-bytes: {QUOTA}"
    yield Cluster(bed, inv, ips)
    bed.wipe(ips)


def test_defrag_shrinks_every_member_one_at_a_time_leader_last(cluster: Cluster) -> None:
    client = cluster.client()
    for i in range(40):
        client.put(f"/app/blob/{i}", VALUE)
    for i in range(40):
        client.call("/v3/kv/deleterange", {"key": _b64(f"/app/blob/{i}")})
    client.put("/app/kept", "still here")
    _, before = cluster.status()
    leader = next(m["name"] for m in before["members"] if m["leader"])

    proc = run_cli("defrag", "-i", str(cluster.inv), "-y", "--compact", "--json")
    result = json.loads(proc.stdout)

    members = result["members"]
    assert sorted(m["name"] for m in members) == ["etcd-1", "etcd-2", "etcd-3"]
    for m in members:  # 4 MB of deleted values handed back on every member
        assert m["db_after"] < m["db_before"] - 3_000_000, m
    # One at a time: each started after the one before it was healthy again; leader last.
    for earlier, later in itertools.pairwise(members):
        assert later["started"] >= earlier["finished"], members
    assert [m["role"] for m in members] == ["follower", "follower", "leader"]
    assert members[-1]["name"] == leader == result["leader_before"] == result["leader_after"]
    _, after = cluster.status()
    assert next(m["name"] for m in after["members"] if m["leader"]) == leader
    assert all(m["healthy"] for m in after["members"])
    assert client.get("/app/kept") == b"still here"
    # etcd's own log on each host says it defragmented, once per run.
    for ip in cluster.ips:
        log = cluster.bed.ssh(
            ip, "journalctl -u etcd --no-pager -o cat | grep -c 'finished defragment'"
        )
        assert int(log.stdout.strip()) >= 1


def test_nospace_alarm_is_cleared_by_defrag_and_writes_work_again(cluster: Cluster) -> None:
    client = cluster.client()
    refused = None
    for n in range(400):  # overwrites: the history fills the 16 MiB quota
        try:
            client.put(f"/app/fill/{n % 20}", VALUE)
        except EtcdApiError as exc:
            refused = exc.etcd_message
            break
    assert refused is not None and "database space exceeded" in refused
    code, before = cluster.status()
    assert code == 2
    assert {a["alarm"] for a in before["alarms"]} == {"NOSPACE"}
    assert all(m["problem"] == "alarm: NOSPACE" for m in before["members"])
    table = run_cli("status", "-i", str(cluster.inv), check=False, env={"COLUMNS": "100"})
    assert "alarm: NOSPACE" in table.stdout and "etcdsop defrag" in table.stdout
    # No lease, so no cluster lock: only defrag (which lifts the alarm) may go on.
    other = run_cli("create", "-i", str(cluster.inv), check=False)
    assert other.returncode == 3 and "run `etcdsop defrag` first" in other.stderr

    proc = run_cli("defrag", "-i", str(cluster.inv), "-y", "--json")
    result = json.loads(proc.stdout)

    assert result["compact_reason"] == "NOSPACE alarm" and result["compacted_to"] > 0
    assert result["disarmed"] and result["alarms_after"] == []
    code, after = cluster.status()
    assert code == 0 and after["alarms"] == []
    assert all(m["db_size"] < QUOTA for m in after["members"])
    client.put("/app/after-nospace", "written")
    assert client.get("/app/after-nospace") == b"written"


def test_check_finds_a_certificate_due_a_stopped_member_and_no_backup(
    cluster: Cluster, tmp_path: Path
) -> None:
    bed, first, third = cluster.bed, cluster.ips[0], cluster.ips[2]
    # A node certificate from the cluster's CA that ends in 10 days, on the first host.
    other = tmp_path / "pki"
    shutil.copytree(cluster.files / "pki" / "ca", other / "ca")
    short = Pki(other).ensure_node("etcd-1", first, 10)
    bed.ssh(first, "cat > /etc/etcd/server.crt", stdin=short.cert_pem.decode())
    bed.ssh(first, "cat > /etc/etcd/server.key", stdin=short.key_pem.decode())
    bed.ssh(third, "systemctl stop etcd")
    try:
        proc = run_cli("check", "-i", str(cluster.inv), "--json", check=False)
        assert proc.returncode == 2, proc.stderr
        found = json.loads(proc.stdout)["findings"]
        kinds = {(f["kind"], f["subject"]) for f in found}
        assert ("cert", f"{first}:/etc/etcd/server.crt") in kinds, found
        cert = next(f for f in found if f["kind"] == "cert")
        assert "expires in 9 day(s)" in cert["problem"] or "expires in 10 day(s)" in cert["problem"]
        assert ("member", "etcd-3") in kinds, found
        assert any(f["kind"] == "backup" for f in found), found
        lines = run_cli("check", "-i", str(cluster.inv), check=False)
        assert lines.returncode == 2
        assert len(lines.stdout.strip().splitlines()) == len(found)
        assert all("; fix: " in line for line in lines.stdout.strip().splitlines())
    finally:
        pki = cluster.files / "pki" / "etcd"
        bed.ssh(first, "cat > /etc/etcd/server.crt", stdin=(pki / "etcd-1.crt").read_text())
        bed.ssh(first, "cat > /etc/etcd/server.key", stdin=(pki / "etcd-1.key").read_text())
        bed.ssh(third, "systemctl start etcd")

    # Fixed, and a snapshot in files/backup (as `etcdsop backup` names it): clean.
    snapshot.save_snapshot(
        cluster.client(), f"https://{first}:2379", cluster.files / "backup", "etcd"
    )
    proc = run_cli("check", "-i", str(cluster.inv), "--json", check=False)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["findings"] == []


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_defrag_without_a_quorum_is_refused_naming_the_voters_down(cluster: Cluster) -> None:
    # Last in the module: it stops two of the three members, then starts them again.
    down = cluster.ips[1:]
    cluster.bed.each(down, "systemctl stop etcd")
    try:
        proc = run_cli("defrag", "-i", str(cluster.inv), "-y", check=False)
    finally:
        cluster.bed.each(down, "systemctl start etcd")
    # Nothing answers the alarm list without a quorum: the guard names who is down.
    assert proc.returncode == 3, proc.stderr
    assert "voter(s) not healthy" in proc.stderr and "etcd-2" in proc.stderr
