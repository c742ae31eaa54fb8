"""Snapshots on the admin node before any destructive step, checked before relied on."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient

_BOLT_MAGIC = 0xED0CDAED
_HASH_LEN = 32  # etcd appends the sha256 of the bolt file to a streamed snapshot


def verify_snapshot(path: Path) -> None:
    """A valid etcd snapshot: a bolt file (magic in the meta page) + its sha256 trailer.

    The same integrity check `etcdctl snapshot restore` makes before it restores.
    """
    size = path.stat().st_size
    if size < 4096 + _HASH_LEN:
        raise ClusterError(f"snapshot {path} is too small ({size} bytes)")
    # Streamed in chunks: a snapshot may be several GB (the quota is 8 GiB).
    digest = hashlib.sha256()
    with path.open("rb") as source:
        head = source.read(4096)
        digest.update(head)
        left = size - _HASH_LEN - len(head)
        while left > 0:
            chunk = source.read(min(left, 1 << 20))
            if not chunk:
                raise ClusterError(f"snapshot {path} changed while it was read")
            digest.update(chunk)
            left -= len(chunk)
        trailer = source.read(_HASH_LEN)
    if digest.digest() != trailer:
        raise ClusterError(f"snapshot {path} fails its sha256 check")
    (magic,) = struct.unpack_from("<I", head, 16)
    if magic != _BOLT_MAGIC:
        raise ClusterError(f"snapshot {path} is not a bolt database")


def save_snapshot(client: EtcdClient, endpoint: str, backup_dir: Path, cluster: str) -> Path:
    """Stream a snapshot from endpoint into backup_dir/<cluster>-<UTC>.db (0600), verified."""
    return _save(backup_dir, cluster, lambda sink: client.snapshot(endpoint, sink))


def save_bolt_copy(db: bytes, backup_dir: Path, cluster: str) -> Path:
    """A member's own bolt file (member/snap/db, read while etcd was stopped) as a
    snapshot: the sha256 trailer a streamed snapshot carries is appended, so it is
    checked and restored like any other."""

    def fill(sink: BinaryIO) -> None:
        sink.write(db)
        sink.write(hashlib.sha256(db).digest())

    return _save(backup_dir, cluster, fill)


def _save(backup_dir: Path, cluster: str, fill: Callable[[BinaryIO], object]) -> Path:
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = backup_dir / f"{cluster}-{stamp}.db"
    partial = path.with_suffix(".db.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            fill(sink)
            sink.flush()
            os.fsync(sink.fileno())
        verify_snapshot(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
