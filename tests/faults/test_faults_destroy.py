"""destroy (`rm -y`, no IP), interrupted after each progress line, then re-run.

Once one member is stopped the cluster may have no quorum left for a new snapshot: the
re-run must go on with the verified snapshot the interrupted run took (and say so), and
that snapshot must hold every key the cluster had.
"""

from __future__ import annotations

import pytest
from tests.faults.harness import KEYS, Harness, sweep, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_destroy_converges_after_an_interruption_at_every_step(harness: Harness) -> None:
    ips = harness.ips[:3]
    backups = harness.inventory.parent / "files" / "backup"

    def reset() -> None:
        harness.bed.wipe(ips)
        harness.cli("create", "-l", ",".join(ips))
        write_keys(harness, ips)

    def destroyed() -> list[str]:
        problems = []
        state = "systemctl is-active etcd; test -e /data/etcd/member && echo data; "
        state += "test -e /etc/etcd/etcd.conf && echo conf; true"
        for ip, out in harness.bed.each(ips, state).items():
            left = [word for word in out.split() if word != "inactive"]
            if left:
                problems.append(f"{ip}: {' '.join(left)} left")
        snapshots = sorted(backups.glob("*.db"), key=lambda p: p.stat().st_mtime)
        if not snapshots:
            return [*problems, "no snapshot in files/backup"]
        data = snapshots[-1].read_bytes()  # bolt keeps keys and values as they are
        missing = [k for k, v in KEYS.items() if k.encode() not in data or v.encode() not in data]
        if missing:
            problems.append(f"{len(missing)} keys missing from {snapshots[-1].name}")
        if (backups / "etcd.destroying.json").exists():
            problems.append("the destroy record is left")
        return problems

    reset()
    figures = sweep(
        harness,
        "destroy",
        ["rm", "-y"],
        voters_after=ips,
        absent_after=ips,
        writer_ips=None,
        reset=reset,
        keys=False,
        check=destroyed,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.fault_points >= 8
