"""The audit trail and the admin-node lock: pure parts and real files, no hosts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from etcdsop import audit
from etcdsop.errors import GuardRefused
from etcdsop.lock import FileLock, Holder


def test_secret_assignments_are_masked_and_nothing_else() -> None:
    argv = ["etcdsop", "create", "-e", "etcd_root_password=Top.Secret", "-e", "etcd_seq=3"]
    argv += ["-e", "pg_etcd_password=x=y", "-i", "pigsty.yml"]
    assert audit.masked_argv(argv) == [
        "etcdsop",
        "create",
        "-e",
        "etcd_root_password=******",
        "-e",
        "etcd_seq=3",
        "-e",
        "pg_etcd_password=******",
        "-i",
        "pigsty.yml",
    ]


def test_lines_are_appended_0600_and_read_back_newest_last(tmp_path: Path) -> None:
    for i in range(5):
        audit.append(tmp_path, {"command": f"etcdsop add {i}", "outcome": "ok"})
    path = tmp_path / audit.LOG_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [r["command"] for r in audit.read(tmp_path, 2)] == ["etcdsop add 3", "etcdsop add 4"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_second_holder_of_the_admin_node_lock_is_named_and_refused(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "l"), FileLock(tmp_path / "l")
    holder = Holder.me("etcdsop add 10.0.0.4")
    first.acquire(holder, wait=0, say=lambda _m: None)
    try:
        with pytest.raises(
            GuardRefused, match=rf"locked by .* \(pid {os.getpid()}\) running `etcdsop add"
        ):
            second.acquire(Holder.me("etcdsop rm"), wait=0.6, say=lambda _m: None)
    finally:
        first.release()
    second.acquire(Holder.me("etcdsop rm"), wait=0, say=lambda _m: None)  # free now
    second.release()


def test_holder_round_trips_and_tolerates_garbage() -> None:
    me = Holder.me("etcdsop create")
    assert Holder.parse(me.to_bytes()) == me
    assert Holder.parse(b"not json") is None
    assert Holder.parse(b'{"host": "h"}') is None
