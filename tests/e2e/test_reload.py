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
    """etcd on h1-h3; Patroni pg-test laid out as Pigsty v4.5 does on h5 (leader) and h6,
    pg-old as Pigsty 3.0-3.4 did (/pg/bin/patroni.yml, a chain of links) on h4;
    vip-manager on all three."""
    bed, ips = clean, clean.ips
    pgbed.wipe(bed, ips)
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    inv = pgbed.inventory(bed, tmp_path, etcd, ips[4:6], old=ips[3])
    run_cli("create", "-i", str(inv))
    run_cli("rbac", "sync", "-i", str(inv))
    pgbed.provision(bed, inv, ips[4:6], ips[:3], old=ips[3])
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
        self.failed_reads: list[float] = []  # when an etcd read failed (a member swapped)
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
                self.failed_reads.append(time.monotonic())
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
        """Seconds in a row the leader key was not seen: missing, or the read failed (what
        we cannot see counts as gone), from the first such sample to the next good one."""
        seen = sorted(
            [(s.at, s.leader is not None) for s in self.samples]
            + [(at, False) for at in self.failed_reads]
        )
        longest, since = 0.0, None
        for at, present in seen:
            if not present:
                since = at if since is None else since
            elif since is not None:
                longest, since = max(longest, at - since), None
        if since is not None:
            longest = max(longest, seen[-1][0] - since)
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
        f" age=$(( $(date +%s) - $(stat -L -c %Y {pgbed.PATRONI_CONF}) ));"
        ' echo "$pid $(ps -o etimes= -p $pid | tr -d " ") $age"'
    )
    pid, ran, age = bed.ssh(ip, script).stdout.split()
    return f"{pid} {'current' if int(ran) <= int(age) else 'stale'}"


# What Patroni (3.0) and vip-manager (1.0, etcd client v3) log when etcd refuses them.
AUTH_FAILURES = ("authentication failed", "invalid user id or password", "user name is empty")


def auth_failures(bed: Bed, ip: str, since: str) -> list[str]:
    logs = (
        pgbed.patroni_log(bed, ip, since)
        + bed.ssh(ip, f"journalctl -u vip-manager -o cat --no-pager --since @{since}").stdout
    )
    return [line for line in logs.lower().splitlines() if any(w in line for w in AUTH_FAILURES)]


def links(bed: Bed, ip: str, paths: str) -> str:
    """Each path: a link (l) and what it points to, or a file (f) with mode and owner."""
    script = (
        f'for p in {paths}; do if [ -L $p ]; then echo "l $p $(readlink $p) $(stat -c %U $p)";'
        " else echo \"f $p $(stat -c '%a %U:%G' $p)\"; fi; done"
    )
    return bed.ssh(ip, script).stdout


@pytest.mark.etcd_matrix
def test_replace_every_member_patroni_keeps_its_leader(pg: tuple[Bed, Path]) -> None:
    bed, inv = pg
    ips, where = bed.ips, inv.parent
    primary, replica, old = ips[4], ips[5], ips[3]
    assert pgbed.members(bed, primary)[0]["Member"] == "pg-test-1"
    started = bed.ssh(primary, "date +%s").stdout.strip()
    postmasters = {ip: postmaster_start(bed, ip) for ip in (primary, replica, old)}
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    chain = "/etc/patroni/patroni.yml /pg/bin/patroni.yml /pg/conf/pg-old-1.yml /pg/conf/oltp.yml"
    assert links(bed, old, chain).splitlines() == [
        "l /etc/patroni/patroni.yml /pg/bin/patroni.yml postgres",
        "l /pg/bin/patroni.yml /pg/conf/pg-old-1.yml postgres",
        "l /pg/conf/pg-old-1.yml /pg/conf/oltp.yml postgres",
        "f /pg/conf/oltp.yml 755 postgres:postgres",
    ]
    pids = []
    everyone = [old, replica, primary]  # pg-old, then pg-test: replica first, leader last
    with LeaderWatch(inv, ips, [primary, replica]) as watch:
        # h1 -> h4, h2 -> h5, h3 -> h6: every original member replaced, one at a time.
        for gone, new, seq in ((ips[0], ips[3], 4), (ips[1], ips[4], 5), (ips[2], ips[5], 6)):
            inv = pgbed.inventory(bed, where, {**etcd, new: seq}, ips[4:6], old=old)
            run_cli("add", new, "-i", str(inv), "-y")
            run_cli("rm", gone, "-i", str(inv), "-y")
            del etcd[gone]
            etcd[new] = seq
            inv = pgbed.inventory(bed, where, etcd, ips[4:6], old=old)
            before = {ip: patroni_state(bed, ip) for ip in everyone}
            if seq == 4:
                # A dry run says it would pause and restart, and does nothing.
                dry = run_cli("reload", "-t", "all", "-i", str(inv), "--dry-run", "--json")
                planned = json.loads(dry.stdout)
                assert planned["patroni_restarted"] == everyone
                messages = [h["message"] for h in planned["hosts"] if h["target"] == "patroni"]
                assert all("would restart Patroni under pause: etcd3 hosts" in m for m in messages)
                assert "Patroni would be restarted under pause on" in dry.stderr
                assert {ip: patroni_state(bed, ip) for ip in everyone} == before
                assert (
                    "Maintenance mode"
                    not in bed.ssh(primary, f"patronictl -c {pgbed.PATRONI_CONF} list").stdout
                )
            out = json.loads(run_cli("reload", "--target", "all", "-i", str(inv), "--json").stdout)
            assert out["endpoints"] == [f"https://{ip}:2379" for ip in sorted(etcd)]
            assert out["failed"] == 0, out
            changed = {(h["target"], h["host"]) for h in out["hosts"] if h["status"] == "changed"}
            assert {("patroni", ip) for ip in everyone} | {("vip", primary)} <= changed
            # Restarted under pause, the replica first, the leader last; each now runs
            # (a new process) on the file's current etcd3.hosts.
            assert out["patroni_restarted"] == everyone
            after = {ip: patroni_state(bed, ip) for ip in everyone}
            for ip in everyone:
                assert after[ip].split()[0] != before[ip].split()[0]
                assert after[ip].endswith(" current")
            pids.append(after)
            listed = bed.ssh(primary, f"patronictl -c {pgbed.PATRONI_CONF} list").stdout
            assert "Maintenance mode" not in listed  # resumed
    voters = sorted(etcd)
    assert voters == ips[3:6]
    hosts = ",".join(f"{v}:2379" for v in voters)

    # No demotion, no failover, at any moment: the leader key always named pg-test-1 and
    # was never gone longer than its TTL; each Patroni always saw the same role, the
    # same postmaster (PostgreSQL never restarted) and timeline 1.
    assert len(watch.samples) > 60, (len(watch.samples), len(watch.failed_reads))
    assert len(watch.failed_reads) < len(watch.samples) / 4, "the watcher saw too little"
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
    for ip in everyone:
        assert postmaster_start(bed, ip) == postmasters[ip]
        journal = pgbed.patroni_log(bed, ip, started).lower()
        for word in ("demot", "promot", "failover", "dcs is not accessible"):
            assert word not in journal, (ip, word)
        assert auth_failures(bed, ip, started) == [], ip
    listed = pgbed.members(bed, primary)
    assert {(m["Member"], m["Role"], m["TL"]) for m in listed} == {
        ("pg-test-1", "Leader", 1),
        ("pg-test-2", "Replica", 1),
    }
    assert [(m["Member"], m["Role"]) for m in pgbed.members(bed, old)] == [("pg-old-1", "Leader")]
    assert root(inv, voters).get("/pg/pg-old/leader") == b"pg-old-1"

    # Pigsty v4.5: the link is still a link, the file it points to (dbsu:postgres 0640)
    # names exactly the new voters; every other byte of it is as Pigsty rendered it, and
    # Pigsty's own client certificates (/pg/cert, same CA) are used: no second set.
    for n, ip in enumerate(ips[4:6], start=1):
        conf = pgbed.instance_conf("pg-test", n)
        assert links(bed, ip, pgbed.PATRONI_CONF) == f"l {pgbed.PATRONI_CONF} {conf} postgres\n"
        text = bed.ssh(ip, f"cat {conf}").stdout
        rendered = pgbed.patroni_yml(ip, n, ips[:3], members=ips[4:6])
        first = ",".join(f"{e}:2379" for e in sorted(ips[:3]))
        assert text == rendered.replace(f"  hosts: '{first}'\n", f"  hosts: '{hosts}'\n")
        assert yaml.safe_load(text)["etcd3"]["hosts"] == hosts
        listing = bed.ssh(ip, f"stat -c '%n %a %U:%G' {conf}*").stdout.splitlines()
        assert listing[0] == f"{conf} 640 postgres:postgres"
        assert len(listing) == 4  # three reloads, three backups
        assert all(line.endswith(".bak 600 postgres:postgres") for line in listing[1:])
        assert bed.ssh(ip, "test -e /etc/etcd-client || echo none").stdout == "none\n"
    # Pigsty 3.x: the chain of links intact, the final target edited in place (no longer
    # world-readable: it holds the etcd password).
    assert links(bed, old, chain).splitlines() == [
        "l /etc/patroni/patroni.yml /pg/bin/patroni.yml postgres",
        "l /pg/bin/patroni.yml /pg/conf/pg-old-1.yml postgres",
        "l /pg/conf/pg-old-1.yml /pg/conf/oltp.yml postgres",
        "f /pg/conf/oltp.yml 750 postgres:postgres",
    ]
    old_conf = yaml.safe_load(bed.ssh(old, "cat /pg/conf/oltp.yml").stdout)
    assert old_conf["etcd3"]["hosts"] == hosts
    # ...and Patroni still writes through them (every old member is gone by now).
    leader_writes(bed, inv, voters)

    # vip-manager was restarted on the new config and keeps running; files 0600.
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
    # pg-old's vip-manager.yml (Pigsty 3.x: 0644, no etcd user) got its user, 0600, and
    # vip-manager runs on it. (Debian's vip-manager 1.0.2 speaks only etcd's v2 API,
    # which etcd 3.4 serves only with enable-v2: on these hosts it never holds a VIP.)
    old_vip = bed.ssh(old, f"stat -c '%a %U' {pgbed.VIP_CONF}; cat {pgbed.VIP_CONF}").stdout
    mode, _, text = old_vip.partition("\n")
    assert mode == "600 root"
    assert yaml.safe_load(text)["etcd-user"] == "pg-old"
    assert bed.ssh(old, "systemctl is-active vip-manager").stdout == "active\n"
    journal = bed.ssh(old, "journalctl -u vip-manager -o cat --no-pager").stdout
    assert [line.strip() for line in journal.splitlines() if "etcd-user :" in line][-1] == (
        "etcd-user : pg-old"
    )
    backups = bed.ssh(old, f"stat -c '%a' {pgbed.VIP_CONF}.*.bak").stdout.split()
    assert backups and set(backups) == {"600"}

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
    assert {ip: patroni_state(bed, ip) for ip in everyone} == pids[-1]

    # A Patroni that an earlier run only reloaded (that run's backup holds the file it
    # started on, with older hosts; the file was rewritten since) is restarted by a re-run.
    stamp = bed.ssh(replica, "date -u +%Y%m%dT%H%M%SZ").stdout.strip()
    conf = pgbed.instance_conf("pg-test", 2)
    backup = f"{conf}.{stamp}.bak"
    bed.ssh(
        replica,
        f"cat > {backup} && touch -d '-1 hour' {backup} && touch {conf}",
        stdin=pgbed.patroni_yml(replica, 2, ips[:3], members=ips[4:6]),
    )
    stale = json.loads(run_cli("reload", "-t", "patroni", "-i", str(inv), "--json").stdout)
    assert stale["patroni_restarted"] == [replica]
    message = next(h["message"] for h in stale["hosts"] if h["host"] == replica)
    assert f"Patroni still runs the etcd3 hosts of {backup}" in message
    assert patroni_state(bed, replica).endswith(" current")
    assert next(m for m in pgbed.members(bed, primary) if m["Role"] == "Leader")["TL"] == 1


def test_password_change_never_strands_a_client(pg: tuple[Bed, Path]) -> None:
    """Dry run, refusals, a failed host that keeps the old password, root rotation, then
    the change itself: every client of pg-test takes it in one step."""
    bed, inv = pg
    ips = bed.ips
    primary, replica, old = ips[4], ips[5], ips[3]
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    member_files = "/etc/etcd/etcd.conf /etc/etcd/etcd.pass /etc/profile.d/etcdctl.sh"
    pg_files = f"/pg/conf/*.yml* {pgbed.VIP_CONF}* /pg/cert/*"

    def snapshot() -> dict[str, str]:
        return {ip: sha(bed, ip, member_files) for ip in ips[:3]} | {
            ip: sha(bed, ip, pg_files) for ip in ips[3:6]
        }

    def pg_test(password: str) -> bytes | None:
        return pgbed.pg_client(inv, ips[:3], password).get("/pg/pg-test/leader")

    # A first run gives pg-old's vip-manager its etcd user (Pigsty 3.x had none).
    run_cli("reload", "-t", "patroni,vip", "-i", str(inv))
    before = snapshot()

    def refused(*argv: str) -> None:
        proc = run_cli(*argv, "-i", str(inv), check=False)
        assert proc.returncode == 3, (argv, proc.stderr)
        assert "run them together, etcdsop reload -t patroni,vip" in " ".join(proc.stderr.split())

    # Not every client of pg-test in the run: refused before anything changes (even the
    # root password, checked before it would be rotated).
    pg_vars = {"pg_etcd_password": NEW_PG}
    pgbed.inventory(bed, inv.parent, etcd, ips[4:6], pg_vars=pg_vars, old=old)
    refused("reload", "-t", "patroni")
    refused("rbac", "sync")
    new = pgbed.inventory(
        bed, inv.parent, etcd, ips[4:6], root_password=NEW_ROOT, pg_vars=pg_vars, old=old
    )
    refused("reload", "-t", "etcd,vip")
    assert snapshot() == before
    assert pg_test(pgbed.PG_PASSWORD) == b"pg-test-1"
    assert root(inv, ips[:3]).check_password("root", PASSWORD)  # the root password too

    dry = run_cli("reload", "-t", "all", "-i", str(new), "--dry-run", "--json")
    out = json.loads(dry.stdout)
    assert out["root_password"] == "would change"
    assert out["patroni_restarted"] == []  # credentials only: a SIGHUP is enough
    rbac = {r["cluster"]: r["actions"] for r in out["rbac"]}
    assert rbac == {"pg-old": [], "pg-test": ["update the password of user pg-test"]}
    changed = {(h["target"], h["host"]) for h in out["hosts"] if h["status"] == "changed"}
    assert changed == {("etcd", ip) for ip in ips[:3]} | {
        (t, ip) for t in ("patroni", "vip") for ip in ips[4:6]
    }
    for secret in (NEW_ROOT, NEW_PG, PASSWORD, pgbed.PG_PASSWORD, pgbed.OLD_PASSWORD):
        assert secret not in dry.stdout + dry.stderr
    patroni_diff = next(
        h["diff"] for h in out["hosts"] if h["target"] == "patroni" and h["host"] == primary
    )
    assert "-  password: ******\n+  password: ******\n" in patroni_diff
    assert "would change its etcd password, then at once reload Patroni" in dry.stderr
    assert snapshot() == before  # nothing changed anywhere...
    assert root(inv, ips[:3]).check_password("root", PASSWORD)  # ...not even in etcd
    assert pg_test(pgbed.PG_PASSWORD) == b"pg-test-1"

    # h6: Patroni's file broken, vip-manager.yml gone. pg-test keeps its password (h6
    # could not take the new one); the root password is rotated all the same.
    conf6 = pgbed.instance_conf("pg-test", 2)
    bed.ssh(replica, f"printf 'etcd3: [broken\\n' >> {conf6}; rm {pgbed.VIP_CONF}")
    broken = bed.ssh(replica, f"sha256sum {conf6}; ls /pg/conf").stdout
    proc = run_cli("reload", "-t", "etcd,patroni,vip", "-i", str(new), "--json", check=False)
    assert proc.returncode == 2, proc.stderr
    out = json.loads(proc.stdout)
    hosts = {(h["target"], h["host"]): h for h in out["hosts"]}
    assert hosts[("patroni", replica)]["status"] == "failed"
    assert "not valid YAML at line" in hosts[("patroni", replica)]["message"]
    assert hosts[("vip", replica)]["status"] == "failed"
    assert "is missing" in hosts[("vip", replica)]["message"]
    for target in ("patroni", "vip"):
        assert hosts[(target, primary)]["status"] == "unchanged"
        assert "etcd password of pg-test left unchanged" in hosts[(target, primary)]["message"]
    assert bed.ssh(replica, f"sha256sum {conf6}; ls /pg/conf").stdout == broken
    assert out["password_windows"] == {}
    assert pg_test(pgbed.PG_PASSWORD) == b"pg-test-1"
    with pytest.raises(EtcdApiError, match="authentication failed"):
        pg_test(NEW_PG)
    # Root password rotated: old refused, new accepted, etcd.pass rewritten everywhere.
    assert out["root_password"] == "changed"
    assert not root(inv, ips[:3]).check_password("root", PASSWORD)
    assert root(inv, ips[:3]).check_password("root", NEW_ROOT)
    assert bed.each(ips[:3], "cat /etc/etcd/etcd.pass") == dict.fromkeys(ips[:3], NEW_ROOT)

    # h6 repaired: every client of pg-test takes the new password in one step.
    pgbed.put(
        bed,
        replica,
        conf6,
        pgbed.patroni_yml(replica, 2, ips[:3], members=ips[4:6]),
        "640",
        "postgres:postgres",
    )
    pgbed.put(bed, replica, pgbed.VIP_CONF, pgbed.vip_yml(bed, 2, ips[:3]), "644", "root:postgres")
    since = bed.ssh(primary, "date +%s").stdout.strip()
    pids = {ip: patroni_state(bed, ip).split()[0] for ip in (primary, replica)}
    out = json.loads(run_cli("reload", "-t", "patroni,vip", "-i", str(new), "--json").stdout)
    assert out["failed"] == 0, out
    window = out["password_windows"]["pg-test"]
    print(f"password change window (etcd change -> every client reloaded): {window:.3f} s")
    assert window < 2.0
    assert pg_test(NEW_PG) == b"pg-test-1"
    with pytest.raises(EtcdApiError, match="authentication failed"):
        pg_test(pgbed.PG_PASSWORD)
    # Reloaded, not restarted; vip-manager's files 0600 (the backups too).
    assert {ip: patroni_state(bed, ip).split()[0] for ip in (primary, replica)} == pids
    assert out["patroni_restarted"] == []
    for ip in (primary, replica):
        conf = yaml.safe_load(bed.ssh(ip, f"cat {pgbed.PATRONI_CONF}").stdout)
        assert conf["etcd3"]["password"] == NEW_PG
        vip = bed.ssh(ip, f"stat -c '%a %U:%G' {pgbed.VIP_CONF} {pgbed.VIP_CONF}.*.bak").stdout
        assert set(vip.split("\n")[0:1]) == {"600 root:postgres"}, vip
        assert {line.split()[0] for line in vip.splitlines()} == {"600"}
        assert bed.ssh(ip, "systemctl is-active vip-manager").stdout == "active\n"

    # Patroni: same leader, same timeline, and it keeps writing with its new password.
    time.sleep(12)  # a whole Patroni loop (loop_wait 10 s) on the new password
    leader = next(m for m in pgbed.members(bed, primary) if m["Role"] == "Leader")
    assert (leader["Member"], leader["TL"]) == ("pg-test-1", 1)
    leader_writes(bed, inv, ips[:3], NEW_ROOT)
    for ip in (old, primary, replica):
        assert auth_failures(bed, ip, since) == [], ip
        log = pgbed.patroni_log(bed, ip, since).lower()
        assert "failover" not in log and "demot" not in log
    # A second run changes nothing.
    again = json.loads(run_cli("reload", "-t", "all", "-i", str(new), "--json").stdout)
    assert {h["status"] for h in again["hosts"]} == {"unchanged"}
    assert (
        again["rbac"] == [{**r, "actions": []} for r in again["rbac"]]
        and again["password_windows"] == {}
    )


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

    # A new pg_etcd_password: refused here (Patroni and vip-manager would keep the old
    # one; reload -t patroni,vip changes it with them), nothing changed.
    changed = pgbed.inventory(
        bed,
        tmp_path,
        {ips[0]: 1, ips[1]: 2, ips[2]: 3},
        ips[4:6],
        pg_vars={"pg_etcd_password": NEW_PG},
    )
    proc = run_cli("rbac", "sync", "-i", str(changed), "--json", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "etcdsop reload -t patroni,vip" in " ".join(proc.stderr.split())
    assert proc.stdout == ""
    assert (
        EtcdClient(urls, tls, user="pg-test", password=pgbed.PG_PASSWORD).get("/pg/pg-test/x")
        is None
    )
    with pytest.raises(EtcdApiError, match="authentication failed"):
        EtcdClient(urls, tls, user="pg-test", password=NEW_PG).get("/pg/pg-test/x")

    # Empty pg_etcd_password: the cluster name, loudly (a new cluster's user).
    weak = pgbed.inventory(
        bed,
        tmp_path,
        {ips[0]: 1, ips[1]: 2, ips[2]: 3},
        ips[4:6],
        pg_vars={"pg_etcd_password": "", "pg_cluster": "pg-weak"},
    )
    proc = run_cli("rbac", "sync", "-i", str(weak))
    assert "pg_etcd_password is empty" in proc.stderr
    assert EtcdClient(urls, tls, user="pg-weak", password="pg-weak").get("/pg/pg-weak/x") is None

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
    doc = yaml.safe_load(inv.read_text())
    doc["all"]["children"]["etcd"]["vars"]["cert_validity"] = "20d"  # within 30 days
    inv.write_text(yaml.safe_dump(doc))
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
    # Certificates of 20 days: a re-run re-issues none (it once did every run) and
    # restarts nothing.
    certs = bed.each(ips[:3], "sha256sum /etc/etcd/server.crt /etc/etcd/server.key")
    pids = bed.each(ips[:3], "systemctl show -p MainPID --value etcd")
    rerun = run_cli("create", "-i", str(slower))
    assert "issued" not in rerun.stderr, rerun.stderr
    assert bed.each(ips[:3], "sha256sum /etc/etcd/server.crt /etc/etcd/server.key") == certs
    assert bed.each(ips[:3], "systemctl show -p MainPID --value etcd") == pids

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


def test_citus_shard_user_and_trigger_key(clean: Bed, tmp_path: Path) -> None:
    """pg_mode citus as Pigsty renders it: one etcd user per shard (pg_shard), Patroni's
    scope pg_shard with its citus.group, vip-manager on <ns>/<shard>/<group>/leader.
    (No Citus package here: its Patroni cannot run; the files, etcd and vip-manager can.)"""
    bed, ips = clean, clean.ips
    hosts = {ips[1]: ("pg-citus0", 0), ips[2]: ("pg-citus1", 1)}
    pgbed.wipe(bed, list(hosts))
    password = "Citus.Shard-e2e"

    def inventory(etcd: dict[str, int]) -> Path:
        path = pgbed.inventory(bed, tmp_path, etcd, [])
        doc = yaml.safe_load(path.read_text())
        for ip, (name, group) in hosts.items():
            doc["all"]["children"][name] = {
                "hosts": {ip: {"pg_seq": 1, "pg_role": "primary"}},
                "vars": {"pg_cluster": name, "pg_group": group, "pg_vip_enabled": True},
            }
        doc["all"]["vars"].update(pg_mode="citus", pg_shard="pg-citus", pg_etcd_password=password)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    inv = inventory({ips[0]: 1})
    run_cli("create", "-i", str(inv))
    synced = json.loads(run_cli("rbac", "sync", "-i", str(inv), "--json").stdout)
    assert [(c["user"], c["prefix"]) for c in synced["clusters"]] == [("pg-citus", "/pg/pg-citus/")]
    pki = tmp_path / "files" / "pki"
    for ip, (name, group) in hosts.items():
        conf = pgbed.patroni_yml(
            ip, 1, [ips[0]], cluster=name, password=password, citus=("pg-citus", group)
        )
        vip = pgbed.vip_yml(
            bed,
            1,
            [ips[0]],
            cluster=name,
            password=password,
            citus=("pg-citus", group),
            address=f"198.18.{ips[0].split('.')[2]}.{97 - group}/24",
        )
        pgbed.lay_out(bed, pki, ip, name, 1, conf, vip, True)
        bed.ssh(ip, "systemctl start vip-manager")
    root(inv, [ips[0]]).put("/pg/pg-citus/1/leader", "pg-citus1-1")

    run_cli("add", ips[3], "-i", str(inventory({ips[0]: 1, ips[3]: 2})), "-y")
    inv = inventory({ips[0]: 1, ips[3]: 2})
    out = json.loads(run_cli("reload", "-t", "patroni,vip", "-i", str(inv), "--json").stdout)
    assert out["failed"] == 0, out
    assert {(h["target"], h["status"]) for h in out["hosts"]} == {
        ("patroni", "changed"),
        ("vip", "changed"),
    }
    for ip, (_, group) in hosts.items():
        conf = yaml.safe_load(bed.ssh(ip, f"cat {pgbed.PATRONI_CONF}").stdout)
        assert (conf["scope"], conf["citus"]["group"]) == ("pg-citus", group)
        assert conf["etcd3"]["username"] == "pg-citus"
        assert conf["etcd3"]["hosts"] == f"{ips[0]}:2379,{ips[3]}:2379"
        vip = yaml.safe_load(bed.ssh(ip, f"cat {pgbed.VIP_CONF}").stdout)
        assert (vip["etcd-user"], vip["trigger-key"]) == (
            "pg-citus",
            f"/pg/pg-citus/{group}/leader",
        )
        assert bed.ssh(ip, "systemctl is-active vip-manager").stdout == "active\n"
    # The shard's user reads every group's keys, and nothing outside the shard.
    user = pgbed.pg_client(inv, [ips[0], ips[3]], password, user="pg-citus")
    assert user.get("/pg/pg-citus/1/leader") == b"pg-citus1-1"
    with pytest.raises(EtcdApiError, match="permission denied"):
        user.get("/pg/pg-citus1/leader")
    again = json.loads(run_cli("reload", "-t", "patroni,vip", "-i", str(inv), "--json").stdout)
    assert {h["status"] for h in again["hosts"]} == {"unchanged"}
    pgbed.wipe(bed, list(hosts))
