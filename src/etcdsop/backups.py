"""Backup files on the admin node: the JSON sidecar beside each snapshot, pruning,
and private (0600) JSON records written whole or not at all.

Pure where it can be: parsing and choosing what to prune touch no file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from etcdsop.errors import InputError

SIDECAR_SUFFIX = ".json"
# <cluster>-<UTC stamp>.db, the name save_snapshot gives (the stamp sorts by time).
_BACKUP_NAME = re.compile(r"^(?P<cluster>[A-Za-z0-9-]+)-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)\.db$")


@dataclass(frozen=True)
class Sidecar:
    """What is known about a snapshot, beside it as <file>.json (no secret in it)."""

    cluster: str
    cluster_id: str  # hex, as etcdctl prints it
    revision: int | None  # the cluster's revision when the snapshot began (None: unknown)
    members: tuple[str, ...]  # "name=peer URL" of the members then
    etcd_version: str
    sha256: str  # of the whole file
    size: int
    source: str  # the member it came from
    created: str  # UTC, ISO 8601

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["members"] = list(self.members)
        return doc


def sidecar_path(snapshot: Path) -> Path:
    return snapshot.with_name(snapshot.name + SIDECAR_SUFFIX)


def parse_sidecar(text: str, where: Path) -> Sidecar:
    """The sidecar's content; InputError naming the file when it is not one."""
    try:
        doc = json.loads(text)
        revision = doc.get("revision")
        return Sidecar(
            cluster=str(doc["cluster"]),
            cluster_id=str(doc["cluster_id"]),
            revision=None if revision is None else int(revision),
            members=tuple(str(m) for m in doc["members"]),
            etcd_version=str(doc["etcd_version"]),
            sha256=str(doc["sha256"]).lower(),
            size=int(doc["size"]),
            source=str(doc["source"]),
            created=str(doc["created"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{where}: not a backup sidecar ({type(exc).__name__}: {exc})") from None


def read_sidecar(snapshot: Path) -> Sidecar | None:
    path = sidecar_path(snapshot)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc}") from None
    return parse_sidecar(text, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_private_json(path: Path, doc: dict[str, Any]) -> None:
    """0600, fsynced, renamed into place: a reader finds it whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as sink:
        json.dump(doc, sink, indent=1)
        sink.write("\n")
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(partial, path)


def cluster_backups(names: Sequence[str], cluster: str) -> list[str]:
    """The backups of this cluster among file names, oldest first (by their UTC stamp)."""
    found = [(m["stamp"], n) for n in names if (m := _BACKUP_NAME.match(n))]
    return [n for stamp, n in sorted(found) if n == f"{cluster}-{stamp}.db"]


def to_prune(names: Sequence[str], cluster: str, keep: int) -> list[str]:
    """The oldest of this cluster's backups beyond the newest `keep` (keep >= 1)."""
    if keep < 1:
        raise InputError(f"--keep {keep}: keep at least 1 backup")
    ours = cluster_backups(names, cluster)
    return ours[: max(0, len(ours) - keep)]


def prune(backup_dir: Path, cluster: str, keep: int) -> list[Path]:
    """Delete the oldest backups of the cluster (and their sidecars) beyond `keep`."""
    names = [p.name for p in backup_dir.iterdir() if p.is_file()] if backup_dir.is_dir() else []
    removed = []
    for name in to_prune(names, cluster, keep):
        path = backup_dir / name
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        removed.append(path)
    return removed
