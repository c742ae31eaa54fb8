"""When a booting sandbox host counts as up: `systemctl list-jobs` read (pure)."""

from __future__ import annotations

from etcdsop.sandbox.hosts import only_etcd_starting

# What a host whose etcd cannot reach a quorum shows, booted with its peers down.
HELD_BY_ETCD = [
    "1  graphical.target                     start waiting",
    "2  multi-user.target                    start waiting",
    "66 systemd-update-utmp-runlevel.service start waiting",
    "72 etcd.service                         start running",
]


def test_a_boot_held_only_by_etcds_start_is_up() -> None:
    assert only_etcd_starting(HELD_BY_ETCD)


def test_a_boot_with_another_job_running_is_not_up_yet() -> None:
    assert not only_etcd_starting([*HELD_BY_ETCD, "80 ssh.service start running"])
    assert not only_etcd_starting(["5 ssh.service start running"])
    assert not only_etcd_starting([])
