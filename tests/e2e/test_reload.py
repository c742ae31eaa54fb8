"""`etcdsop reload` and `rbac sync` against real etcd, real Patroni and real vip-manager."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.e2e import pgbed
from tests.e2e.conftest import PASSWORD, Bed, run_cli

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient, TlsFiles

pytestmark = pytest.mark.e2e

NEW_ROOT = "Rotated.Root-9c1e"
NEW_PG = "Pg.Etcd-e2e.2"


def root(inv: Path, ips: list[str], password: str = PASSWORD) -> EtcdClient:
    pki = inv.parent / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )
    return EtcdClient([f"https://{ip}:2379" for ip in ips], tls, user="root", password=password)


def sha(bed: Bed, ip: str, paths: str) -> str:
    return bed.ssh(ip, f"sha256sum {paths} 2>&1; stat -c '%n %a %U:%G' {paths} 2>&1").stdout


@pytest.fixture
def pg(clean: Bed, tmp_path: Path) -> Iterator[tuple[Bed, Path]]:
    """etcd on h1-h3, Patroni pg-test on h5 (leader) and h6, vip-manager on both."""
    bed, ips = clean, clean.ips
    pgbed.wipe(bed, ips)
    inv = pgbed.inventory(bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6])
    run_cli("create", "-i", str(inv))
    run_cli("rbac", "sync", "-i", str(inv))
    pgbed.provision(bed, inv, ips[4:6], ips[:3])
    yield bed, inv
    pgbed.wipe(bed, ips)


def leader_writes(bed: Bed, inv: Path, etcd_ips: list[str]) -> None:
    """A write on the primary makes Patroni write its optime to /pg/pg-test/status."""
    client = root(inv, etcd_ips)
    before = json.loads(client.get("/pg/pg-test/status") or b'{"optime": 0}')["optime"]
    bed.ssh(
        bed.ips[4],
        "psql -h /var/run/postgresql -U postgres -c 'create table if not exists e2e(x int)' "
        "-c 'insert into e2e select generate_series(1, 1000)'",
    )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        now = json.loads(client.get("/pg/pg-test/status") or b"{}").get("optime", 0)
        if now > before:
            return
        time.sleep(1)
    raise AssertionError(f"Patroni did not write a new optime (still {before}) in 40 s")


class LeaderWatch:
    """Samples /pg/pg-test/leader through any live member while membership changes."""

    def __init__(self, inv: Path, ips: list[str]) -> None:
        self.client = root(inv, ips)
        self.seen: list[bytes | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.append(self.client.get("/pg/pg-test/leader"))
            except ClusterError:
                self.client.reset_auth()
            self._stop.wait(0.5)

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_replace_every_member_patroni_keeps_its_leader(pg: tuple[Bed, Path]) -> None:
    bed, inv = pg
    ips, where = bed.ips, inv.parent
    primary = ips[4]
    assert pgbed.members(bed, primary)[0]["Member"] == "pg-test-1"
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    with LeaderWatch(inv, ips) as watch:
        # h1 -> h4, h2 -> h5, h3 -> h6: every original member replaced, one at a time.
        for old, new, seq in ((ips[0], ips[3], 4), (ips[1], ips[4], 5), (ips[2], ips[5], 6)):
            inv = pgbed.inventory(bed, where, {**etcd, new: seq}, ips[4:6])
            run_cli("add", new, "-i", str(inv), "-y")
            run_cli("rm", old, "-i", str(inv), "-y")
            del etcd[old]
            etcd[new] = seq
            inv = pgbed.inventory(bed, where, etcd, ips[4:6])
            out = json.loads(run_cli("reload", "--target", "all", "-i", str(inv), "--json").stdout)
            assert out["endpoints"] == [f"https://{ip}:2379" for ip in sorted(etcd)]
            assert out["failed"] == 0
            changed = {(h["target"], h["host"]) for h in out["hosts"] if h["status"] == "changed"}
            assert {("patroni", primary), ("patroni", ips[5]), ("vip", primary)} <= changed
    voters = sorted(etcd)
    assert voters == ips[3:6]

    # No failover: the same leader in every sample and in patronictl, timeline 1.
    assert len(watch.seen) > 20
    assert {v for v in watch.seen if v is not None} == {b"pg-test-1"}
    listed = pgbed.members(bed, primary)
    assert {(m["Member"], m["Role"], m["TL"]) for m in listed} == {
        ("pg-test-1", "Leader", 1),
        ("pg-test-2", "Replica", 1),
    }
    # Patroni's file names exactly the new voters, the rest of it untouched (comments too).
    for n, ip in enumerate(ips[4:6], start=1):
        text = bed.ssh(ip, f"cat {pgbed.PATRONI_CONF}").stdout
        conf = yaml.safe_load(text)
        assert conf["etcd3"]["hosts"] == ",".join(f"{v}:2379" for v in voters)
        assert conf["etcd3"]["username"] == "pg-test"
        assert conf["etcd3"]["password"] == pgbed.PG_PASSWORD
        expected = yaml.safe_load(pgbed.patroni_yml(ip, n, ips[:3]))
        assert {k: v for k, v in conf.items() if k != "etcd3"} == {
            k: v for k, v in expected.items() if k != "etcd3"
        }
        assert "# the DCS: etcd v3 over TLS, as the cluster's own etcd user\n" in text
        assert "  nofailover: false  # both may lead\n" in text
        listing = bed.ssh(ip, "stat -c '%n %a %U' /pg/bin/patroni.yml*").stdout.splitlines()
        assert listing[0] == "/pg/bin/patroni.yml 600 postgres"
        assert len(listing) == 4  # three reloads, three backups
        assert all(line.endswith(".bak 600 postgres") for line in listing[1:])
    # ...and Patroni still writes through them (every old member is gone by now).
    leader_writes(bed, inv, voters)

    # vip-manager was restarted on the new config and keeps running.
    vip = bed.ssh(primary, f"systemctl is-active vip-manager; cat {pgbed.VIP_CONF}").stdout
    state, _, text = vip.partition("\n")
    assert state == "active"
    assert yaml.safe_load(text)["dcs-endpoints"] == [f"https://{v}:2379" for v in voters]
    assert yaml.safe_load(text)["trigger-key"] == "/pg/pg-test/leader"
    journal = bed.ssh(primary, "journalctl -u vip-manager -o cat --no-pager").stdout
    loaded = [line for line in journal.splitlines() if "dcs-endpoints :" in line]
    assert (
        loaded[-1].split(":", 1)[1].strip()
        == "[" + " ".join(f"https://{v}:2379" for v in voters) + "]"
    )

    # etcdctl.sh on the members lists the voters; etcdsop env the same for the admin node.
    profile = bed.ssh(ips[3], "cat /etc/profile.d/etcdctl.sh").stdout
    assert f'ETCDCTL_ENDPOINTS="{",".join(f"https://{v}:2379" for v in voters)}"' in profile
    env = run_cli("env", "-i", str(inv)).stdout
    assert "ETCDCTL_USER" not in env
    assert f"export ETCDCTL_ENDPOINTS={','.join(f'https://{v}:2379' for v in voters)}" in env

    # A re-run changes nothing.
    again = json.loads(run_cli("reload", "-t", "all", "-i", str(inv), "--json").stdout)
    assert {h["status"] for h in again["hosts"]} == {"unchanged"}
