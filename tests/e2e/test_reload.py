"""`etcdsop reload` and `rbac sync` against real etcd, real Patroni and real vip-manager."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e import pgbed
from tests.e2e.conftest import PASSWORD, Bed, run_cli

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdApiError, EtcdClient, TlsFiles

pytestmark = pytest.mark.e2e

NEW_ROOT = "Rotated.Root-9c1e"
NEW_PG = "Pg.Etcd-e2e.2"
# The journal of the running Patroni only (the host's journal outlives a test).
THIS_PATRONI = (
    "journalctl -o cat --no-pager _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID"
    " --value patroni)"
)


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


def leader_writes(bed: Bed, inv: Path, etcd_ips: list[str], password: str = PASSWORD) -> None:
    """A write on the primary makes Patroni write its optime to /pg/pg-test/status."""
    client = root(inv, etcd_ips, password)
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


TTL = 30  # pgbed's bootstrap.dcs.ttl: the leader key's lease


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    leader: bytes | None  # /pg/pg-test/leader; None: the key is absent
    rest: dict[str, dict[str, Any] | None]  # pg host -> GET /patroni (None: no answer)


class LeaderWatch:
    """Every ~0.5 s while membership changes: the leader key (through any live member)
    and each Patroni's own REST view (role, postmaster start, timeline)."""

    def __init__(self, inv: Path, ips: list[str], pg_ips: list[str]) -> None:
        self.client = root(inv, ips)
        self.pg_ips = pg_ips
        self.samples: list[Sample] = []
        self.errors = 0  # etcd reads that failed (a member being swapped)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rest(self, ip: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{ip}:8008/patroni", timeout=2) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            return None  # restarting
        return doc if isinstance(doc, dict) else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                leader = self.client.get("/pg/pg-test/leader")
            except ClusterError:
                self.client.reset_auth()
                self.errors += 1
            else:
                rest = {ip: self._rest(ip) for ip in self.pg_ips}
                self.samples.append(Sample(time.monotonic(), leader, rest))
            self._stop.wait(0.5)

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def longest_absence(self) -> float:
        """Seconds the leader key was seen missing in a row (first to last such sample)."""
        longest, since = 0.0, None
        for sample in self.samples:
            if sample.leader is None:
                since = sample.at if since is None else since
                longest = max(longest, sample.at - since)
            else:
                since = None
        return longest

    def seen(self, ip: str, key: str) -> set[Any]:
        return {s.rest[ip].get(key) for s in self.samples if s.rest[ip] is not None}


def postmaster_start(bed: Bed, ip: str) -> str:
    sql = "select pg_postmaster_start_time()"
    return bed.ssh(ip, f"psql -h /var/run/postgresql -U postgres -Atc '{sql}'").stdout.strip()


def patroni_state(bed: Bed, ip: str) -> str:
    """MainPID, and whether that process started after patroni.yml was last written
    (then it read the etcd3.hosts the file names now)."""
    script = (
        "pid=$(systemctl show -p MainPID --value patroni);"
        f" age=$(( $(date +%s) - $(stat -c %Y {pgbed.PATRONI_CONF}) ));"
        ' echo "$pid $(ps -o etimes= -p $pid | tr -d " ") $age"'
    )
    pid, ran, age = bed.ssh(ip, script).stdout.split()
    return f"{pid} {'current' if int(ran) <= int(age) else 'stale'}"


def patroni_journal(bed: Bed, ip: str, since: str) -> str:
    return bed.ssh(ip, f"journalctl -u patroni -o cat --no-pager --since @{since}").stdout


def test_replace_every_member_patroni_keeps_its_leader(pg: tuple[Bed, Path]) -> None:
    bed, inv = pg
    ips, where = bed.ips, inv.parent
    primary, replica = ips[4], ips[5]
    assert pgbed.members(bed, primary)[0]["Member"] == "pg-test-1"
    started = bed.ssh(primary, "date +%s").stdout.strip()
    postmasters = {ip: postmaster_start(bed, ip) for ip in (primary, replica)}
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    pids = []
    with LeaderWatch(inv, ips, [primary, replica]) as watch:
        # h1 -> h4, h2 -> h5, h3 -> h6: every original member replaced, one at a time.
        for old, new, seq in ((ips[0], ips[3], 4), (ips[1], ips[4], 5), (ips[2], ips[5], 6)):
            inv = pgbed.inventory(bed, where, {**etcd, new: seq}, ips[4:6])
            run_cli("add", new, "-i", str(inv), "-y")
            run_cli("rm", old, "-i", str(inv), "-y")
            del etcd[old]
            etcd[new] = seq
            inv = pgbed.inventory(bed, where, etcd, ips[4:6])
            before = {ip: patroni_state(bed, ip) for ip in (primary, replica)}
            if seq == 4:
                # A dry run says it would pause and restart, and does nothing.
                dry = run_cli("reload", "-t", "all", "-i", str(inv), "--dry-run", "--json")
                planned = json.loads(dry.stdout)
                assert planned["patroni_restarted"] == [replica, primary]
                messages = [h["message"] for h in planned["hosts"] if h["target"] == "patroni"]
                assert all("would restart Patroni under pause: etcd3 hosts" in m for m in messages)
                assert "Patroni would be restarted under pause on" in dry.stderr
                assert {ip: patroni_state(bed, ip) for ip in (primary, replica)} == before
                assert (
                    "Maintenance mode"
                    not in bed.ssh(primary, f"patronictl -c {pgbed.PATRONI_CONF} list").stdout
                )
            out = json.loads(run_cli("reload", "--target", "all", "-i", str(inv), "--json").stdout)
            assert out["endpoints"] == [f"https://{ip}:2379" for ip in sorted(etcd)]
            assert out["failed"] == 0
            changed = {(h["target"], h["host"]) for h in out["hosts"] if h["status"] == "changed"}
            assert {("patroni", primary), ("patroni", replica), ("vip", primary)} <= changed
            # Restarted under pause, the replica first, the leader last; each now runs
            # (a new process) on the file's current etcd3.hosts.
            assert out["patroni_restarted"] == [replica, primary]
            after = {ip: patroni_state(bed, ip) for ip in (primary, replica)}
            for ip in (primary, replica):
                assert after[ip].split()[0] != before[ip].split()[0]
                assert after[ip].endswith(" current")
            pids.append(after)
            listed = bed.ssh(primary, f"patronictl -c {pgbed.PATRONI_CONF} list").stdout
            assert "Maintenance mode" not in listed  # resumed
    voters = sorted(etcd)
    assert voters == ips[3:6]

    # No demotion, no failover, at any moment: the leader key always named pg-test-1 and
    # was never gone longer than its TTL; each Patroni always saw the same role, the
    # same postmaster (PostgreSQL never restarted) and timeline 1.
    assert len(watch.samples) > 60, (len(watch.samples), watch.errors)
    assert {s.leader for s in watch.samples if s.leader is not None} == {b"pg-test-1"}
    assert watch.longest_absence() < TTL
    assert watch.seen(primary, "role") == {"master"}
    assert watch.seen(primary, "timeline") == {1}
    assert watch.seen(replica, "role") == {"replica"}
    for ip in (primary, replica):
        assert len(watch.seen(ip, "postmaster_start_time")) == 1
        # Patroni 3.0.2 gives a replica's timeline only through a local replication
        # connection, which pgbed's pg_hba does not allow: null there.
        assert watch.seen(ip, "timeline") <= {1, None}
        assert postmaster_start(bed, ip) == postmasters[ip]
        journal = patroni_journal(bed, ip, started).lower()
        for word in ("demot", "promot", "failover", "dcs is not accessible"):
            assert word not in journal, (ip, word)
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

    # A re-run changes nothing, restarts nothing.
    again = json.loads(run_cli("reload", "-t", "all", "-i", str(inv), "--json").stdout)
    assert {h["status"] for h in again["hosts"]} == {"unchanged"}
    assert again["patroni_restarted"] == []
    assert {ip: patroni_state(bed, ip) for ip in (primary, replica)} == pids[-1]

    # A Patroni that an earlier run only reloaded (that run's backup holds the file it
    # started on, with older hosts; the file was rewritten since) is restarted by a re-run.
    stamp = bed.ssh(replica, "date -u +%Y%m%dT%H%M%SZ").stdout.strip()
    backup = f"{pgbed.PATRONI_CONF}.{stamp}.bak"
    bed.ssh(
        replica,
        f"cat > {backup} && touch -d '-1 hour' {backup} && touch {pgbed.PATRONI_CONF}",
        stdin=pgbed.patroni_yml(replica, 2, ips[:3]),
    )
    stale = json.loads(run_cli("reload", "-t", "patroni", "-i", str(inv), "--json").stdout)
    assert stale["patroni_restarted"] == [replica]
    message = next(h["message"] for h in stale["hosts"] if h["host"] == replica)
    assert f"Patroni still runs the etcd3 hosts of {backup}" in message
    assert patroni_state(bed, replica).endswith(" current")
    assert next(m for m in pgbed.members(bed, primary) if m["Role"] == "Leader")["TL"] == 1


def test_dry_run_root_rotation_and_broken_client_configs(pg: tuple[Bed, Path]) -> None:
    bed, inv = pg
    ips = bed.ips
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    member_files = "/etc/etcd/etcd.conf /etc/etcd/etcd.pass /etc/profile.d/etcdctl.sh"
    pg_files = f"{pgbed.PATRONI_CONF} {pgbed.VIP_CONF} /etc/etcd-client/*"

    def snapshot() -> dict[str, str]:
        return {ip: sha(bed, ip, member_files) for ip in ips[:3]} | {
            ip: sha(bed, ip, pg_files) for ip in ips[4:6]
        }

    before = snapshot()
    new = pgbed.inventory(
        bed,
        inv.parent,
        etcd,
        ips[4:6],
        root_password=NEW_ROOT,
        pg_vars={"pg_etcd_password": NEW_PG},
    )

    dry = run_cli("reload", "-t", "all", "-i", str(new), "--dry-run", "--json")
    out = json.loads(dry.stdout)
    assert out["root_password"] == "would change"
    assert out["patroni_restarted"] == []  # credentials only: a SIGHUP is enough
    assert out["rbac"][0]["actions"] == ["update the password of user pg-test"]
    changed = {(h["target"], h["host"]) for h in out["hosts"] if h["status"] == "changed"}
    assert changed == {("etcd", ip) for ip in ips[:3]} | {
        (t, ip) for t in ("patroni", "vip") for ip in ips[4:6]
    }
    for secret in (NEW_ROOT, NEW_PG, PASSWORD, pgbed.PG_PASSWORD):
        assert secret not in dry.stdout + dry.stderr
    patroni_diff = next(h["diff"] for h in out["hosts"] if h["target"] == "patroni")
    assert "-  password: ******\n+  password: ******\n" in patroni_diff
    assert snapshot() == before  # nothing changed anywhere...
    assert len(root(inv, ips[:3], PASSWORD).member_list()) == 3  # ...not even in etcd
    assert pgbed.pg_client(inv, ips[:3]).get("/pg/pg-test/leader") == b"pg-test-1"

    # h6: patroni.yml broken, vip-manager.yml gone. h5 must still be reloaded.
    bed.ssh(ips[5], f"printf 'etcd3: [broken\\n' >> {pgbed.PATRONI_CONF}; rm {pgbed.VIP_CONF}")
    broken = bed.ssh(ips[5], "sha256sum /pg/bin/patroni.yml; ls /pg/bin").stdout
    proc = run_cli("reload", "-t", "etcd,patroni,vip", "-i", str(new), "--json", check=False)
    assert proc.returncode == 2, proc.stderr
    out = json.loads(proc.stdout)
    hosts = {(h["target"], h["host"]): h for h in out["hosts"]}
    assert hosts[("patroni", ips[5])]["status"] == "failed"
    assert "not valid YAML at line" in hosts[("patroni", ips[5])]["message"]
    assert hosts[("vip", ips[5])]["status"] == "failed"
    assert "is missing" in hosts[("vip", ips[5])]["message"]
    assert hosts[("patroni", ips[4])]["status"] == "changed"
    assert hosts[("vip", ips[4])]["status"] == "changed"
    assert "2 host target(s) failed" in proc.stderr
    assert bed.ssh(ips[5], "sha256sum /pg/bin/patroni.yml; ls /pg/bin").stdout == broken
    conf = yaml.safe_load(bed.ssh(ips[4], f"cat {pgbed.PATRONI_CONF}").stdout)
    assert conf["etcd3"]["password"] == NEW_PG

    assert out["patroni_restarted"] == []

    # Root password rotated: old refused, new accepted, etcd.pass rewritten everywhere.
    assert out["root_password"] == "changed"
    with pytest.raises(EtcdApiError, match="authentication failed"):
        root(inv, ips[:3], PASSWORD).member_list()
    assert len(root(inv, ips[:3], NEW_ROOT).member_list()) == 3
    assert bed.each(ips[:3], "cat /etc/etcd/etcd.pass") == dict.fromkeys(ips[:3], NEW_ROOT)
    # The pg-test user got its new password after Patroni was given it.
    with pytest.raises(EtcdApiError, match="authentication failed"):
        pgbed.pg_client(inv, ips[:3]).get("/pg/pg-test/leader")
    assert pgbed.pg_client(inv, ips[:3], NEW_PG).get("/pg/pg-test/leader") == b"pg-test-1"

    # Patroni: same leader, same timeline, and it keeps writing (with its new password).
    leader = next(m for m in pgbed.members(bed, ips[4]) if m["Role"] == "Leader")
    assert (leader["Member"], leader["TL"]) == ("pg-test-1", 1)
    leader_writes(bed, inv, ips[:3], NEW_ROOT)
    journal = bed.ssh(ips[4], THIS_PATRONI).stdout
    assert "I am (pg-test-1), the leader with the lock" in journal
    assert "failover" not in journal.lower() and "demot" not in journal.lower()


def test_rbac_sync_scopes_the_cluster_user(clean: Bed, tmp_path: Path) -> None:
    bed, ips = clean, clean.ips
    inv = pgbed.inventory(bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6])
    run_cli("create", "-i", str(inv))
    first = json.loads(run_cli("rbac", "sync", "-i", str(inv), "--json").stdout)
    assert first["clusters"][0]["actions"] == [
        "create role pg-test",
        "grant READWRITE [/pg/pg-test/, /pg/pg-test0) to role pg-test",
        "create user pg-test",
        "grant role pg-test to user pg-test",
    ]
    again = json.loads(run_cli("rbac", "sync", "-i", str(inv), "--json").stdout)
    assert again["clusters"][0]["actions"] == []

    pki = tmp_path / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )
    urls = [f"https://{ip}:2379" for ip in ips[:3]]
    user = EtcdClient(urls, tls, user="pg-test", password=pgbed.PG_PASSWORD)
    user.put("/pg/pg-test/leader", "me")
    assert user.get("/pg/pg-test/leader") == b"me"
    assert user.get_prefix("/pg/pg-test/") == {"/pg/pg-test/leader": b"me"}
    for refused in (
        lambda: user.put("/pg/other/leader", "me"),
        lambda: user.get("/pg/other/leader"),
        lambda: user.put("/pg/pg-test2/leader", "me"),  # the prefix ends with a slash
        lambda: user.member_add(["https://198.18.9.9:2380"], learner=True),
        lambda: user.role_add("mine"),
    ):
        with pytest.raises(EtcdApiError, match="permission denied"):
            refused()
    assert len(root(inv, ips[:3]).member_list()) == 3

    # A new pg_etcd_password: the user's password is updated, the old one refused.
    changed = pgbed.inventory(
        bed,
        tmp_path,
        {ips[0]: 1, ips[1]: 2, ips[2]: 3},
        ips[4:6],
        pg_vars={"pg_etcd_password": NEW_PG},
    )
    out = json.loads(run_cli("rbac", "sync", "-i", str(changed), "--json").stdout)
    assert out["clusters"][0]["actions"] == ["update the password of user pg-test"]
    with pytest.raises(EtcdApiError, match="authentication failed"):
        EtcdClient(urls, tls, user="pg-test", password=pgbed.PG_PASSWORD).get("/pg/pg-test/x")
    assert EtcdClient(urls, tls, user="pg-test", password=NEW_PG).get("/pg/pg-test/x") is None

    # Empty pg_etcd_password: the cluster name, loudly.
    weak = pgbed.inventory(
        bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6], pg_vars={"pg_etcd_password": ""}
    )
    proc = run_cli("rbac", "sync", "-i", str(weak))
    assert "pg_etcd_password is empty" in proc.stderr
    assert EtcdClient(urls, tls, user="pg-test", password="pg-test").get("/pg/pg-test/x") is None

    # A cluster named root is refused before anything happens.
    rooted = pgbed.inventory(
        bed, tmp_path, {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6], pg_vars={"pg_cluster": "root"}
    )
    proc = run_cli("rbac", "sync", "-i", str(rooted), check=False)
    assert proc.returncode == 1
    assert "pg_cluster 'root'" in proc.stderr
    assert root(inv, ips[:3]).user_get("root") == ["root"]


def test_rolling_restart_leader_last_and_quorum_guard(clean: Bed, tmp_path: Path) -> None:
    bed, ips = clean, clean.ips
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    inv = pgbed.inventory(bed, tmp_path, etcd, [])
    run_cli("create", "-i", str(inv))
    client = root(inv, ips[:3])
    leader_id = client.status(f"https://{ips[0]}:2379").leader
    leader = next(m for m in client.member_list() if m.id == leader_id)
    leader_ip = leader.peer_urls[0].split("//")[1].split(":")[0]

    slower = pgbed.inventory(bed, tmp_path, etcd, [])
    doc = yaml.safe_load(slower.read_text())
    doc["all"]["children"]["etcd"]["vars"]["etcd_heartbeat_interval"] = 150
    slower.write_text(yaml.safe_dump(doc))
    out = json.loads(
        run_cli("reload", "-t", "etcd", "--restart", "-i", str(slower), "--json").stdout
    )
    assert sorted(out["restarted"]) == sorted(ips[:3])
    assert out["restarted"][-1] == leader_ip  # the leader last
    confs = bed.each(ips[:3], "grep heartbeat-interval /etc/etcd/etcd.conf")
    assert set(confs.values()) == {"heartbeat-interval: 150\n"}
    assert all(client.health(f"https://{ip}:2379") for ip in ips[:3])
    again = json.loads(
        run_cli("reload", "-t", "etcd", "--restart", "-i", str(slower), "--json").stdout
    )
    assert again["restarted"] == []

    # A lone member: restarting it would stop the cluster: refused, exit 3, file written.
    bed.wipe(ips[:3])
    lone = pgbed.inventory(bed, tmp_path, {ips[3]: 1}, [])
    run_cli("create", "-i", str(lone))
    pid = bed.ssh(ips[3], "systemctl show -p MainPID --value etcd").stdout
    doc = yaml.safe_load(lone.read_text())
    doc["all"]["children"]["etcd"]["vars"]["etcd_heartbeat_interval"] = 150
    lone.write_text(yaml.safe_dump(doc))
    proc = run_cli("reload", "-t", "etcd", "--restart", "-i", str(lone), check=False)
    assert proc.returncode == 3, proc.stderr
    assert "would lose its quorum" in proc.stderr
    assert bed.ssh(ips[3], "systemctl show -p MainPID --value etcd").stdout == pid
    assert "heartbeat-interval: 150" in bed.ssh(ips[3], "cat /etc/etcd/etcd.conf").stdout
