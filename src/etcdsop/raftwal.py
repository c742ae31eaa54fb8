"""A stopped (or quorum-less) member's raft state, read from its data dir (pure).

Without a quorum a restarted etcd serves nothing on its client port (it has not
published itself), and with pre-vote its committed-proposals gauge reads 0: recover
cannot rank the survivors from /metrics then. The WAL says it all: the last HardState
(term, commit: force-new-cluster keeps exactly the entries up to commit), the member's
own id (the metadata record), and, with the newest member/snap/*.snap, the membership
(voters and learners) as of the commit.

This module uses only the standard library and none of etcdsop: recover sends its
source to `python3 -` on the host (Pigsty hosts always have python3), which prints one
JSON line. Read-only: it opens files, never locks or writes them. etcd appends to the
WAL and fsyncs; a record cut short at the tail (being written, or torn by a crash) ends
the read, as etcd's own decoder does, and without a quorum nothing new commits anyway.

Formats (etcd 3.4-3.6, server/storage/wal and raft/raftpb): a WAL file is frames of an
int64 little-endian length word (low 56 bits: the record length; top bit set: padding
follows, (len>>56)&7 bytes), a zero word ends the preallocated tail; the frame holds a
walpb.Record {1 type, 2 crc, 3 data}; types 1 metadata {1 node id, 2 cluster id},
2 raftpb.Entry {1 type, 2 term, 3 index, 4 data}, 3 HardState {1 term, 2 vote,
3 commit}, 4 crc, 5 walpb.Snapshot {1 index, 2 term}. A .snap file is snappb.Snapshot
{1 crc, 2 raftpb.Snapshot {1 data, 2 metadata {1 ConfState {1 voters, 2 learners},
2 index, 3 term}}}. Entry types 1 ConfChange {2 type, 3 node id} and 2 ConfChangeV2
{2 changes: {1 type, 2 node id}}; change types 0 add voter (or promote), 1 remove,
2 update, 3 add learner.
"""

from __future__ import annotations

import json
import os
import struct
import sys

_METADATA, _ENTRY, _STATE, _CRC, _SNAPSHOT = 1, 2, 3, 4, 5
_CONF_CHANGE, _CONF_CHANGE_V2 = 1, 2
_ADD_VOTER, _REMOVE, _UPDATE, _ADD_LEARNER = 0, 1, 2, 3


class Torn(Exception):
    """Bytes that do not parse: a tail cut short, or not the format."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise Torn("varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, varint or bytes) pairs, in order."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise Torn("length")
            out.append((number, buf[pos : pos + size]))
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise Torn(f"wire type {wire}")
        if pos > len(buf):
            raise Torn("fixed")
    return out


def _ints(msg: list[tuple[int, int | bytes]], number: int) -> list[int]:
    """A repeated uint64, packed or not."""
    out: list[int] = []
    for n, value in msg:
        if n != number:
            continue
        if isinstance(value, int):
            out.append(value)
        else:
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                out.append(item)
    return out


def _int(msg: list[tuple[int, int | bytes]], number: int) -> int:
    found = _ints(msg, number)
    return found[-1] if found else 0


def _bytes(msg: list[tuple[int, int | bytes]], number: int) -> bytes:
    return next((v for n, v in reversed(msg) if n == number and isinstance(v, bytes)), b"")


def records(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """One WAL file's (type, data) records; True when a torn tail ended the read."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 8 <= len(data):
        (word,) = struct.unpack_from("<q", data, pos)
        if word == 0:
            return out, False  # the preallocated, zeroed tail
        size = word & ((1 << 56) - 1)
        pad = (word >> 56) & 7 if word < 0 else 0
        if pos + 8 + size + pad > len(data):
            return out, True
        try:
            msg = fields(data[pos + 8 : pos + 8 + size])
        except Torn:
            return out, True
        out.append((_int(msg, 1), _bytes(msg, 3)))
        pos += 8 + size + pad
    return out, pos != len(data)


def _conf_changes(entry_type: int, data: bytes) -> list[tuple[int, int]]:
    msg = fields(data)
    if entry_type == _CONF_CHANGE:
        return [(_int(msg, 2), _int(msg, 3))]
    changes = []
    for n, value in msg:
        if n == 2 and isinstance(value, bytes):
            single = fields(value)
            changes.append((_int(single, 1), _int(single, 2)))
    return changes


def _newest_snap(snap_files: list[tuple[str, bytes]]) -> tuple[int, set[int], set[int]] | None:
    """(index, voters, learners) of the newest .snap that parses whole."""
    for _, data in sorted(snap_files, reverse=True):  # %016x-%016x.snap: term, index
        try:
            raft_snap = fields(_bytes(fields(data), 2))
            meta = fields(_bytes(raft_snap, 2))
            conf = fields(_bytes(meta, 1))
            return _int(meta, 2), set(_ints(conf, 1)), set(_ints(conf, 2))
        except Torn:
            continue
    return None


def raft_state(
    wal_files: list[tuple[str, bytes]], snap_files: list[tuple[str, bytes]]
) -> dict[str, object]:
    """The member's raft state from its WAL files and .snap files (name, content)."""
    node_id = cluster_id = term = commit = 0
    entries: list[tuple[int, int, bytes]] = []  # (index, type, data) of conf changes
    last_index = 0
    first_index: int | None = None
    torn = False
    for _, data in sorted(wal_files):
        found, cut = records(data)
        torn = torn or cut
        for kind, body in found:
            msg = fields(body) if kind in (_METADATA, _ENTRY, _STATE) else []
            if kind == _METADATA and body:
                node_id, cluster_id = _int(msg, 1), _int(msg, 2)
            elif kind == _STATE and body:
                term, commit = _int(msg, 1), _int(msg, 3)
            elif kind == _ENTRY:
                index = _int(msg, 3)
                if first_index is None:
                    first_index = index
                # A leader's log replaced this one from `index` on: the rest is gone.
                entries = [e for e in entries if e[0] < index]
                last_index = index
                if _int(msg, 1) in (_CONF_CHANGE, _CONF_CHANGE_V2):
                    entries.append((index, _int(msg, 1), _bytes(msg, 4)))
        if cut:
            break  # a torn record ends the log, as etcd's decoder does
    if not wal_files:
        return {"error": "no WAL files"}
    state: dict[str, object] = {
        "node_id": f"{node_id:x}",
        "cluster_id": f"{cluster_id:x}",
        "term": term,
        "commit": commit,
        "last_index": last_index,
        "torn_tail": torn,
        "voters": None,
        "learners": None,
    }
    snap = _newest_snap(snap_files)
    base_index, voters, learners = snap if snap else (0, set(), set())
    if first_index is not None and first_index > base_index + 1:
        return state  # entries between the snapshot and the WAL are gone: unknown
    for index, kind, data in entries:
        if index <= base_index or index > commit:
            continue  # in the snapshot already, or not committed (force drops those)
        try:
            changes = _conf_changes(kind, data)
        except Torn:
            return state
        for change, node in changes:
            if change == _ADD_VOTER:
                learners.discard(node)
                voters.add(node)
            elif change == _ADD_LEARNER:
                voters.discard(node)
                learners.add(node)
            elif change == _REMOVE:
                voters.discard(node)
                learners.discard(node)
    state["voters"] = sorted(f"{v:x}" for v in voters)
    state["learners"] = sorted(f"{v:x}" for v in learners)
    return state


def _read_dir(path: str, suffix: str) -> list[tuple[str, bytes]]:
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(suffix))
    except OSError:
        return []
    out = []
    for name in names:
        with open(os.path.join(path, name), "rb") as handle:
            out.append((name, handle.read()))
    return out


def main(data_dir: str) -> None:
    try:
        wal = _read_dir(os.path.join(data_dir, "member", "wal"), ".wal")
        snap = _read_dir(os.path.join(data_dir, "member", "snap"), ".snap")
        state = raft_state(wal, snap)
    except (OSError, Torn, ValueError) as exc:
        state = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(state))


if __name__ == "__main__":
    main(sys.argv[1])
