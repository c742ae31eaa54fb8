"""Monitoring targets on infra hosts, as Pigsty's etcd_register writes them, over real SSH."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import Bed, run_cli

pytestmark = pytest.mark.e2e

TARGETS = "/infra/targets/etcd"


def listing(bed: Bed, ip: str) -> dict[str, str]:
    out = bed.ssh(ip, f"ls -A {TARGETS}").stdout  # -A: no temporary file may be left either
    return {name: bed.ssh(ip, f"cat {TARGETS}/{name}").stdout for name in out.split()}


def test_create_add_rm_keep_the_infra_targets_in_step(clean: Bed, tmp_path: Path) -> None:
    members, monitor, bare = clean.ips[:4], clean.ips[4], clean.ips[5]
    clean.ssh(monitor, f"rm -rf /infra && install -d {TARGETS}")
    clean.ssh(bare, "rm -rf /infra")
    inventory = clean.inventory(tmp_path, members)
    doc = yaml.safe_load(inventory.read_text())
    doc["all"]["children"]["infra"] = {"hosts": {monitor: {"infra_seq": 1}, bare: {}}}
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    inv = str(inventory)

    proc = run_cli("create", "-i", inv, "-l", ",".join(members[:3]))
    assert f"{bare}: no {TARGETS} (no monitoring here): skipped" in proc.stderr
    assert clean.ssh(bare, "test -e /infra", check=False).returncode != 0
    targets = listing(clean, monitor)
    assert sorted(targets) == ["etcd-1.yml", "etcd-2.yml", "etcd-3.yml"]
    assert targets["etcd-2.yml"] == (
        f"# etcd-2 @ {members[1]}\n"
        f"- labels: {{ ip: {members[1]} , ins: etcd-2 , cls: etcd }}\n"
        f"  targets: [ {members[1]}:2379 ]\n"
    )
    # A re-run leaves the files as they are (same inode: nothing rewritten).
    inode = clean.ssh(monitor, f"stat -c %i {TARGETS}/etcd-1.yml").stdout
    run_cli("create", "-i", inv, "-l", ",".join(members[:3]))
    assert clean.ssh(monitor, f"stat -c %i {TARGETS}/etcd-1.yml").stdout == inode

    run_cli("add", "-i", inv, "--yes", members[3])
    assert sorted(listing(clean, monitor)) == [f"etcd-{i}.yml" for i in range(1, 5)]

    run_cli("rm", "-i", inv, "--yes", "--no-backup", members[0])
    assert sorted(listing(clean, monitor)) == ["etcd-2.yml", "etcd-3.yml", "etcd-4.yml"]

    run_cli("rm", "-i", inv, "--yes", "--no-backup")
    assert listing(clean, monitor) == {}
    clean.ssh(monitor, "rm -rf /infra")
