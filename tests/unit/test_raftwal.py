"""The offline WAL reader (etcdsop.raftwal) on WAL and snap bytes built here, in etcd's
formats: frames, padding, a torn tail, a truncated log, learners and promotions."""

from __future__ import annotations

import struct

from etcdsop.raftwal import raft_state, records


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _msg(*pairs: tuple[int, int | bytes]) -> bytes:
    out = b""
    for number, value in pairs:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return out


def _frame(kind: int, data: bytes, pad: int = 0) -> bytes:
    record = _msg((1, kind), (2, 12345), (3, data))
    word = len(record) | ((0x80 | pad) << 56 if pad else 0)
    return struct.pack("<Q", word) + record + b"\0" * pad


def _entry(index: int, term: int, kind: int = 0, data: bytes = b"") -> bytes:
    return _frame(2, _msg((1, kind), (2, term), (3, index), (4, data)), pad=3)


def _conf(index: int, change: int, node: int) -> bytes:
    return _entry(index, 1, 1, _msg((2, change), (3, node)))


def _state(term: int, commit: int) -> bytes:
    return _frame(3, _msg((1, term), (2, 1), (3, commit)))


HEAD = _frame(4, b"") + _frame(1, _msg((1, 0xA1), (2, 0xC1)))
BOOT = _conf(1, 0, 0xA1) + _conf(2, 0, 0xB2) + _conf(3, 0, 0xC3)


def test_last_hardstate_and_membership() -> None:
    wal = HEAD + BOOT + _entry(4, 2) + _state(2, 4) + _conf(5, 3, 0xD4) + _state(2, 5)
    state = raft_state([("0-0.wal", wal + b"\0" * 64)], [])
    assert (state["node_id"], state["term"], state["commit"]) == ("a1", 2, 5)
    assert state["voters"] == ["a1", "b2", "c3"] and state["learners"] == ["d4"]
    promoted = wal + _conf(6, 0, 0xD4) + _state(2, 6)
    assert raft_state([("0-0.wal", promoted)], [])["learners"] == []


def test_uncommitted_changes_and_a_torn_tail_are_left_out() -> None:
    wal = HEAD + BOOT + _state(1, 3) + _conf(4, 3, 0xA1)  # self made a learner, uncommitted
    torn = _state(9, 99)[:-3]
    state = raft_state([("0-0.wal", wal + torn)], [])
    assert state["commit"] == 3 and state["torn_tail"] is True
    assert state["learners"] == []


def test_a_replaced_log_suffix_is_dropped() -> None:
    wal = HEAD + BOOT + _conf(4, 1, 0xC3) + _conf(4, 0, 0xD4) + _state(3, 4)
    assert raft_state([("0-0.wal", wal)], [])["voters"] == ["a1", "b2", "c3", "d4"]


def test_membership_from_the_newest_snap() -> None:
    conf = _msg((1, 0xA1), (1, 0xB2), (2, 0xD4))
    snap = _msg((1, 7), (2, _msg((2, _msg((1, conf), (2, 100), (3, 4))))))
    wal = HEAD + _entry(101, 4) + _state(4, 101)
    state = raft_state([("1-64.wal", wal)], [("4-64.snap", snap), ("1-1.snap", b"\x0a\xff")])
    assert state["voters"] == ["a1", "b2"] and state["learners"] == ["d4"]
    # Entries missing between the snapshot and the WAL: the membership is unknown.
    assert raft_state([("1-64.wal", HEAD + _entry(200, 4) + _state(4, 200))], [])["voters"] is None


def test_frames_end_at_the_zeroed_tail() -> None:
    found, torn = records(HEAD + b"\0" * 16)
    assert [k for k, _ in found] == [4, 1] and not torn
