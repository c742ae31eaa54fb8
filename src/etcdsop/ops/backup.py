"""`etcdsop backup`: a verified snapshot from a healthy voter, a JSON sidecar beside it,
the oldest backups pruned beyond --keep.

It changes nothing in the cluster, so it takes no cluster lock: an hourly timer must
not fail because an operator's `add` holds the lock for minutes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etcdsop.backups import Sidecar, prune, sha256_file, sidecar_path, write_private_json
from etcdsop.errors import ClusterError, InputError
from etcdsop.etcd import EndpointStatus, EtcdClient, MemberInfo
from etcdsop.ops.common import Context
from etcdsop.snapshot import save_snapshot


@dataclass
class BackupResult:
    path: str
    sidecar: Sidecar
    pruned: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sidecar": str(sidecar_path(Path(self.path))),
            **self.sidecar.to_json(),
            "pruned": self.pruned,
        }


def check_output(output: Path | None) -> None:
    """-o FILE: a new file in an existing directory (exit 1 before any host is asked)."""
    if output is None:
        return
    if output.exists():
        raise InputError(f"-o {output}: the file exists; give a new name")
    if not output.parent.is_dir():
        raise InputError(f"-o {output}: no such directory {output.parent}")


def backup(ctx: Context, *, output: Path | None = None, keep: int | None = None) -> BackupResult:
    check_output(output)
    inventory = ctx.inventory
    ctx.report.phase(f"backup of cluster {inventory.cluster}")
    view = ctx.probe()
    if not view.live:
        raise ClusterError(
            f"no member of cluster {inventory.cluster!r} answers: nothing to back up"
        )
    client = ctx.voter_client(view)
    source, status = _source(client, view.members)
    url = source.client_urls[0]
    revision = _revision(client, url)
    backup_dir = inventory.files_dir / "backup"
    path = save_snapshot(client, url, output.parent if output else backup_dir, inventory.cluster)
    if output is not None:
        os.replace(path, output)
        path = output
    sidecar = Sidecar(
        cluster=inventory.cluster,
        cluster_id=f"{view.cluster_id or 0:x}",
        revision=revision,
        members=tuple(f"{m.name}={m.peer_urls[0]}" for m in view.members if m.peer_urls),
        etcd_version=status.version,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        source=source.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_private_json(sidecar_path(path), sidecar.to_json())
    ctx.snapshots.append(str(path))
    ctx.report.info(
        f"snapshot from {source.name}: {path} ({sidecar.size} bytes, revision {revision}, verified)"
    )
    result = BackupResult(str(path), sidecar)
    if keep is not None:
        result.pruned = [str(p) for p in prune(path.parent, inventory.cluster, keep)]
        for gone in result.pruned:
            ctx.report.info(f"pruned {gone} (--keep {keep})")
    return result


def _source(
    client: EtcdClient, members: tuple[MemberInfo, ...]
) -> tuple[MemberInfo, EndpointStatus]:
    """A healthy voter, a follower when there is one (the leader has enough to do),
    the most advanced of them."""
    found: list[tuple[MemberInfo, EndpointStatus]] = []
    for member in members:
        if member.is_learner or not member.started or not member.client_urls:
            continue
        url = member.client_urls[0]
        with contextlib.suppress(ClusterError):
            if client.health(url):
                found.append((member, client.status(url)))
    if not found:
        raise ClusterError("no healthy voter to take a snapshot from")
    return max(found, key=lambda ms: (ms[1].leader != ms[1].member_id, ms[1].raft_index))


def _revision(client: EtcdClient, url: str) -> int | None:
    """The store revision the member serves now: the snapshot begins at or after it."""
    with contextlib.suppress(ClusterError, KeyError, TypeError, ValueError):
        data = client.call("/v3/maintenance/status", {}, endpoint=url)
        return int(data["header"]["revision"])
    return None
