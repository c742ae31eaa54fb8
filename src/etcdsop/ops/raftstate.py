"""recover's offline read of each member's raft state (the reader is etcdsop.raftwal,
sent to `python3 -` on the host: read-only, no secret involved)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from etcdsop import raftwal
from etcdsop.errors import ClusterError
from etcdsop.model import Member
from etcdsop.ops.hostops import safe_data_dir
from etcdsop.remote import RemoteHost

_SOURCE = Path(raftwal.__file__).read_bytes()


@dataclass(frozen=True)
class RaftState:
    """What a member's WAL says; problem is set when it could not be read."""

    node_id: str = ""
    term: int | None = None
    commit: int | None = None
    voters: tuple[str, ...] | None = None  # None: the membership is unknown
    learners: tuple[str, ...] | None = None
    problem: str = ""

    @property
    def is_learner(self) -> bool | None:
        if self.learners is None or not self.node_id:
            return None
        return self.node_id in self.learners


def parse_state(text: str) -> RaftState:
    """The reader's JSON line (pure)."""
    try:
        doc = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return RaftState(problem="the WAL reader printed no result")
    if not isinstance(doc, dict):
        return RaftState(problem="the WAL reader printed no result")
    if doc.get("error"):
        return RaftState(problem=str(doc["error"]))
    voters, learners = doc.get("voters"), doc.get("learners")
    return RaftState(
        node_id=str(doc.get("node_id", "")),
        term=int(doc["term"]),
        commit=int(doc["commit"]) or None,  # 0: no HardState written, nothing known
        voters=tuple(voters) if isinstance(voters, list) else None,
        learners=tuple(learners) if isinstance(learners, list) else None,
    )


def read_state(host: RemoteHost, member: Member) -> RaftState:
    """Read the member's WAL on its host (etcd may run: the read never locks or writes)."""
    try:
        result = host.run(
            ["python3", "-", safe_data_dir(member)], stdin=_SOURCE, timeout=120, check=False
        )
    except ClusterError as exc:
        return RaftState(problem=exc.message)
    if result.rc != 0:
        tail = (result.stderr.strip().splitlines() or ["python3 failed"])[-1]
        return RaftState(problem=tail)
    return parse_state(result.stdout)
