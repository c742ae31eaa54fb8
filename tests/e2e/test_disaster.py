"""`etcdsop backup / restore / recover` on real hosts, one 3-member cluster shared by the
cases in file order (each leaves it whole for the next), 300 user keys checked after
every step; the backup timer on a fourth host acting as the admin node."""

from __future__ import annotations

import json
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from tests.e2e.conftest import PASSWORD, SANDBOX_DIR, SUBNET_INDEX, Bed, run_cli, spawn
from tests.e2e.test_create import client

from etcdsop import sandbox
from etcdsop.backups import sha256_file
from etcdsop.etcd import EtcdClient
from etcdsop.sandbox.net import Layout

pytestmark = [pytest.mark.e2e, pytest.mark.etcd_matrix]

KEYS = {f"/app/dr/{i:03d}": f"value-{i}" for i in range(300)}


class Cluster:
    def __init__(self, bed: Bed, inventory: Path, ips: list[str]) -> None:
        self.bed, self.inventory, self.ips = bed, inventory, ips

    def client(self, ips: list[str] | None = None) -> EtcdClient:
        return client(self.inventory, ips or self.ips)

    def cli(self, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return run_cli(*args, "-i", str(self.inventory), check=check)

    def assert_keys(self) -> None:
        for ip in self.ips:  # every member serves every key
            assert self.client([ip]).get_prefix("/app/dr/") == {
                k: v.encode() for k, v in KEYS.items()
            }

    def voters(self) -> list[str]:
        members = self.client().member_list()
        assert all(m.started and not m.is_learner for m in members)
        return sorted(u for m in members for u in m.peer_urls)

    def revision(self) -> int:
        data = self.client().call("/v3/maintenance/status", {})
        return int(data["header"]["revision"])

    def version(self) -> tuple[int, int]:
        major, minor = self.client().status(f"https://{self.ips[0]}:2379").version.split(".")[:2]
        return int(major), int(minor)


@pytest.fixture(scope="module")
def cluster(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for host in sandbox.status(state_dir=SANDBOX_DIR):
        if not host.running:
            sandbox.host_power_on(host.name, state_dir=SANDBOX_DIR)
    bed.wipe()
    ips = bed.ips[:3]
    inventory = bed.inventory(tmp_path_factory.mktemp("dr"), ips)
    run_cli("create", "-i", str(inventory))
    made = Cluster(bed, inventory, ips)
    c = made.client()
    for key, value in KEYS.items():
        c.put(key, value)
    yield made
    bed.wipe(ips)
    bed.each(ips, "rm -rf /data/etcd.pre-*")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_restore_refused_while_the_cluster_answers(cluster: Cluster) -> None:
    backup = json.loads(cluster.cli("backup", "--json").stdout)
    before = cluster.voters()
    proc = cluster.cli("restore", backup["path"], "-y", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "answers on" in proc.stderr
    assert cluster.voters() == before
    # Nothing moved on any host, nothing stopped.
    assert not any(cluster.bed.each(cluster.ips, "ls -d /data/etcd.* 2>/dev/null; true").values())
    cluster.assert_keys()


def test_backup_destroy_restore(cluster: Cluster) -> None:
    backups = [json.loads(cluster.cli("backup", "--json", "--keep", "2").stdout) for _ in range(3)]
    files = cluster.inventory.parent / "files" / "backup"
    last = Path(backups[-1]["path"])
    # --keep 2: only this cluster's two newest are left (with their sidecars).
    assert sorted(p.name for p in files.glob("etcd-*.db")) == sorted(
        Path(b["path"]).name for b in backups[1:]
    )
    assert not Path(backups[0]["path"]).exists()
    assert _mode(last) == 0o600 and _mode(Path(backups[-1]["sidecar"])) == 0o600
    sidecar = json.loads(Path(backups[-1]["sidecar"]).read_text())
    assert sidecar["sha256"] == sha256_file(last)
    assert sidecar["size"] == last.stat().st_size
    assert sidecar["cluster"] == "etcd" and sidecar["etcd_version"].startswith("3.")
    assert sorted(m.split("=", 1)[1] for m in sidecar["members"]) == cluster.voters()
    status = cluster.client().call("/v3/maintenance/status", {})
    assert sidecar["cluster_id"] == f"{int(status['header']['cluster_id']):x}"
    assert sidecar["revision"] == cluster.revision()  # nothing was written since
    revision_before = cluster.revision()

    cluster.cli("rm", "-y")  # destroy: nothing of etcd's is left on the hosts
    result = json.loads(cluster.cli("restore", str(last), "-y", "--json").stdout)
    assert sorted(result["restored"]) == sorted(cluster.ips)
    assert cluster.voters() == sorted(f"https://{ip}:2380" for ip in cluster.ips)
    cluster.assert_keys()
    # RBAC as in the snapshot: auth on, an unauthenticated write refused.
    anonymous = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED",
        ca_certs=str(cluster.client().tls.ca_cert),
        cert_file=str(cluster.client().tls.client_cert),
        key_file=str(cluster.client().tls.client_key),
    )
    put = anonymous.request(
        "POST",
        f"https://{cluster.ips[0]}:2379/v3/kv/put",
        body=json.dumps({"key": "L2FwcC9ubw==", "value": "eA=="}).encode(),
    )
    assert put.status != 200 and "user name is empty" in put.data.decode()
    if cluster.version() >= (3, 5) and result["revision_bumped"]:
        assert cluster.revision() > revision_before
    else:  # 3.4: the snapshot's revision, said so in the output
        assert result["revision"] == sidecar["revision"] == cluster.revision()
        assert any("restarts from the snapshot's" in n for n in result["notes"])
    modes = cluster.bed.each(cluster.ips, "stat -c %a /etc/etcd/server.key /data/etcd")
    assert all(out.split() == ["600", "700"] for out in modes.values())


def test_restore_failing_on_the_root_password_leaves_no_resume_behind(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A snapshot whose root password nobody has: the restore is done, the password step
    fails (exit 2). A later restore of the same file must restore again (here: refused,
    the cluster answers), not take the hosts for restored and report success."""
    other = "Other.Root-Pw-91"
    cluster.client().user_change_password("root", other)
    pw = tmp_path / "pw.yml"
    pw.write_text(f"etcd_root_password: {other}\n")
    backup = json.loads(cluster.cli("backup", "--json", "-e", f"@{pw}").stdout)["path"]
    client(cluster.inventory, cluster.ips, password=other).user_change_password("root", PASSWORD)
    cluster.cli("rm", "-y")
    proc = cluster.cli("restore", backup, "-y", check=False)
    assert proc.returncode == 2 and "root password" in proc.stderr, proc.stderr
    assert not (cluster.inventory.parent / "files" / "backup" / "etcd.restoring.json").exists()
    assert not any(
        cluster.bed.each(
            cluster.ips, "ls /var/lib/etcd/.etcdsop-restore 2>/dev/null; true"
        ).values()
    )
    opened = client(cluster.inventory, cluster.ips, password=other)
    opened.put("/app/after", "x")
    again = cluster.cli("restore", backup, "-y", check=False)
    assert again.returncode == 3 and "answers on" in again.stderr, again.stderr
    assert opened.get("/app/after") == b"x"  # nothing was restored over it
    opened.user_change_password("root", PASSWORD)  # back to the module's (etcd.pass has it)
    cluster.assert_keys()


def test_recover_refused_while_a_quorum_answers(cluster: Cluster) -> None:
    before = cluster.voters()
    proc = cluster.cli("recover", "-y", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "a quorum answers" in proc.stderr and "etcdsop rm" in proc.stderr
    assert cluster.voters() == before
    cluster.assert_keys()


def test_recover_refused_when_the_quorum_comes_back_during_the_countdown(
    cluster: Cluster,
) -> None:
    """No leader at the first look (2 of 3 stopped), but the others are started while
    the operator reads the countdown: forcing a new cluster now would throw their
    membership away. The look is taken again after the countdown."""
    before = cluster.voters()
    stopped = cluster.ips[1:]
    cluster.bed.each(stopped, "systemctl stop etcd")
    proc = spawn("recover", "--from", cluster.ips[0], "-i", str(cluster.inventory))
    assert proc.stderr is not None
    output = []
    try:
        for line in proc.stderr:
            output.append(line)
            if "in 5s" in line:  # the countdown began: the guards passed
                cluster.bed.each(stopped, "systemctl start etcd")
                break
        output.append(proc.communicate(timeout=120)[1])
    finally:
        cluster.bed.each(stopped, "systemctl start etcd")
    text = "".join(output)
    assert proc.returncode == 3, text
    assert "a leader is known again" in text and "nothing was changed" in text
    assert cluster.voters() == before
    cluster.assert_keys()


def _claimed(cluster: Cluster) -> list[str]:
    found = cluster.bed.each(cluster.ips, "cat /run/etcdsop/dr-claim 2>/dev/null; true")
    return [ip for ip in cluster.ips if found[ip].strip()]


def test_a_second_admin_directory_cannot_recover_while_one_does(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Without a quorum there is no cluster lock: two admin nodes recovering at once
    could each force a new cluster from another member and fork the data. The first
    run claims the hosts before its countdown; a run from another copy of the
    inventory and its files/ is refused then, with nothing changed; Ctrl-C on the
    first takes its claims back, so the cluster is anyone's again."""
    before = cluster.voters()
    survivor, stopped = cluster.ips[0], cluster.ips[1:]
    other = tmp_path / "other-admin"
    shutil.copytree(cluster.inventory.parent, other)
    first: subprocess.Popen[str] | None = None
    output: list[str] = []
    try:
        cluster.bed.each(stopped, "systemctl stop etcd")
        deadline = time.monotonic() + 20  # check-quorum: the lone leader steps down
        while _knows_a_leader(cluster, survivor):
            assert time.monotonic() < deadline, "the survivor still knows a leader"
            time.sleep(0.3)
        first = spawn("recover", "--from", survivor, "-i", str(cluster.inventory))
        assert first.stderr is not None
        for line in first.stderr:
            output.append(line)
            if "in 5s" in line:  # the countdown: the hosts are claimed
                break
        assert _claimed(cluster) == cluster.ips, "".join(output)
        second = run_cli(
            "recover",
            "--from",
            cluster.ips[1],
            "-y",
            "-i",
            str(other / cluster.inventory.name),
            check=False,
        )
        first.send_signal(signal.SIGINT)
        output.append(first.communicate(timeout=60)[1])
        assert second.returncode == 3, second.stderr
        assert "another disaster-recovery run holds" in second.stderr, second.stderr
        assert str(cluster.inventory.parent.resolve() / "files") in second.stderr
        assert "nothing was changed" in second.stderr
        assert first.returncode == 130, "".join(output)
        assert _claimed(cluster) == []
        # Neither run changed a host: the survivor still runs, the others are stopped.
        states = cluster.bed.each(cluster.ips, "systemctl is-active etcd; true")
        assert [states[ip].strip() for ip in cluster.ips] == [
            "active",
            "inactive",
            "inactive",
        ]
    finally:
        if first is not None and first.poll() is None:
            first.kill()
        cluster.bed.each(stopped, "systemctl start etcd")
    deadline = time.monotonic() + 60
    while cluster.cli("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "not healthy 60 s after starting etcd again"
        time.sleep(1)
    assert cluster.voters() == before
    cluster.assert_keys()


def _nft(bed: Bed, ip: str, rules: str, check: bool = True) -> None:
    """nftables inside one sandbox host's network namespace (not the machine's)."""
    netns = Layout(SUBNET_INDEX).netns(bed.ips.index(ip) + 1)
    subprocess.run(["ip", "netns", "exec", netns, "nft", rules], check=check, capture_output=True)


def test_recover_refused_while_an_unreachable_majority_may_serve(cluster: Cluster) -> None:
    """A partition: the first host cut from its peers (no leader there), the other two
    (a quorum, still serving) cut from the admin node. A forced start on the first would
    fork the cluster, and its peers would stop, their writes lost, once the network heals."""
    alone, majority = cluster.ips[0], cluster.ips[1:]
    table = (
        "add table inet fault; add chain inet fault input { type filter hook input priority 0; }; "
    )
    admin = Layout(SUBNET_INDEX).gateway
    try:
        _nft(
            cluster.bed,
            alone,
            table + "add rule inet fault input tcp dport 2380 drop; "
            "add rule inet fault input tcp sport 2380 drop",
        )
        for ip in majority:
            _nft(
                cluster.bed,
                ip,
                table + f"add rule inet fault input ip saddr {admin} "
                "tcp dport { 22, 2379 } reject with tcp reset",
            )
        proc = cluster.cli("recover", "-y", check=False)
        assert proc.returncode == 3, proc.stderr
        assert "may still serve" in proc.stderr and "recover --from" in proc.stderr
        # Nothing changed: the cut-off member still runs on its own data, no recover begun.
        assert cluster.bed.ssh(alone, "systemctl is-active etcd").stdout.strip() == "active"
        assert not (cluster.inventory.parent / "files" / "backup" / "etcd.recovering.json").exists()
    finally:
        for ip in cluster.ips:
            _nft(cluster.bed, ip, "delete table inet fault", check=False)
    deadline = time.monotonic() + 60  # a 3.4 member back from a partition disrupts the leader
    while cluster.cli("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "not healthy 60 s after healing"
        time.sleep(1)
    assert cluster.voters() == sorted(f"https://{ip}:2380" for ip in cluster.ips)
    cluster.assert_keys()


_PEERS_CUT = (
    "add table inet fault; "
    "add chain inet fault input { type filter hook input priority 0; }; "
    "add chain inet fault output { type filter hook output priority 0; }; "
    "add rule inet fault input tcp dport 2380 drop; add rule inet fault input tcp sport 2380 drop; "
    "add rule inet fault output tcp dport 2380 drop; add rule inet fault output tcp sport 2380 drop"
)


def _knows_a_leader(cluster: Cluster, ip: str) -> bool:
    status = cluster.client([ip]).call(
        "/v3/maintenance/status", {}, endpoint=f"https://{ip}:2379", auth=False
    )
    return bool(int(status.get("leader", 0) or 0))


def test_recover_chooses_the_member_furthest_ahead(cluster: Cluster) -> None:
    """All three run and hold data, none knows a leader, and one is behind: it was cut
    off from its peers while the other two took writes. recover must choose one of the
    two ahead (their raft index is read without a login), or the writes only they hold
    would be lost. The choice is read at the countdown; Ctrl-C there changes nothing."""
    behind, ahead = cluster.ips[2], cluster.ips[:2]
    before = cluster.voters()
    ahead_keys = {f"/app/ahead/{i:02d}": "x" for i in range(50)}
    proc: subprocess.Popen[str] | None = None
    output: list[str] = []
    try:
        _nft(cluster.bed, behind, _PEERS_CUT)
        writer = cluster.client(ahead)
        for key, value in ahead_keys.items():
            writer.put(key, value)
        for ip in ahead:
            _nft(cluster.bed, ip, _PEERS_CUT)
        # check-quorum: a leader cut from its peers steps down within an election timeout.
        deadline = time.monotonic() + 20
        while any(_knows_a_leader(cluster, ip) for ip in cluster.ips):
            assert time.monotonic() < deadline, "a member still knows a leader"
            time.sleep(0.3)
        proc = spawn("recover", "-i", str(cluster.inventory))
        assert proc.stderr is not None
        for line in proc.stderr:
            output.append(line)
            if "in 5s" in line:  # the countdown: the source is chosen and named
                proc.send_signal(signal.SIGINT)
                break
        output.append(proc.communicate(timeout=60)[1])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for ip in cluster.ips:
            _nft(cluster.bed, ip, "delete table inet fault", check=False)
    text = "".join(output)
    assert proc.returncode == 130, text
    chosen = re.search(r"RECOVERING etcd cluster etcd from \S+ \((\S+)\)", text)
    assert chosen is not None and chosen.group(1) in ahead, text
    deadline = time.monotonic() + 60  # a 3.4 member back from a partition disrupts the leader
    while cluster.cli("status", check=False).returncode != 0:
        assert time.monotonic() < deadline, "not healthy 60 s after healing"
        time.sleep(1)
    assert cluster.voters() == before
    cluster.assert_keys()
    for ip in cluster.ips:
        assert cluster.client([ip]).get_prefix("/app/ahead/") == {
            k: v.encode() for k, v in ahead_keys.items()
        }
    cluster.client().delete_prefix("/app/ahead/")


def test_recover_killed_once_a_learner_started_promotes_it_on_the_rerun(
    cluster: Cluster,
) -> None:
    """kill -9 right after a member added back started as a learner: the re-run must
    promote it, not skip it as "a started member already" (that left the cluster a
    voter short, with its record gone and exit 0)."""
    before = cluster.voters()
    cluster.bed.each(cluster.ips[1:], "systemctl stop etcd")
    proc = spawn("recover", "--from", cluster.ips[0], "-y", "-i", str(cluster.inventory))
    assert proc.stderr is not None
    output = []
    for line in proc.stderr:
        output.append(line)
        if "started, healthy learner" in line:
            proc.kill()
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(output)
    rerun = cluster.cli("recover", "-y", "--json")
    assert json.loads(rerun.stdout)["source"] == cluster.ips[0]
    assert cluster.voters() == before  # every member started, none a learner
    cluster.assert_keys()
    assert _claimed(cluster) == []


def test_recover_from_the_last_member(cluster: Cluster) -> None:
    survivor, dead = cluster.ips[0], cluster.ips[1:]
    cluster.bed.each(dead, "systemctl stop etcd; rm -rf /data/etcd")
    # A leader alone steps down after an election timeout (check-quorum): from then on
    # the quorum is lost as far as anyone can tell.
    unauthenticated = cluster.client([survivor])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = unauthenticated.call(
            "/v3/maintenance/status", {}, endpoint=f"https://{survivor}:2379", auth=False
        )
        if not int(status.get("leader", 0) or 0):
            break
        time.sleep(0.2)
    proc = cluster.cli("recover", "-y", "--json")
    result = json.loads(proc.stdout)
    assert result["source"] == survivor and result["forced"]
    # No quorum, so no etcd lock: said at once, not after authenticating timed out.
    assert "cluster lock not taken: no member knows a leader" in proc.stderr
    assert sorted(result["added"]) == sorted(dead)
    assert cluster.voters() == sorted(f"https://{ip}:2380" for ip in cluster.ips)
    cluster.assert_keys()
    # The flag stayed nowhere: not in the unit, not in etcd.conf, no drop-in left.
    check = cluster.bed.ssh(
        survivor, "systemctl cat etcd; cat /etc/etcd/etcd.conf; ls /run/systemd/system"
    ).stdout
    assert "force-new-cluster" not in check
    assert _claimed(cluster) == []  # the run is complete: its claims are gone
    snapshot = Path(result["snapshot"])
    assert _mode(snapshot) == 0o600 and snapshot.stat().st_size > 0


# -- the backup timer: a sandbox host plays the admin node (it has systemd) -------------
_TOP = ("typer", "rich", "paramiko", "cryptography", "pyyaml", "urllib3")


def _distributions() -> set[str]:
    """etcdsop's run-time dependencies and theirs (extras left out)."""
    from importlib import metadata

    todo, seen = list(_TOP), set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for req in metadata.requires(name) or []:
            if "extra ==" in req or "python_version < " in req:
                continue
            todo.append(re.split(r"[ ;<>=!\[(~]", req, maxsplit=1)[0])
    return seen


def _admin_host(bed: Bed, cluster: Cluster, ip: str) -> Path:
    """Copy etcdsop, its dependencies, the PKI and an inventory into the host."""
    seq = bed.ips.index(ip) + 1
    root = sandbox.paths(SANDBOX_DIR).host_root(seq)
    lib = root / "opt" / "etcdsop-admin"
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    from importlib import metadata

    for name in _distributions():
        dist = metadata.distribution(name)
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file)))
            if "__pycache__" in file.parts or ".." in file.parts or not src.is_file():
                continue
            (lib / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, lib / file)
    import etcdsop

    shutil.copytree(Path(etcdsop.__file__).parent, lib / "etcdsop")
    admin = root / "root" / "admin"
    shutil.rmtree(admin, ignore_errors=True)
    (admin / "files").mkdir(parents=True)
    shutil.copytree(cluster.inventory.parent / "files" / "pki", admin / "files" / "pki")
    paths = sandbox.paths(SANDBOX_DIR)
    shutil.copy2(paths.ssh_key, admin / "id")
    shutil.copy2(paths.known_hosts, admin / "known_hosts")
    text = cluster.inventory.read_text()
    text = text.replace(str(paths.ssh_key), "/root/admin/id")
    text = text.replace(str(paths.known_hosts), "/root/admin/known_hosts")
    (admin / "pigsty.yml").write_text(text)
    return admin


def test_backup_timer_fires_then_is_removed(bed: Bed, cluster: Cluster) -> None:
    ip = bed.ips[3]
    admin = _admin_host(bed, cluster, ip)
    run = "cd /root/admin && PYTHONPATH=/opt/etcdsop-admin python3 -m etcdsop backup -i pigsty.yml"
    bed.ssh(ip, f"{run} --install-timer --on-calendar '*:*:0/5' --keep 3")
    try:
        backups = admin / "files" / "backup"
        deadline = time.monotonic() + 90
        while not list(backups.glob("etcd-*.db.json")) and time.monotonic() < deadline:
            time.sleep(1)
        made = sorted(backups.glob("etcd-*.db"))
        assert made, bed.ssh(ip, "journalctl -u etcdsop-backup-etcd -n 30 --no-pager").stdout
        assert _mode(made[0]) == 0o600
        sidecar = json.loads(made[0].with_name(made[0].name + ".json").read_text())
        assert sidecar["cluster"] == "etcd"
    finally:
        bed.ssh(ip, f"{run} --remove-timer")
    left = bed.ssh(
        ip,
        "ls /etc/systemd/system | grep etcdsop; systemctl list-timers --all | grep etcdsop",
        check=False,
    ).stdout
    assert left == ""
    bed.ssh(ip, "rm -rf /root/admin /opt/etcdsop-admin")
