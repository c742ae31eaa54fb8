"""`etcdsop recover`'s safety rules on real hosts (issue 22): never a learner as the
source, no old record steering a later run, the partition guard counting voters (not
spare hosts), and survivors restarted without a quorum ranked from their WAL. Each case
builds what it needs on the first four sandbox hosts."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.e2e.conftest import SUBNET_INDEX, Bed, run_cli, spawn
from tests.e2e.test_create import client

from etcdsop.sandbox.net import Layout

pytestmark = [pytest.mark.e2e]

_PEERS_CUT = (
    "add table inet fault; "
    "add chain inet fault input { type filter hook input priority 0; }; "
    "add chain inet fault output { type filter hook output priority 0; }; "
    "add rule inet fault input tcp dport 2380 drop; add rule inet fault input tcp sport 2380 drop; "
    "add rule inet fault output tcp dport 2380 drop; add rule inet fault output tcp sport 2380 drop"
)


def _nft(bed: Bed, ip: str, rules: str, check: bool = True) -> None:
    netns = Layout(SUBNET_INDEX).netns(bed.ips.index(ip) + 1)
    subprocess.run(["ip", "netns", "exec", netns, "nft", rules], check=check, capture_output=True)


def _heal(bed: Bed) -> None:
    for ip in bed.ips[:4]:
        _nft(bed, ip, "delete table inet fault", check=False)


def _cluster(bed: Bed, where: Path, voters: list[str], **kw: object) -> Path:
    inventory = bed.inventory(where, voters)
    run_cli("create", "-i", str(inventory))
    return bed.inventory(where, voters, **kw) if kw else inventory  # type: ignore[arg-type]


def _countdown(inventory: Path) -> tuple[int | None, str]:
    """recover up to its countdown (the source named), then Ctrl-C: nothing changed."""
    proc = spawn("recover", "-i", str(inventory))
    assert proc.stderr is not None
    out = []
    for line in proc.stderr:
        out.append(line)
        if "in 5s" in line:
            proc.send_signal(signal.SIGINT)
            break
    out.append(proc.communicate(timeout=60)[1])
    return proc.returncode, "".join(out)


def test_a_learner_is_never_the_source(clean: Bed, tmp_path: Path) -> None:
    """The only survivor holding data is a learner (etcd_learner: true), restarted after
    the voters died. A forced start from it made etcd panic "removed all voters" in a
    restart loop, and the record pinned that source for every re-run."""
    voters, learner = clean.ips[:3], clean.ips[3]
    inventory = _cluster(clean, tmp_path, voters)
    inventory = clean.inventory(
        tmp_path, [*voters, learner], host_vars={learner: {"etcd_learner": True}}
    )
    run_cli("add", learner, "-y", "-i", str(inventory))
    clean.each(voters, "systemctl stop etcd; rm -rf /data/etcd")
    clean.ssh(learner, "systemctl restart --no-block etcd")
    since = int(time.time())
    proc = run_cli("recover", "-y", "-i", str(inventory), check=False)
    assert proc.returncode == 3, proc.stderr
    assert f"{learner} is a learner" in proc.stderr and "etcdsop restore" in proc.stderr
    assert not (tmp_path / "files" / "backup" / "etcd.recovering.json").exists()
    journal = clean.ssh(learner, f"journalctl -u etcd --no-pager --since @{since}").stdout
    assert "removed all voters" not in journal
    assert clean.ssh(learner, "test -e /data/etcd/member/wal && echo kept").stdout.strip() == "kept"


def test_an_old_record_steers_nothing(clean: Bed, tmp_path: Path) -> None:
    """A record left by an earlier recover (one host was unreachable then) must neither
    bypass the "a quorum answers" refusal on a healthy cluster nor pin its source,
    snapshot and stamp onto a later, unrelated recover."""
    ips = clean.ips[:3]
    inventory = _cluster(clean, tmp_path, ips)
    backup = tmp_path / "files" / "backup"
    backup.mkdir(parents=True, exist_ok=True)
    old = {"source": ips[2], "snapshot": str(backup / "gone.db"), "stamp": "20261101T000000Z"}
    (backup / "etcd.recovering.json").write_text(json.dumps(old))
    proc = run_cli("recover", "-y", "-i", str(inventory), check=False)
    assert proc.returncode == 3 and "a quorum answers" in proc.stderr, proc.stderr
    assert not (backup / "etcd.recovering.json").exists()  # ended, never used
    # A later quorum loss with the old record back: the source is chosen afresh.
    (backup / "etcd.recovering.json").write_text(json.dumps(old))
    clean.each(ips[1:], "systemctl stop etcd; rm -rf /data/etcd")
    proc = run_cli("recover", "-y", "--json", "-i", str(inventory), check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["source"] == ips[0] and result["forced"]
    assert sorted(result["added"]) == sorted(ips[1:])
    assert not list(backup.glob("etcd.rec*.json"))


def test_the_partition_guard_counts_voters_not_spare_hosts(clean: Bed, tmp_path: Path) -> None:
    """Voters A, B, C and a spare D already in the etcd group (no data yet). B and C sit
    behind a partition, still a quorum. 2 unreachable of 4 inventory hosts passed the
    guard and forked the cluster; 2 of the 3 voters must be refused."""
    voters, spare = clean.ips[:3], clean.ips[3]
    inventory = _cluster(clean, tmp_path, voters)
    inventory = clean.inventory(tmp_path, [*voters, spare])
    admin = Layout(SUBNET_INDEX).gateway
    table = (
        "add table inet fault; add chain inet fault input { type filter hook input priority 0; }; "
    )
    try:
        _nft(clean, voters[0], _PEERS_CUT)
        for ip in voters[1:]:
            _nft(
                clean,
                ip,
                table + f"add rule inet fault input ip saddr {admin} "
                "tcp dport { 22, 2379 } reject with tcp reset",
            )
        proc = run_cli("recover", "-y", "-i", str(inventory), check=False)
        assert proc.returncode == 3, proc.stderr
        assert "may still serve" in proc.stderr and "of the 3 voters" in proc.stderr
        assert clean.ssh(voters[0], "systemctl is-active etcd").stdout.strip() == "active"
        assert not (tmp_path / "files" / "backup" / "etcd.recovering.json").exists()
    finally:
        _heal(clean)


def test_survivors_restarted_without_a_quorum_are_ranked_from_their_wal(
    clean: Bed, tmp_path: Path
) -> None:
    """After a power outage every survivor was restarted with no quorum: none serves
    /metrics. recover refused ("etcd stopped there") and left only a blind --from;
    reading each WAL it must choose one of the members ahead."""
    ips = clean.ips[:3]
    inventory = _cluster(clean, tmp_path, ips)
    behind, ahead = ips[2], ips[:2]
    try:
        _nft(clean, behind, _PEERS_CUT)
        writer = client(inventory, ahead)
        for i in range(30):
            writer.put(f"/app/ahead/{i:02d}", "x")
        for ip in ahead:
            _nft(clean, ip, _PEERS_CUT)
        clean.each(ips, "systemctl restart --no-block etcd")
        time.sleep(3)
        code, text = _countdown(inventory)
    finally:
        _heal(clean)
    assert code == 130, text
    chosen = re.search(r"RECOVERING etcd cluster etcd from \S+ \((\S+)\)", text)
    assert chosen is not None and chosen.group(1) in ahead, text
