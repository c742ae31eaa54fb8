"""Small builders for model objects in pure-logic tests."""

from __future__ import annotations

from typing import Any

from etcdsop.model import Member, SshTarget


def member(ip: str = "10.10.10.10", seq: int = 1, **overrides: Any) -> Member:
    values: dict[str, Any] = {
        "ip": ip,
        "seq": seq,
        "cluster": "etcd",
        "data_dir": "/data/etcd",
        "port": 2379,
        "peer_port": 2380,
        "init": "new",
        "learner": False,
        "election_timeout": 1000,
        "heartbeat_interval": 100,
        "root_password": "S3cret.Pass",
        "safeguard": False,
        "rm_data": True,
        "rm_pkg": False,
        "cert_validity_days": 7300,
        "ssh": SshTarget(address=ip),
        "vars": {"admin_username": "dba"},
    }
    values.update(overrides)
    return Member(**values)


def trio() -> list[Member]:
    return [member(f"10.10.10.{10 + i}", i + 1) for i in range(3)]
