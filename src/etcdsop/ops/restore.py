"""`etcdsop restore FILE`: rebuild the inventory's cluster from one snapshot.

Order: the file checked (its sha256 trailer, and its sidecar's sha256 when there is
one) before any host is touched; safeguard; every host answers; refused (exit 3)
while a cluster answers there unless --force; the create guards (another cluster's
data, another CA); etcd stopped on every host; node files written as `create`
writes them; on every host at once the snapshot uploaded (sha256 checked there),
restored into `<data>.restoring-<stamp>`, the old data dir moved aside to
`<data>.pre-restore-<stamp>` (never deleted) and the new one swapped in; only then
every member started together (no host can start with old data next to restored
ones); healthy; root password checked (reset from an old etcd.pass if it differs).

Where a re-run resumes: the run is recorded in files/backup/<cluster>.restoring.json
(snapshot, sha256, hosts, stamp) before the first host changes, and each restored
host gets a marker (/var/lib/etcd/.etcdsop-restore: "<stamp> <sha256>") in the same
step as its swap. A re-run with the same file reuses the stamp: hosts holding the
marker are not restored again, the others are (nothing was started before all were
marked), then all are started. Once every host is marked, a cluster that answers is
the restored one, not a reason to refuse: the re-run only starts, waits and checks.
The markers and the record are removed once every member is healthy, before the root
password is checked (a restore that fails there is done; a re-run would refuse).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etcdsop.backups import Sidecar, read_sidecar, sha256_file, write_private_json
from etcdsop.errors import ClusterError, GuardRefused, InputError
from etcdsop.etcd import EtcdApiError, EtcdClient
from etcdsop.guards import check_safeguard
from etcdsop.model import Inventory, Member
from etcdsop.ops import drhost, hostops
from etcdsop.ops.common import ClusterView, Context, leader_answer
from etcdsop.ops.drclaim import DrClaim
from etcdsop.ops.launch import START
from etcdsop.ops.stages import (
    RELOAD_HINT,
    apply_plans,
    check_guards,
    check_pki,
    ensure_root_auth,
    gather_facts,
    initial_cluster,
    issue_certificates,
    plan_member,
)
from etcdsop.plan import HostPlan
from etcdsop.render import ETCD_PASS
from etcdsop.snapshot import verify_snapshot

REVISION_NOTE_34 = (
    "etcd 3.4 cannot bump revisions on restore: the cluster's revision restarts from the "
    "snapshot's ({revision}). A client that watches from a revision it saw before (Patroni "
    "and vip-manager re-read everything when they reconnect, but a watch resumed from an "
    "older revision number waits until the counter passes it) misses the changes in "
    "between: restart the clients after the restore (vip-manager: systemctl restart "
    "vip-manager; Patroni under a pause: patronictl pause, systemctl restart patroni, "
    "patronictl resume); reload only restarts clients whose config changed"
)


@dataclass
class RestoreResult:
    snapshot: str
    sha256: str
    restored: list[str] = field(default_factory=list)  # hosts restored by this run
    moved_aside: dict[str, str] = field(default_factory=dict)  # host -> old data dir
    tools: dict[str, str] = field(default_factory=dict)
    revision_bumped: bool = False
    revision: int | None = None
    root_password: str = "unchanged"
    notes: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- input ---------------------------------------------------------------------------
def check_file(path: Path) -> str:
    """The snapshot's sha256 (read in chunks, never whole); exit 1 before any host is
    touched when it is missing, damaged, or not the file its sidecar describes."""
    if not path.exists():
        raise InputError(f"restore: {path}: no such file")
    if not path.is_file():
        raise InputError(f"restore: {path}: not a regular file (a backup's .db file is one)")
    try:
        verify_snapshot(path)
    except ClusterError as exc:
        raise InputError(f"restore: {exc.message}") from None
    sha = sha256_file(path)
    sidecar = read_sidecar(path)
    if sidecar is not None and sidecar.sha256 != sha:
        raise InputError(
            f"restore: {path}: its sha256 {sha[:12]}… is not the one its sidecar records "
            f"({sidecar.sha256[:12]}…): the file changed since the backup"
        )
    return sha


def describe_snapshot(sidecar: Sidecar | None, cluster: str) -> list[str]:
    """What the operator should see before the countdown (pure): where the snapshot came
    from, and loudly when it is another cluster's (a clone is fine, a wrong file is not)."""
    if sidecar is None:
        return ["the snapshot has no sidecar: its cluster and age are unknown"]
    lines = [
        f"the snapshot was taken {sidecar.created} from {sidecar.source} of cluster "
        f"{sidecar.cluster} (revision {sidecar.revision if sidecar.revision is not None else '?'})"
    ]
    if sidecar.cluster != cluster:
        lines.append(
            f"the snapshot is of cluster {sidecar.cluster!r}, not {cluster!r}: its keys and "
            f"users become cluster {cluster!r}'s (Ctrl-C now if this is the wrong file)"
        )
    return lines


# -- the record of a run in progress ---------------------------------------------------
def record_path(inventory: Inventory) -> Path:
    return inventory.files_dir / "backup" / f"{inventory.cluster}.restoring.json"


def resumable_stamp(inventory: Inventory, sha: str) -> str | None:
    """The stamp of an interrupted restore of this very file onto these very hosts."""
    try:
        doc = json.loads(record_path(inventory).read_text())
        same = doc["sha256"] == sha and doc["hosts"] == sorted(m.ip for m in inventory.members)
        return str(doc["stamp"]) if same else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(inventory: Inventory, snapshot: Path, sha: str, stamp: str) -> None:
    doc = {
        "snapshot": str(snapshot),
        "sha256": sha,
        "hosts": sorted(m.ip for m in inventory.members),
        "stamp": stamp,
    }
    write_private_json(record_path(inventory), doc)


# -- the command -----------------------------------------------------------------------
def restore(
    ctx: Context, snapshot: Path, *, force: bool, confirm: Callable[[], None] = lambda: None
) -> RestoreResult:
    """confirm runs once every guard passed, before the first change (the countdown)."""
    inventory = ctx.inventory
    members = list(inventory.members)
    sha = check_file(snapshot)
    result = RestoreResult(str(snapshot), sha)
    check_safeguard(members, "restore")
    for member in members:
        hostops.safe_data_dir(member)
    ctx.connect(members)
    ctx.report.phase("gather facts")
    facts = gather_facts(ctx, members)
    view = ctx.probe(tls_refusals=True)
    if view.tls_refused:
        raise ctx.tls_refusal(view.tls_refused)
    stamp = resumable_stamp(inventory, sha) or _stamp()
    mark = f"{stamp} {sha}"
    marks = ctx.parallel(members, lambda m: drhost.read_marker(ctx.host(m)))
    todo = [m for m in members if marks.get(m.ip) != mark]
    if todo and not view.live:
        view = _metrics_live(ctx, members, view)
    if view.live and todo:
        _refuse_live(ctx, view, force)
    check_guards(members, facts, ClusterView(foreign=view.foreign))
    check_pki(ctx, members, facts)
    tools = _tools(ctx, members)
    result.tools = tools
    result.revision_bumped = drhost.bump_revisions(tools)

    for line in describe_snapshot(read_sidecar(snapshot), inventory.cluster):
        ctx.report.warn(line)
    # Any record of this directory, not only one of this file: an interrupted restore
    # of another snapshot may have left hosts mid-change, and keeps its claims.
    claim = DrClaim(ctx, "restore", resuming=record_path(inventory).exists())
    with claim.until_first_change(members):
        if todo and not view.live and (again := ctx.probe(tls_refusals=True)).live:
            _refuse_live(ctx, again, force)  # it came up between the first look and the claim
        confirm()
        old_passwords = _old_passwords(ctx, members)  # before the files are rewritten
    _write_record(inventory, snapshot, sha, stamp)
    if todo:
        # Every host has the file, checked, before anything stops: a failed upload
        # leaves the cluster as it was.
        ctx.report.phase(f"upload {snapshot.name} to {len(todo)} host(s)")
        _each(
            ctx,
            todo,
            lambda m: drhost.upload_snapshot(ctx.host(m), m, snapshot, sha),
            "snapshot uploaded, sha256 and free space checked",
        )
        ctx.report.phase(f"stop etcd on {len(todo)} host(s)")
        _each(ctx, todo, lambda m: hostops.stop_etcd(ctx.host(m)), "stopped (data kept)")
    ctx.report.phase("node files and certificates")
    facts = gather_facts(ctx, members)  # after the stop: enabled, running changed
    certs = issue_certificates(ctx, members, [])
    new_cluster = ClusterView()
    plans = [plan_member(ctx, m, members, facts[m.ip], new_cluster, certs) for m in members]
    apply_plans(ctx, [_enable_after_swap(p, todo) for p in plans])
    if todo:
        ctx.report.phase(f"restore {snapshot.name} on {len(todo)} host(s)")
        _restore_hosts(ctx, todo, sha, stamp, result)
    ctx.report.phase(f"start {len(members)} member(s) together")
    _each(ctx, members, lambda m: ctx.host(m).run(START, timeout=90), "etcd starting")
    ctx.wait_healthy(members)
    for member in members:
        ctx.report.host(member.ip, "healthy", "ok")
    # The restore is done: its markers go now, before anything that may fail after it
    # (the root password). Left behind, they would make a later restore of the same
    # file believe its hosts restored already, and report success restoring nothing.
    _each(ctx, members, lambda m: drhost.clear_marker(ctx.host(m)), "restore marker removed")
    claim.release(members)  # before the record: stopped between, a re-run claims again
    record_path(inventory).unlink(missing_ok=True)
    ctx.report.phase("rbac")
    result.root_password = _root_password(ctx, old_passwords)
    ctx.report.info(f"root password: {result.root_password}")
    result.revision = _revision(ctx)
    if not result.revision_bumped:
        result.notes.append(REVISION_NOTE_34.format(revision=result.revision))
    result.next_steps = [RELOAD_HINT]
    return result


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _refuse_live(ctx: Context, view: ClusterView, force: bool) -> None:
    hosts = ", ".join(sorted(view.answered))
    if not force:
        raise GuardRefused(
            f"cluster {ctx.inventory.cluster!r} answers on {hosts}: a restore would replace "
            "it and everything written since the snapshot; nothing was changed (for a lost "
            "quorum see etcdsop recover; --force restores anyway, old data kept aside)"
        )
    ctx.report.warn(f"--force: replacing the cluster that answers on {hosts}")
    if ctx.release_cluster_lock():
        ctx.report.info("cluster lock released: it lives in the cluster being replaced")


def _metrics_live(ctx: Context, members: list[Member], view: ClusterView) -> ClusterView:
    """Members that answer /metrics (no login needed) count as a live cluster even when
    the member list did not answer: from etcd 3.4.42, 3.5.28, 3.6.9 on it needs a
    login, and a login needs the quorum a quorum-lost cluster has not."""
    client = ctx.client(timeout=3.0)

    def ask(member: Member) -> bool:
        if member.ip in view.foreign:
            return False
        with contextlib.suppress(ClusterError, KeyError, TypeError, ValueError):
            leader_answer(client, member.client_url)
            return True
        return False

    found = ctx.parallel(members, ask)
    answered = frozenset(ip for ip, ok in found.items() if ok is True)
    if not answered:
        return view
    return dataclasses.replace(view, cluster_id=0, answered=answered)


def _tools(ctx: Context, members: list[Member]) -> dict[str, str]:
    found = ctx.parallel(members, lambda m: drhost.restore_tool(ctx.host(m)))
    _raise_first(found)
    tools = {ip: str(t) for ip, t in found.items()}
    missing = [ip for ip, t in tools.items() if t == "none"]
    if missing:
        raise ClusterError(f"neither etcdutl nor etcdctl is installed on {', '.join(missing)}")
    return tools


def _restore_hosts(
    ctx: Context, todo: list[Member], sha: str, stamp: str, result: RestoreResult
) -> None:
    peers = initial_cluster(list(ctx.inventory.members), todo[0], ClusterView())

    def one(member: Member) -> None:
        host = ctx.host(member)
        argv = drhost.restore_argv(
            result.tools[member.ip],
            drhost.UPLOAD,
            member,
            peers,
            drhost.restoring_dir(member, stamp),
            bump=result.revision_bumped,
        )
        aside = drhost.restore_member(host, member, argv, stamp, f"{stamp} {sha}")
        if aside:
            result.moved_aside[member.ip] = aside
        result.restored.append(member.ip)
        ctx.report.host(
            member.ip, "restored" + (f", old data moved to {aside}" if aside else ""), "changed"
        )

    _raise_first(ctx.parallel(todo, one))


def _enable_after_swap(plan: HostPlan, todo: list[Member]) -> HostPlan:
    """A host still to restore keeps etcd disabled (the stop disabled it) until its
    swap enables it: a reboot in between must not start the old data (pure)."""
    if not plan.enable or plan.member.ip not in {m.ip for m in todo}:
        return plan
    return dataclasses.replace(plan, enable=False, daemon_reload=True)


def _each(ctx: Context, members: list[Member], action: Any, done: str) -> None:
    results = ctx.parallel(members, action)
    _raise_first(results)
    for member in members:
        ctx.report.host(member.ip, done, "changed")


def _raise_first(results: dict[str, object]) -> None:
    failed = [v for v in results.values() if isinstance(v, ClusterError)]
    if failed:
        raise ClusterError(
            f"{len(failed)} host(s) failed: {failed[0].message}", details=failed[0].details
        )


def _old_passwords(ctx: Context, members: list[Member]) -> list[str]:
    """The root passwords the hosts' etcd.pass held before this run rewrote them: the
    snapshot's may be one of them (the inventory's changed since the backup)."""
    script = f"for f in {ETCD_PASS} {ETCD_PASS}.*.bak; do [ -f $f ] && base64 -w0 $f && echo; done"
    found = ctx.parallel(members, lambda m: ctx.host(m).run(["sh", "-c", script], check=False))
    passwords: list[str] = []
    for value in found.values():
        for line in getattr(value, "stdout", "").split():
            with contextlib.suppress(ValueError):
                text = base64.b64decode(line, validate=True).decode()
                if text and text not in passwords:
                    passwords.append(text)
    return passwords


def _root_password(ctx: Context, old_passwords: list[str]) -> str:
    """RBAC is the snapshot's; the inventory's root password must open it, or it is
    changed to it with an older password that does (read from etcd.pass)."""
    password = ctx.inventory.root_password
    client = ctx.voter_client()
    try:
        if client.check_password("root", password):
            return "unchanged (the snapshot's is the inventory's)"
    except EtcdApiError as exc:
        if "authentication is not enabled" not in exc.etcd_message:
            raise
        return "the snapshot had auth off: " + ensure_root_auth(client, password)
    for old in old_passwords:
        if old != password and client.check_password("root", old):
            opener = EtcdClient(client.endpoints, client.tls, user="root", password=old)
            opener.user_change_password("root", password)
            return "changed to the inventory's (the snapshot had an older one)"
    raise ClusterError(
        "the cluster is restored and healthy, but its root password (the snapshot's) is not "
        "the inventory's etcd_root_password: put the password of the backup's time in the "
        "inventory, then `etcdsop reload -t etcd` (it checks it and changes it through the API)"
    )


def _revision(ctx: Context) -> int | None:
    client: EtcdClient = ctx.voter_client()
    try:
        data = client.call("/v3/maintenance/status", {})
        return int(data["header"]["revision"])
    except (ClusterError, KeyError, TypeError, ValueError):
        return None
