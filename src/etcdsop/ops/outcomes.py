"""What `etcdsop reload` reports: one outcome per host and target, and the run's result.

Shared by the command (ops/reload.py) and the clients' side (clients/) that fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from etcdsop.ops import rbac

Status = Literal["changed", "unchanged", "failed", "skipped"]


@dataclass
class HostOutcome:
    target: str
    host: str
    status: Status
    message: str
    files: list[str] = field(default_factory=list)  # paths written (or to write)
    backups: list[str] = field(default_factory=list)
    diff: str = ""  # unified diffs, secrets masked

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "host": self.host,
            "status": self.status,
            "message": self.message,
            "files": self.files,
            "backups": self.backups,
            "diff": self.diff,
        }


@dataclass
class ReloadResult:
    targets: tuple[str, ...]
    dry_run: bool
    endpoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcomes: list[HostOutcome] = field(default_factory=list)
    root_password: str = "not checked"
    rbac: list[rbac.AccountResult] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    patroni_restarted: list[str] = field(default_factory=list)  # in restart order
    # pg cluster -> seconds from its etcd password change until every client had it
    password_windows: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def changed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if o.status == "changed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "dry_run": self.dry_run,
            "endpoints": self.endpoints,
            "notes": self.notes,
            "root_password": self.root_password,
            "rbac": [r.to_json() for r in self.rbac],
            "hosts": [o.to_json() for o in self.outcomes],
            "restarted": self.restarted,
            "patroni_restarted": self.patroni_restarted,
            "password_windows": self.password_windows,
            "failed": len(self.failed),
        }
