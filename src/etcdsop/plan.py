"""Pure decisions: what must change on a host, and whether etcd must (re)start.

Inputs are snapshots (HostFacts, the live member list); nothing here touches a host.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from etcdsop.etcd import MemberInfo
from etcdsop.facts import HostFacts
from etcdsop.model import Member
from etcdsop.render import CA_CRT, ETCD_CONF, UNIT, NodeDir, NodeFile

# etcd reads these only when it bootstraps a data dir: changing them on a live
# member needs no restart (they matter again only if the data dir is rebuilt).
BOOTSTRAP_ONLY_KEYS = frozenset(
    {"initial-cluster", "initial-cluster-state", "initial-cluster-token"}
)

# Unit settings systemd applies from the reloaded unit when they next matter (the next
# start, stop or exit): a change of these alone needs a daemon-reload, not a restart.
RELOAD_ONLY_UNIT_KEYS = frozenset(
    {"Description", "Documentation", "TimeoutStartSec", "TimeoutStopSec"}
)

ServiceAction = Literal["none", "start", "restart", "join"]


@dataclass(frozen=True)
class FileChange:
    file: NodeFile
    kind: Literal["create", "update", "attributes"]
    diff: str  # unified diff; secrets masked

    @property
    def path(self) -> str:
        return self.file.path


@dataclass(frozen=True)
class HostPlan:
    member: Member
    install_package: bool
    create_user: bool
    dirs: tuple[NodeDir, ...]  # directories to create or fix
    changes: tuple[FileChange, ...]
    daemon_reload: bool
    enable: bool
    service: ServiceAction
    reasons: tuple[str, ...] = field(default=())  # why etcd (re)starts

    @property
    def changed(self) -> bool:
        return bool(
            self.install_package
            or self.create_user
            or self.dirs
            or self.changes
            or self.enable
            or self.service != "none"
        )


def file_changes(files: Sequence[NodeFile], facts: HostFacts) -> list[FileChange]:
    changes: list[FileChange] = []
    for wanted in files:
        current = facts.files.get(wanted.path)
        if current is None:
            changes.append(FileChange(wanted, "create", _diff(wanted, None)))
        elif not current.same_content(wanted.content):
            changes.append(FileChange(wanted, "update", _diff(wanted, current.content)))
        elif (current.mode, current.owner, current.group) != (
            wanted.mode,
            wanted.owner,
            wanted.group,
        ):
            changes.append(
                FileChange(
                    wanted,
                    "attributes",
                    f"{wanted.path}: {current.owner}:{current.group} {current.mode:04o} -> "
                    f"{wanted.owner}:{wanted.group} {wanted.mode:04o}",
                )
            )
    return changes


def dir_changes(dirs: Sequence[NodeDir], facts: HostFacts) -> list[NodeDir]:
    out = []
    for wanted in dirs:
        current = facts.dirs.get(wanted.path)
        if current is None or (current.mode, current.owner, current.group) != (
            wanted.mode,
            wanted.owner,
            wanted.group,
        ):
            out.append(wanted)
    return out


def _diff(wanted: NodeFile, old: bytes | None) -> str:
    label = wanted.path
    if wanted.secret:
        return f"{label}: {'new' if old is None else 'changed'} (secret, content hidden)"
    if wanted.path.endswith(".crt"):
        return f"{label}: {'new' if old is None else 'changed'} certificate"
    before = (old or b"").decode(errors="replace").splitlines(keepends=True)
    after = wanted.content.decode(errors="replace").splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(
            before, after, fromfile=label if old is not None else "/dev/null", tofile=label
        )
    )


def conf_needs_restart(old: bytes | None, new: bytes) -> bool:
    """True when a key etcd reads at every start changed (bootstrap-only keys ignored)."""
    if old is None:
        return True
    try:
        before, after = yaml.safe_load(old), yaml.safe_load(new)
    except yaml.YAMLError:
        return True
    if not isinstance(before, dict) or not isinstance(after, dict):
        return True
    return _runtime(before) != _runtime(after)


def unit_needs_restart(old: bytes | None, new: bytes) -> bool:
    """True when the unit changed in a setting the running etcd only gets on restart
    (comments, blank lines and RELOAD_ONLY_UNIT_KEYS ignored)."""
    if old is None:
        return True
    return _unit_settings(old) != _unit_settings(new)


def _unit_settings(unit: bytes) -> list[str]:
    kept = []
    for raw in unit.decode(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.partition("=")[0].strip() in RELOAD_ONLY_UNIT_KEYS:
            continue
        kept.append(line)
    return kept


def _runtime(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conf.items() if k not in BOOTSTRAP_ONLY_KEYS}


def restart_reasons(changes: Sequence[FileChange], facts: HostFacts) -> list[str]:
    """Which changes a running etcd only picks up on restart.

    Certificates are re-read per connection (etcd 3.2+) so a rotated node cert
    needs none; a new CA, runtime keys of etcd.conf and of the unit do.
    """
    reasons = []
    for change in changes:
        if change.kind == "attributes":
            continue
        if change.path == ETCD_CONF:
            old = facts.files.get(ETCD_CONF)
            if conf_needs_restart(old.content if old else None, change.file.content):
                reasons.append("etcd.conf changed")
        elif change.path == UNIT:
            old = facts.files.get(UNIT)
            if unit_needs_restart(old.content if old else None, change.file.content):
                reasons.append("unit changed")
        elif change.path == CA_CRT:
            reasons.append("CA changed")
    return reasons


def service_action(
    facts: HostFacts, live: MemberInfo | None, cluster_live: bool, reasons: Sequence[str]
) -> ServiceAction:
    if cluster_live and (live is None or not live.started):
        return "join"  # absent, or announced but never started: the join path
    if not facts.running:
        return "start"
    return "restart" if reasons else "none"


def plan_host(
    member: Member,
    files: Sequence[NodeFile],
    dirs: Sequence[NodeDir],
    facts: HostFacts,
    *,
    live: MemberInfo | None,
    cluster_live: bool,
) -> HostPlan:
    changes = file_changes(files, facts)
    reasons = restart_reasons(changes, facts)
    return HostPlan(
        member=member,
        install_package=facts.etcd_version is None,
        create_user=not facts.etcd_user and facts.etcd_version is not None,
        dirs=tuple(dir_changes(dirs, facts)),
        changes=tuple(changes),
        daemon_reload=any(c.path == UNIT and c.kind != "attributes" for c in changes),
        enable=facts.enabled != "enabled",
        service=service_action(facts, live, cluster_live, reasons),
        reasons=tuple(reasons),
    )


def find_live(member: Member, live_members: Sequence[MemberInfo]) -> MemberInfo | None:
    """A host's entry in the live member list, by exact peer URL (names can be empty)."""
    return next((m for m in live_members if member.peer_url in m.peer_urls), None)
