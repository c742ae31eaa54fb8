"""`etcdsop restore`'s safety rules on real hosts (issue 22): the snapshot reaches every
host, checked, before any etcd stops (a host without the space refuses the restore and
the cluster runs on as it was), and a host rebooted mid-restore, before its data swap,
does not start its old data (etcd is enabled there only by the swap). One 3-member
cluster shared in file order; each case leaves it whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import SANDBOX_DIR, Bed, run_cli
from tests.e2e.test_create import client, unit_times

from etcdsop import sandbox
from etcdsop.etcd import EtcdClient

pytestmark = [pytest.mark.e2e]

KEYS = {f"/app/rs/{i:03d}": f"value-{i}" for i in range(200)}
LATER = "/app/rs/written-after-the-backup"


@pytest.fixture(scope="module")
def cluster(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    ips = bed.ips[:3]
    bed.wipe(ips)
    inventory = bed.inventory(tmp_path_factory.mktemp("restore-safety"), ips)
    run_cli("create", "-i", str(inventory))
    c = client(inventory, ips)
    for key, value in KEYS.items():
        c.put(key, value)
    yield inventory, ips
    bed.each(ips, "umount /var/lib/etcd 2>/dev/null; rm -rf /data/etcd.pre-*; true")
    bed.wipe(ips)


def _backup(inventory: Path) -> Path:
    return Path(json.loads(run_cli("backup", "--json", "-i", str(inventory)).stdout)["path"])


def _keys(c: EtcdClient) -> dict[str, bytes]:
    return c.get_prefix("/app/rs/")


def test_a_host_without_room_for_the_snapshot_refuses_before_any_etcd_stops(
    bed: Bed, cluster: tuple[Path, list[str]]
) -> None:
    inventory, ips = cluster
    snapshot = _backup(inventory)
    client(inventory, ips).put(LATER, "kept")
    before = unit_times(bed, ips)
    small = ips[2]
    # Room for a few KiB where the upload goes: less than the snapshot.
    bed.ssh(small, "mount -t tmpfs -o size=16k etcdsop-small /var/lib/etcd")
    try:
        proc = run_cli("restore", str(snapshot), "-y", "--force", "-i", str(inventory), check=False)
    finally:
        bed.ssh(small, "umount /var/lib/etcd")
    assert proc.returncode != 0, proc.stdout
    line = next(x for x in proc.stderr.splitlines() if x.startswith("error:"))
    assert small in line and "not enough free space" in proc.stderr, proc.stderr
    # Nothing stopped, nothing moved: the same etcd processes, the write after the backup.
    assert unit_times(bed, ips) == before
    assert not any(bed.each(ips, "ls -d /data/etcd.* 2>/dev/null; true").values())
    c = client(inventory, ips)
    assert _keys(c) == {**{k: v.encode() for k, v in KEYS.items()}, LATER: b"kept"}
    assert all(not m.is_learner and m.started for m in c.member_list())


def test_a_host_rebooted_before_its_swap_does_not_start_its_old_data(
    bed: Bed, cluster: tuple[Path, list[str]]
) -> None:
    """The swap fails on one host (its /data read-only), the others are restored; that
    host reboots (the mount gone) before a re-run: its etcd must stay down, not start
    the old data beside the restored members. The re-run then completes."""
    inventory, ips = cluster
    snapshot = _backup(inventory)
    in_snapshot = _keys(client(inventory, ips))
    client(inventory, ips).put(LATER, "gone after the restore")
    args = ["restore", str(snapshot), "-y", "--force", "-i", str(inventory)]
    stuck = ips[0]
    bed.ssh(stuck, "mount --bind /data /data && mount -o remount,bind,ro /data")
    try:
        failed = run_cli(*args, check=False)
    finally:
        bed.ssh(stuck, "umount /data", check=False)
    assert failed.returncode != 0, failed.stderr
    assert "read-only file system" in failed.stderr, failed.stderr
    sandbox.host_power_off(stuck, state_dir=SANDBOX_DIR)
    sandbox.host_power_on(stuck, state_dir=SANDBOX_DIR)
    state = bed.ssh(stuck, "systemctl is-enabled etcd; systemctl is-active etcd", check=False)
    assert state.stdout.split() == ["disabled", "inactive"], state.stdout
    assert bed.ssh(stuck, "test -d /data/etcd/member", check=False).returncode == 0  # unswapped
    again = run_cli(*args, check=False)
    assert again.returncode == 0, again.stderr
    c = client(inventory, ips)
    assert _keys(c) == in_snapshot  # the snapshot's, whole: the later write gone
    assert sorted(m.peer_urls[0] for m in c.member_list() if m.started and not m.is_learner) == (
        sorted(f"https://{ip}:2380" for ip in ips)
    )
    enabled = bed.each(ips, "systemctl is-enabled etcd")
    assert all(out.strip() == "enabled" for out in enabled.values()), enabled
