"""A member's own view of raft from its Prometheus /metrics page (pure parsing).

/metrics is plain HTTP on the client port, never behind a login. From etcd 3.4.42,
3.5.28 and 3.6.9 on (CVE-2026-33413) Maintenance Status and the member list answer
only after a login, and a login needs a quorum: without one, /metrics is what still
says whether a member knows a leader and how far its log is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `name{label="value",...} 1.2e+06` or `name 3`; comments and other metrics ignored.
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(?P<key>[a-z_]+)="(?P<value>[^"]*)"')


@dataclass(frozen=True)
class MemberMetrics:
    """What /metrics says; None where the page does not say it."""

    member_id: int | None  # etcd_server_id's server_id label
    has_leader: bool | None
    is_leader: bool | None
    is_learner: bool | None
    committed_index: int | None  # raft's commit index, as Status's raftIndex
    version: str | None
    db_size: int | None
    db_size_in_use: int | None


def parse_metrics(text: str) -> MemberMetrics:
    values: dict[str, float] = {}
    labels: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match is None:
            continue
        name = match["name"]
        try:
            values[name] = float(match["value"])
        except ValueError:
            continue
        if match["labels"]:
            labels[name] = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"])}

    def flag(name: str) -> bool | None:
        return None if name not in values else values[name] == 1

    def count(name: str) -> int | None:
        return None if name not in values else int(values[name])

    server_id = labels.get("etcd_server_id", {}).get("server_id")
    try:
        member_id = int(server_id, 16) if server_id else None
    except ValueError:
        member_id = None
    return MemberMetrics(
        member_id=member_id,
        has_leader=flag("etcd_server_has_leader"),
        is_leader=flag("etcd_server_is_leader"),
        is_learner=flag("etcd_server_is_learner"),
        committed_index=count("etcd_server_proposals_committed_total"),
        version=labels.get("etcd_server_version", {}).get("server_version"),
        db_size=count("etcd_mvcc_db_total_size_in_bytes"),
        db_size_in_use=count("etcd_mvcc_db_total_size_in_use_in_bytes"),
    )
