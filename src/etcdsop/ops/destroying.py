"""A destroy in progress, recorded on the admin node beside its snapshot.

Once a destroy has stopped a member the cluster may have no quorum left, and a
snapshot needs one (etcd authenticates through raft). So the snapshot destroy took
before it stopped anything is named in files/backup/<cluster>.destroying.json; a
re-run of the interrupted destroy finds it there, checks the file again and goes on
with it as the backup. A finished destroy, and a create, remove the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from etcdsop.backups import write_private_json
from etcdsop.errors import ClusterError
from etcdsop.model import Inventory
from etcdsop.snapshot import verify_snapshot


@dataclass(frozen=True)
class DestroyRecord:
    snapshot: Path
    hosts: tuple[str, ...]
    started: str  # UTC, ISO 8601


def record_path(inventory: Inventory) -> Path:
    return inventory.files_dir / "backup" / f"{inventory.cluster}.destroying.json"


def write_record(inventory: Inventory, snapshot: str) -> None:
    """Before the first member stops: written whole (rename) and 0600, or not at all."""
    path = record_path(inventory)
    doc = {
        "snapshot": snapshot,
        "hosts": sorted(m.ip for m in inventory.members),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_private_json(path, doc)


def interrupted_destroy(inventory: Inventory) -> DestroyRecord | None:
    """The record of an earlier destroy of these very hosts, its snapshot still whole."""
    path = record_path(inventory)
    try:
        doc = json.loads(path.read_text())
        record = DestroyRecord(Path(doc["snapshot"]), tuple(doc["hosts"]), str(doc["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if list(record.hosts) != sorted(m.ip for m in inventory.members):
        return None  # another set of hosts: not the destroy this one continues
    try:
        verify_snapshot(record.snapshot)
    except (OSError, ClusterError):
        return None
    return record


def clear_record(inventory: Inventory) -> None:
    record_path(inventory).unlink(missing_ok=True)
