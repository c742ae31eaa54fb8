"""`etcdsop rm`: remove members (quorum-guarded, snapshot first) or destroy the cluster."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.etcd import EtcdClient, MemberInfo
from etcdsop.facts import HostFacts, gather
from etcdsop.guards import check_safeguard, cleanup_refusal
from etcdsop.model import Member
from etcdsop.ops import hostops
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.destroying import clear_record, interrupted_destroy, write_record
from etcdsop.ops.membership import remove_member
from etcdsop.ops.register import deregister
from etcdsop.ops.stages import RELOAD_HINT, refresh_conf
from etcdsop.plan import find_live
from etcdsop.quorum import check_removal
from etcdsop.render import ETCD_CONF
from etcdsop.snapshot import save_snapshot
from etcdsop.waits import poll_until


@dataclass
class RemoveResult:
    removed: list[dict[str, Any]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    cleanup_skipped: list[str] = field(default_factory=list)
    snapshot: str | None = None
    refreshed: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def remove(
    ctx: Context,
    members: Sequence[Member],
    *,
    force: bool,
    backup: bool,
    force_cleanup: bool = False,
) -> RemoveResult:
    check_safeguard(members)
    result = RemoveResult()
    for member in members:
        ctx.report.phase(f"remove {member.name} ({member.ip})")
        view = ctx.probe()
        if not view.live:
            # Without a member list we cannot tell a member from a leftover: touch nothing.
            _refuse_without_pki(ctx)
            raise GuardRefused(
                f"no member of cluster {ctx.inventory.cluster!r} answers, so membership and "
                "quorum cannot be checked: nothing was removed (to destroy the whole "
                "cluster, run etcdsop rm without IPs)"
            )
        entry = find_live(member, view.members)
        if entry is None:
            _check_not_a_member(member, view)
        _check_cleanup(ctx, [member], force=force_cleanup)
        if entry is None:
            ctx.report.host(member.ip, "not a member (anymore): cleaning the host only", "info")
        else:
            stays = _guard_removal(ctx, view, member, entry, force=force)
            if backup and result.snapshot is None:
                result.snapshot = _snapshot(ctx, view, exclude=entry.id)
            _remove_from_cluster(ctx, member, entry, stays)
            result.removed.append({"ip": member.ip, "id": entry.hex_id, "name": entry.name})
        _clean_host(ctx, member, result)
    if result.removed:
        ctx.report.phase("refresh etcd.conf on the remaining members")
        result.refreshed = refresh_conf(ctx, leaving={r["ip"] for r in result.removed})
    deregister(ctx, members)
    gone = ", ".join(m.ip for m in members)
    result.next_steps = [f"delete {gone} from the etcd group of {ctx.inventory.path}", RELOAD_HINT]
    return result


def destroy(ctx: Context, *, backup: bool, force_cleanup: bool = False) -> RemoveResult:
    """The whole cluster: snapshot, stop every member at once (a leader keeping its data
    last), delete what etcd_rm_* say.

    Without a verified snapshot only with --no-backup: a cluster that does not answer
    this admin node (another CA, no admin certificate) is not a cluster that is gone.
    """
    members = list(ctx.inventory.members)
    check_safeguard(members)
    for member in members:
        if member.rm_data:
            hostops.safe_data_dir(member)  # refused now, not after etcd was killed
    result = RemoveResult()
    # SSH handshakes and the ownership check change nothing on a host: they overlap
    # with the probe and the snapshot; both must pass before anything stops.
    with ThreadPoolExecutor(max_workers=1) as background:
        checking = background.submit(_check_cleanup, ctx, members, force=force_cleanup)
        view = ctx.probe()
        if backup:
            result.snapshot = _destroy_snapshot(ctx, view, checking)
        cleanup = checking.result()
    if result.snapshot is not None:
        write_record(ctx.inventory, result.snapshot)
    # Its lease cannot be renewed once the members stop: let it go rather than see it
    # lost half-way through (the admin-node lock stays until the end).
    if ctx.release_cluster_lock():
        ctx.report.info("cluster lock released: it lives in the cluster being destroyed")
    ctx.report.phase(f"stop and remove etcd on {len(members)} host(s)")
    last = _leader_keeping_data(ctx, view, members)
    first = [m for m in members if m not in last]

    def destroy_host(member: Member) -> None:
        _destroy_host(ctx, member, result, cleanup.unreachable.get(member.ip))

    results = ctx.parallel(first, destroy_host)
    results.update(ctx.parallel(last, destroy_host))
    failed = [v for v in results.values() if isinstance(v, ClusterError)]
    if failed:
        raise ClusterError(
            f"destroying failed on {len(failed)} host(s): {failed[0].message}",
            details=failed[0].details,
        )
    result.removed = [{"ip": m.ip, "name": m.name} for m in members]
    deregister(ctx, members)
    if result.cleanup_skipped:
        # etcd may still run there on its data: not done. The record stays, so the
        # re-run once the host answers relies on the same verified snapshot.
        result.next_steps = [
            f"etcd may still run on {', '.join(result.cleanup_skipped)} (unreachable): "
            "run etcdsop rm -y again once it answers"
        ]
        return result
    clear_record(ctx.inventory)
    result.next_steps = [
        f"the cluster is gone: delete the etcd group from "
        f"{ctx.inventory.path} or run etcdsop create to start anew"
    ]
    return result


def _destroy_snapshot(
    ctx: Context, view: ClusterView, checking: Future[CleanupCheck]
) -> str | None:
    """A fresh verified snapshot, or the one an interrupted destroy of these hosts took
    before it stopped anything (the cluster may have no quorum left to take one), or
    none where no host holds anything of etcd's any more (a finished destroy)."""
    try:
        _refuse_without_pki(ctx)
        if not view.live:
            raise ClusterError(f"no member of cluster {ctx.inventory.cluster!r} answers")
        return _snapshot(ctx, view, exclude=None)
    except ClusterError as exc:
        earlier = interrupted_destroy(ctx.inventory)
        if earlier is None and not view.live and checking.result().nothing_left:
            ctx.report.info("no host runs etcd or holds its config or data: nothing to back up")
            return None
        if earlier is None:
            raise GuardRefused(
                f"no verified snapshot could be taken ({exc.message}), so nothing was "
                "destroyed: fix that, or destroy without a backup with --no-backup"
            ) from exc
        ctx.report.info(
            f"no snapshot now ({exc.message}); the destroy begun {earlier.started} was "
            f"interrupted after its snapshot: {earlier.snapshot} (verified again) is the backup"
        )
        ctx.snapshots.append(str(earlier.snapshot))
        return str(earlier.snapshot)


def _refuse_without_pki(ctx: Context) -> None:
    """Without the admin certificate no member can answer: say so, not "no cluster"."""
    if ctx.tls_files() is None:
        raise GuardRefused(
            f"no admin certificate under {ctx.pki_dir}, so the cluster cannot be asked "
            f"anything and nothing was changed: {ctx.pki_hint()}"
        )


def _leader_keeping_data(
    ctx: Context, view: ClusterView, members: Sequence[Member]
) -> list[Member]:
    """The leader, when it keeps its data (gracefully stopped), to stop after the others.

    etcd's graceful stop (SIGTERM) of a leader first hands its leadership to its
    longest-connected peer and waits up to its request timeout (5 s + 2 election
    timeouts) for that peer to take it: stopped at the same time as its peers, it
    waits all of that. Stopped last, it has no connected peer, skips the transfer and
    stops at once. A leader whose data is deleted is killed with the others instead.
    """
    keeping = [m for m in members if not m.rm_data]
    if not keeping or not view.live:
        return []
    client = ctx.client(timeout=3.0)
    leader = None
    for entry in view.members:
        if entry.client_urls and entry.started:
            with contextlib.suppress(ClusterError):
                leader = client.status(entry.client_urls[0]).leader
                break
    return [m for m in keeping if (e := find_live(m, view.members)) and e.id == leader]


def _destroy_host(
    ctx: Context, member: Member, result: RemoveResult, unreachable: ClusterError | None
) -> None:
    """Stop etcd on one host and delete what etcd_rm_data / etcd_rm_pkg say.

    Where the data is deleted right after, etcd is killed (SIGKILL): the snapshot, if
    asked for, is already taken and verified, nothing will read that data again, and a
    graceful stop would cost the leadership-transfer wait (see above) and up to 1 s
    more while peers are still connected. Where the data is kept, etcd stops
    gracefully (SIGTERM), its leader last.
    """
    host = ctx.host(member)  # connected by destroy(), unless `unreachable` says why not
    if unreachable is not None:
        ctx.report.warn(
            f"{member.ip}: host cleanup skipped, unreachable ({unreachable.message}); "
            "once it answers, run etcdsop rm (without IPs) again to clean it"
        )
        result.cleanup_skipped.append(member.ip)
        return
    if member.rm_data:
        hostops.kill_etcd(host)
        kept = hostops.remove_files(host, member)
        done = ["etcd killed and disabled", "config and data deleted"]
        if kept:
            done.append(f"kept {', '.join(kept)} (not empty: not only ours)")
    else:
        hostops.stop_etcd(host)
        done = ["etcd stopped and disabled (data kept)"]
    if member.rm_pkg:
        hostops.remove_package(host)
        done.append("package removed")
    ctx.report.host(member.ip, ", ".join(done), "changed")
    result.cleaned.append(member.ip)


# -- steps ----------------------------------------------------------------------------
def _healthy_ids(client: EtcdClient, view: ClusterView) -> set[int]:
    return {
        m.id
        for m in view.members
        if m.started and m.client_urls and client.health(m.client_urls[0])
    }


def _snapshot(ctx: Context, view: ClusterView, exclude: int | None) -> str:
    """From a healthy voter that stays, into files/backup/ beside the inventory (0600)."""
    client = ctx.voter_client(view)
    healthy = _healthy_ids(client, view)
    sources = [
        m for m in view.members if m.id in healthy and not m.is_learner and m.id != exclude
    ] or [m for m in view.members if m.id in healthy]
    if not sources:
        raise ClusterError(
            "no healthy member to take a snapshot from; use --no-backup to go on without one"
        )
    backup_dir: Path = ctx.inventory.files_dir / "backup"
    path = save_snapshot(client, sources[0].client_urls[0], backup_dir, ctx.inventory.cluster)
    size = path.stat().st_size
    ctx.report.info(f"snapshot from {sources[0].name}: {path} ({size} bytes, verified)")
    ctx.snapshots.append(str(path))
    return str(path)


def _guard_removal(
    ctx: Context, view: ClusterView, member: Member, entry: MemberInfo, *, force: bool
) -> list[MemberInfo]:
    """Refuse (exit 3) when the rest would lose quorum; the healthy voters that stay."""
    client = ctx.voter_client(view)
    healthy = _healthy_ids(client, view)
    check = check_removal(view.members, healthy, entry.id)
    ctx.report.info(f"quorum: {check.arithmetic()}")
    if not check.allowed:
        if not force:
            raise GuardRefused(
                f"removing {member.name} ({member.ip}) is unsafe: {check.arithmetic()}; "
                "--force overrides (dangerous)"
            )
        ctx.report.warn(f"--force: removing {member.ip} although {check.arithmetic()}")
    stays = [m for m in view.members if m.id != entry.id and m.id in healthy and not m.is_learner]
    if not stays:
        raise GuardRefused(f"no healthy voter would remain to remove {member.ip} through")
    return stays


def _remove_from_cluster(
    ctx: Context, member: Member, entry: MemberInfo, stays: Sequence[MemberInfo]
) -> None:
    client = ctx.client()
    if entry.client_urls and not entry.is_learner:
        _move_leadership_away(ctx, client, entry, stays)
    through = client.for_endpoints([m.client_urls[0] for m in stays])
    remove_member(through, entry.id, timeout=ctx.options.wait_timeout)
    ctx.report.host(member.ip, f"member {entry.hex_id} removed from the cluster", "changed")


def _move_leadership_away(
    ctx: Context, client: EtcdClient, entry: MemberInfo, stays: Sequence[MemberInfo]
) -> None:
    try:
        leader = client.status(entry.client_urls[0]).leader
    except ClusterError:
        return  # it does not answer: it cannot be the working leader
    if leader != entry.id:
        return
    target = stays[0]
    ctx.report.host(
        entry.client_urls[0], f"is the leader: moving leadership to {target.name}", "info"
    )
    client.move_leader(target.id, leader_endpoint=entry.client_urls[0])

    def moved() -> bool | None:
        with contextlib.suppress(ClusterError):
            if client.status(target.client_urls[0]).leader == target.id:
                return True
        return None

    if poll_until(moved, timeout=ctx.options.wait_timeout, interval=0.2) is None:
        raise ClusterError(
            f"leadership did not move to {target.name} within {ctx.options.wait_timeout:.0f}s"
        )


def _check_not_a_member(member: Member, view: ClusterView) -> None:
    """A host that the peer-URL lookup misses may still be a member (the inventory's
    port or address changed since): never clean a host the cluster still counts."""
    named = next((m for m in view.members if m.name == member.name), None)
    if named is None and member.ip not in view.answered:
        return
    why = (
        f"a member named {member.name} has peer URL {', '.join(named.peer_urls)}"
        if named is not None
        else f"{member.ip} answers as a member"
    )
    raise GuardRefused(
        f"{member.ip}: its inventory peer URL {member.peer_url} is not in the member list, "
        f"but {why}: the inventory does not match the cluster (etcd_peer_port or the "
        "address changed?); nothing was changed"
    )


@dataclass
class CleanupCheck:
    unreachable: dict[str, ClusterError]  # host -> why it cannot be reached
    facts: dict[str, HostFacts]  # what each reachable host holds

    @property
    def nothing_left(self) -> bool:
        """Every host reached and none runs etcd or holds its config or data: a destroy
        that already finished (a re-run needs no snapshot of a cluster that is gone)."""
        return not self.unreachable and not any(
            f.running
            or f.has_data
            or any(e != "lost+found" for e in f.data_entries)
            or ETCD_CONF in f.files
            for f in self.facts.values()
        )


def _check_cleanup(ctx: Context, members: Sequence[Member], *, force: bool) -> CleanupCheck:
    """Refuse (exit 3) before anything changes when a host runs or holds etcd things
    that its own etcd.conf does not show to be this member's; --force-cleanup overrides."""

    unreachable: dict[str, ClusterError] = {}

    def look(member: Member) -> HostFacts | None:
        host = ctx.host(member)
        try:
            host.connect()
        except ClusterError as exc:
            unreachable[member.ip] = exc  # reported (and skipped) by the cleanup itself
            return None
        return gather(host, member.data_dir, (ETCD_CONF,))

    results = ctx.parallel(members, look)
    refusals = []
    facts: dict[str, HostFacts] = {}
    for member in members:
        value = results.get(member.ip)
        if isinstance(value, ClusterError):
            raise value
        if isinstance(value, HostFacts):
            facts[member.ip] = value
            if why := cleanup_refusal(member, value, member.rm_data):
                refusals.append(why)
    if not refusals:
        return CleanupCheck(unreachable, facts)
    if force:
        for why in refusals:
            ctx.report.warn(f"--force-cleanup: cleaning anyway: {why}")
        return CleanupCheck(unreachable, facts)
    raise GuardRefused(
        f"refusing to delete anything, nothing was changed: {refusals[0]}: remove it by "
        "hand if it is not needed, or --force-cleanup",
        details="\n".join(refusals[1:]) or None,
    )


def _clean_host(ctx: Context, member: Member, result: RemoveResult) -> None:
    host = ctx.host(member)
    try:
        host.connect()
    except ClusterError as exc:
        ctx.report.warn(
            f"{member.ip}: host cleanup skipped, unreachable ({exc.message}); "
            "clean it later with: etcdsop rm " + member.ip
        )
        result.cleanup_skipped.append(member.ip)
        return
    # Not a member (any more): nothing to shut down gracefully for, and etcd 3.4's own
    # graceful stop can hang on a peer it cannot reach (40 s, then our SIGKILL).
    hostops.kill_etcd(host)
    done = ["etcd killed and disabled"]
    if member.rm_data:
        kept = hostops.remove_files(host, member)
        done.append("config and data deleted")
        if kept:
            done.append(f"kept {', '.join(kept)} (not empty: not only ours)")
    if member.rm_pkg:
        hostops.remove_package(host)
        done.append("package removed")
    ctx.report.host(member.ip, ", ".join(done), "changed")
    result.cleaned.append(member.ip)
