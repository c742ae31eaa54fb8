"""`etcdsop recover [--from IP]`: quorum lost for good, one good member left.

Refused (exit 3) while any member knows a leader (a quorum answers: replace the
dead members with rm/add instead). Otherwise: the source is the reachable member
with the highest raft index (`--from` names it; a member whose index cannot be read
because its etcd is stopped is chosen only when it is the only one holding data);
its etcd is stopped and its bolt file copied to files/backup/<cluster>-<UTC>.db
(sha256 trailer appended, verified, sidecar beside it); etcd is stopped on the other
reachable hosts; the source starts ONCE with force-new-cluster, through a config copy
and a systemd drop-in that both live in /run (a reboot drops them: the flag can
never stay), then the drop-in is removed and it restarts on its own etcd.conf. The
other inventory hosts are added back one at a time through `add`'s path (learner,
promoted when in sync, undone on failure), each with its old data dir moved aside to
`<data>.pre-recover-<stamp>` first (never deleted).

Before the countdown the reachable hosts are claimed (ops/drclaim.py): without a
quorum there is no etcd lock, and a second admin node must not force a new cluster
from another member at the same time.

Where a re-run resumes: files/backup/<cluster>.recovering.json names the source,
the snapshot and the stamp from before anything changed until the source leads; then
<cluster>.recover-addback.json names the hosts still to add. A re-run keeps that
source (a different --from is refused: a second force-new-cluster elsewhere would fork
the data). While no leader answers, it goes on from the forced start only while the
record's source is mid-start (stopped and disabled, or on the drop-in): an older record
is ended, never acted on. Once the source leads, a quorum answering is the recovered
cluster, not a refusal, while the add-back list has hosts that are not started members
or the drop-in is still there: a drop-in still present is removed and the member
restarted, and those hosts are added (a started member is skipped, so its data is
never moved; a started learner is promoted). The list is removed when every inventory
host is a member.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etcdsop.backups import Sidecar, sha256_file, sidecar_path, write_private_json
from etcdsop.errors import ClusterError, GuardRefused, InputError
from etcdsop.facts import HostFacts
from etcdsop.guards import check_safeguard
from etcdsop.model import Inventory, Member
from etcdsop.ops import drhost, hostops
from etcdsop.ops.common import Context, LeaderAnswer, leader_answer
from etcdsop.ops.drclaim import DrClaim
from etcdsop.ops.join import join_member
from etcdsop.ops.raftstate import RaftState, read_state
from etcdsop.ops.stages import RELOAD_HINT, gather_facts, refresh_conf
from etcdsop.plan import find_live
from etcdsop.quorum import quorum_of
from etcdsop.snapshot import save_bolt_copy, verify_snapshot
from etcdsop.waits import poll_until


@dataclass(frozen=True)
class Candidate:
    """A reachable inventory host as a possible source."""

    ip: str
    has_data: bool
    raft_index: int | None  # None: unknown (neither its WAL nor /metrics could tell)
    is_learner: bool | None = None  # None: unknown
    problem: str = ""  # why its raft state could not be read offline


def choose_source(candidates: Sequence[Candidate], from_ip: str | None) -> str:
    """The member to rebuild from (pure): --from, else the voter holding data with the
    highest commit index (all must be known: an unknown one might be ahead). Never a
    learner: force-new-cluster removes every other member, a learner's own start then
    leaves no voter and etcd panics "removed all voters" on every start (etcd#13213)."""
    with_data = [c for c in candidates if c.has_data]
    learners = [c.ip for c in with_data if c.is_learner]
    if from_ip is not None:
        chosen = next((c for c in candidates if c.ip == from_ip), None)
        if chosen is None:
            raise InputError(f"--from {from_ip}: not a reachable host of the etcd group")
        if not chosen.has_data:
            raise InputError(f"--from {from_ip}: it holds no etcd data to recover from")
        if chosen.is_learner:
            raise GuardRefused(_learner_refusal([from_ip]))
        return chosen.ip
    if not with_data:
        raise ClusterError(
            "no reachable member holds etcd data: nothing to recover from; restore a "
            "backup instead (etcdsop restore FILE)"
        )
    voters = [c for c in with_data if not c.is_learner]
    if not voters:
        raise GuardRefused(_learner_refusal(learners))
    if len(voters) == 1:
        return voters[0].ip
    unknown = [c for c in voters if c.raft_index is None]
    if unknown:
        why = "; ".join(f"{c.ip}: {c.problem}" for c in unknown if c.problem)
        raise GuardRefused(
            f"the raft index of {', '.join(c.ip for c in unknown)} cannot be read (neither "
            f"its WAL nor /metrics tells{': ' + why if why else ''}) and another member "
            "holds data too: name the source with --from IP"
        )
    return max(voters, key=lambda c: (c.raft_index or 0, c.ip)).ip


def _learner_refusal(ips: Sequence[str]) -> str:
    return (
        f"{', '.join(ips)} is a learner: a forced start from a learner removes every voter "
        "and etcd panics 'removed all voters' on every start (etcd#13213); nothing was "
        "changed. Rebuild from its data with restore instead: stop etcd there, take a "
        "snapshot of its bolt file (or use your latest backup), then etcdsop restore FILE"
    )


def check_unreachable(
    voters: int, missing: int, unreachable: Sequence[str], from_ip: str | None
) -> None:
    """Refuse (pure) a forced start while the voters SSH cannot reach (missing of them)
    are a quorum of the last known voter set (voters: its size): they may be alive
    behind a partition, still electing a leader and taking writes; a one-member cluster
    here would carry the same cluster id, and when the two meet the old majority's
    members learn they were removed and stop: their writes are lost. A spare host in
    the inventory without data is no voter and must not dilute the count. Only the
    operator can know they are gone for good: --from says so."""
    if from_ip is None and unreachable and missing >= quorum_of(max(voters, 1)):
        raise GuardRefused(
            f"{', '.join(unreachable)} cannot be reached: {missing} of the {voters} voters, "
            "a quorum, and they may still serve (a network partition); recovering now would "
            "fork the cluster and lose their writes when the network heals. Make sure they "
            "are down for good (powered off, or etcd stopped there), then name the source: "
            "etcdsop recover --from IP"
        )


def voter_count(
    states: Mapping[str, RaftState],
    reachable_with_data: Sequence[str],
    learners: Sequence[str],
    unreachable: Sequence[str],
) -> tuple[int, int]:
    """(size of the last known voter set, how many of its voters SSH cannot reach), pure.
    From the membership in the WAL of the member furthest ahead when it is known: its
    voters less the reachable ones. Else every reachable data holder that is no
    learner, plus every unreachable host (it may be a voter: count it)."""
    known = [s for s in states.values() if s.voters is not None and s.commit]
    if known:
        voters = set(max(known, key=lambda s: s.commit or 0).voters or ())
        here = {s.node_id for s in states.values() if s.node_id}
        return len(voters), len(voters - here)
    counted = [ip for ip in reachable_with_data if ip not in learners]
    return len(counted) + len(unreachable), len(unreachable)


def losses(source: str, indexes: Mapping[str, int | None], unreachable: Sequence[str]) -> list[str]:
    """Warnings (pure): members that are, or may be, ahead of the source; what only they
    hold is lost by the recover. indexes: the raft index each answering member reported."""
    mine = indexes.get(source)
    found = []
    for ip, index in sorted(indexes.items()):
        if ip != source and index is not None and (mine is None or index > mine):
            found.append(
                f"{ip} reports raft index {index}, above the source's "
                f"({'unknown' if mine is None else mine}): the writes only it holds are lost"
            )
    for ip in unreachable:
        if indexes.get(ip) is None:
            found.append(f"{ip} cannot be reached: it may hold writes the source lacks")
    return found


@dataclass
class RecoverResult:
    source: str
    snapshot: str | None = None
    forced: bool = False  # this run did the force-new-cluster start
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # members already
    unreachable: list[str] = field(default_factory=list)
    moved_aside: dict[str, str] = field(default_factory=dict)
    next_steps: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def record_path(inventory: Inventory) -> Path:
    """The forced start under way: from before the first change until the source leads."""
    return inventory.files_dir / "backup" / f"{inventory.cluster}.recovering.json"


def addback_path(inventory: Inventory) -> Path:
    """Once the forced source leads: the hosts this recover still has to add back."""
    return inventory.files_dir / "backup" / f"{inventory.cluster}.recover-addback.json"


def _read_record(inventory: Inventory) -> dict[str, str] | None:
    try:
        doc = json.loads(record_path(inventory).read_text())
        return {k: str(doc[k]) for k in ("source", "snapshot", "stamp")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_addback(inventory: Inventory) -> dict[str, Any] | None:
    try:
        doc = json.loads(addback_path(inventory).read_text())
        return {
            "source": str(doc["source"]),
            "stamp": str(doc["stamp"]),
            "hosts": [str(h) for h in doc["hosts"]],
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _answers(ctx: Context, members: Sequence[Member]) -> dict[str, LeaderAnswer]:
    """Each answering member's leader and raft index, read without a login."""
    client = ctx.client(timeout=3.0)

    def ask(member: Member) -> LeaderAnswer | None:
        with contextlib.suppress(ClusterError, KeyError, TypeError, ValueError):
            return leader_answer(client, member.client_url)
        return None

    found = ctx.parallel(members, ask)
    return {ip: a for ip, a in found.items() if isinstance(a, LeaderAnswer)}


def _still_no_leader(ctx: Context, members: Sequence[Member]) -> None:
    """One look may have caught an election: before forcing a new cluster, no member may
    know a leader for two election timeouts (a quorum elects one well within that)."""
    window = 2 * max(m.election_timeout for m in members) / 1000

    def leaders() -> list[str] | None:
        # One that cannot tell counts as knowing one: never force on a maybe.
        answers = _answers(ctx, members)
        return sorted(ip for ip, a in answers.items() if a.leader is not False) or None

    led = poll_until(leaders, timeout=window, interval=0.25)
    if led:
        raise GuardRefused(
            f"a leader is known again on {', '.join(led)}: the quorum is back, nothing "
            "was changed; replace dead members with etcdsop rm IP, then etcdsop add IP"
        )


def _reachable(ctx: Context, members: Sequence[Member], result: RecoverResult) -> list[Member]:
    ctx.report.phase(f"connect to {len(members)} host(s)")
    found = ctx.parallel(members, lambda m: ctx.host(m).connect())
    ok = []
    for member in members:
        value = found[member.ip]
        if isinstance(value, ClusterError):
            ctx.report.host(member.ip, f"unreachable ({value.message})", "failed")
            result.unreachable.append(member.ip)
        else:
            ctx.report.host(member.ip, "connected")
            ok.append(member)
    return ok


def recover(
    ctx: Context,
    *,
    from_ip: str | None,
    promote_timeout: float,
    confirm: Callable[[str], None] = lambda source: None,
) -> RecoverResult:
    """confirm(source) runs once the guards passed and the source is known."""
    inventory = ctx.inventory
    members = list(inventory.members)
    if from_ip is not None and from_ip not in {m.ip for m in members}:
        raise InputError(  # a typo is named before any host is connected to
            f"--from {from_ip}: not a host of the etcd group ({', '.join(m.ip for m in members)})"
        )
    check_safeguard(members, "recover")
    for member in members:
        hostops.safe_data_dir(member)
    result = RecoverResult(source="")
    reachable = _reachable(ctx, members, result)
    answers = _answers(ctx, members)
    led = sorted(ip for ip, a in answers.items() if a.leader)
    unsure = sorted(ip for ip, a in answers.items() if a.leader is None)
    record = _read_record(inventory)
    addback = _read_addback(inventory)
    if led:
        resume = _resume_with_leader(ctx, reachable, record, addback, from_ip)
        if resume is None:
            raise GuardRefused(
                f"a quorum answers (a leader is known on {', '.join(led)}): nothing to "
                "recover; replace dead members with etcdsop rm IP, then etcdsop add IP"
            )
        result.source, stamp = resume
        ctx.report.info(f"resuming the recover begun from {result.source} ({stamp})")
    elif addback is not None:
        # No leader: the cluster that recover rebuilt lost its quorum again. Its
        # add-back list is stale and must not steer this new recover.
        ctx.report.warn(f"{addback_path(inventory)} is from an earlier recover: ignored")
        addback_path(inventory).unlink(missing_ok=True)
    if unsure and not led and record is None:
        raise GuardRefused(
            f"{', '.join(unsure)}: etcd answers but cannot say whether it knows a leader "
            "(from 3.4.42 it tells that only after a login, which needs a quorum); if the "
            "quorum is lost for good, stop etcd there (systemctl stop etcd), then run "
            "etcdsop recover --from IP"
        )
    ctx.report.phase("gather facts")
    facts = gather_facts(ctx, reachable)
    if not led and record is not None and not _forcing(ctx, record, reachable, facts):
        ctx.report.warn(f"{record_path(inventory)} is from an earlier recover: ended")
        record_path(inventory).unlink(missing_ok=True)
        record = None
    if not led:
        if record is not None:
            if from_ip is not None and from_ip != record["source"]:
                raise InputError(
                    f"--from {from_ip}: the interrupted recover began from {record['source']} "
                    f"(see {record_path(inventory)}): re-run without --from, or with that one"
                )
            result.source = record["source"]
            ctx.report.info(
                f"resuming the forced start begun from {result.source} ({record['stamp']})"
            )
        states = _read_states(ctx, [m for m in reachable if facts[m.ip].has_data])
        candidates = [_candidate(m, facts, answers, states) for m in reachable]
        # A resumed forced start keeps its source, but it is checked again: a record
        # written by an older etcdsop may name a learner (etcd panics from one).
        result.source = choose_source(candidates, record["source"] if record else from_ip)
        learners = [c.ip for c in candidates if c.is_learner]
        voters, missing = voter_count(
            states, [c.ip for c in candidates if c.has_data], learners, result.unreachable
        )
        check_unreachable(voters, missing, result.unreachable, from_ip)
        indexes = {c.ip: c.raft_index for c in candidates if c.has_data}
        for line in losses(result.source, indexes, result.unreachable):
            ctx.report.warn(line)
        stamp = record["stamp"] if record else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    source = next((m for m in reachable if m.ip == result.source), None)
    if source is None:
        raise ClusterError(f"the source {result.source} does not answer over SSH")
    others = [m for m in reachable if m is not source]
    claim = DrClaim(ctx, "recover", resuming=record is not None or bool(led))
    with claim.until_first_change(reachable):
        confirm(f"{source.name} ({source.ip})")
        if not led:
            _still_no_leader(ctx, members)
    if not led:
        _forced_start(ctx, source, others, facts, answers, record, stamp, result)
    _finish(ctx, source, others, promote_timeout, stamp, result)
    # The source leads now: from here a quorum answers, and recover refuses anywhere
    # but in this directory (its add-back list), so the claims have done their work.
    # They go before the list: a run stopped between the two resumes from the list (and
    # claims again), where one without it would be refused and strand them.
    claim.release(reachable)
    if not result.unreachable:
        addback_path(ctx.inventory).unlink(missing_ok=True)
    else:
        _write_addback(ctx.inventory, source.ip, stamp, result.unreachable)
    return result


def _write_addback(inventory: Inventory, source: str, stamp: str, hosts: Sequence[str]) -> None:
    doc = {"source": source, "stamp": stamp, "hosts": sorted(hosts)}
    write_private_json(addback_path(inventory), doc)


def _resume_with_leader(
    ctx: Context,
    reachable: Sequence[Member],
    record: dict[str, str] | None,
    addback: dict[str, Any] | None,
    from_ip: str | None,
) -> tuple[str, str] | None:
    """(source, stamp) when a leader answers and THIS recover has work left: a forced
    start whose source leads (its drop-in still there, or it leads a cluster of one),
    or hosts of its add-back list that are no started members yet. None: a quorum
    answers and nothing of a recover is left (an old record is ended, never used)."""
    view = ctx.probe()
    started = [m for m in ctx.inventory.members if (e := find_live(m, view.members)) and e.started]
    started_ips = {m.ip for m in started}
    if record is not None:
        source = next((m for m in reachable if m.ip == record["source"]), None)
        ours = source is not None and (
            drhost.forced(ctx.host(source)) or started_ips == {source.ip}
        )
        if ours and source is not None:
            _check_from(from_ip, source.ip)
            return source.ip, record["stamp"]
        ctx.report.warn(f"{record_path(ctx.inventory)} is from an earlier recover: ended")
        record_path(ctx.inventory).unlink(missing_ok=True)
    if addback is not None:
        todo = [ip for ip in addback["hosts"] if ip not in started_ips]
        source = next((m for m in reachable if m.ip == addback["source"]), None)
        # The forced drop-in may still be on the source (stopped right after the forced
        # start): left in /run, every later restart there would force a new cluster again.
        forced = source is not None and drhost.forced(ctx.host(source))
        if addback["source"] in started_ips and (todo or forced):
            _check_from(from_ip, addback["source"])
            return addback["source"], addback["stamp"]
        addback_path(ctx.inventory).unlink(missing_ok=True)
    return None


def _forcing(
    ctx: Context,
    record: dict[str, str],
    reachable: Sequence[Member],
    facts: Mapping[str, HostFacts],
) -> bool:
    """Is the record's forced start really under way? Between writing the record and
    the source leading, the source's etcd is either stopped and disabled (the snapshot
    step) or running with the forced drop-in in /run. A source whose etcd is enabled
    and has no drop-in finished (or never began) that start: the record is stale and
    must not force a new cluster from an old choice."""
    source = next((m for m in reachable if m.ip == record["source"]), None)
    if source is None:
        return True  # cannot tell: keep the record (its source is then refused as unreachable)
    return drhost.forced(ctx.host(source)) or facts[source.ip].enabled != "enabled"


def _check_from(from_ip: str | None, source: str) -> None:
    if from_ip is not None and from_ip != source:
        raise InputError(
            f"--from {from_ip}: the unfinished recover began from {source}: re-run "
            "without --from, or with that one"
        )


def _read_states(ctx: Context, members: Sequence[Member]) -> dict[str, RaftState]:
    """Each data holder's raft state from its WAL (read-only, etcd may run)."""
    if not members:
        return {}
    ctx.report.phase(f"read the raft state of {len(members)} member(s) from their WAL")
    found = ctx.parallel(members, lambda m: read_state(ctx.host(m), m))
    states: dict[str, RaftState] = {}
    for member in members:
        value = found[member.ip]
        state = value if isinstance(value, RaftState) else RaftState(problem=str(value))
        states[member.ip] = state
        if state.problem:
            ctx.report.host(member.ip, f"raft state unreadable: {state.problem}", "failed")
        else:
            role = " (learner)" if state.is_learner else ""
            ctx.report.host(member.ip, f"term {state.term}, commit {state.commit}{role}")
    return states


def _candidate(
    member: Member,
    facts: Mapping[str, HostFacts],
    answers: Mapping[str, LeaderAnswer],
    states: Mapping[str, RaftState],
) -> Candidate:
    """Rank by the WAL's commit (what force-new-cluster keeps); /metrics only where the
    WAL cannot be read, and never its 0 (a restarted member with pre-vote shows 0)."""
    state = states.get(member.ip, RaftState())
    answer = answers.get(member.ip)
    index = state.commit
    if index is None and answer is not None and answer.raft_index:
        index = answer.raft_index
    learner = state.is_learner if state.is_learner is not None else (member.learner or None)
    return Candidate(member.ip, facts[member.ip].has_data, index, learner, state.problem)


def _finish(
    ctx: Context,
    source: Member,
    others: list[Member],
    promote_timeout: float,
    stamp: str,
    result: RecoverResult,
) -> None:
    """From the forced start on: the source on its own etcd.conf, the others added."""
    host = ctx.host(source)
    if drhost.forced(host):
        ctx.report.phase(f"restart {source.name} without force-new-cluster")
        drhost.clear_forced(host)
        ctx.wait_healthy([source])
        ctx.report.host(source.ip, "restarted on its own etcd.conf, healthy", "changed")
    _add_back(ctx, others, stamp, promote_timeout, result)
    ctx.report.phase("refresh etcd.conf on the members")
    refresh_conf(ctx)
    if not result.unreachable:
        result.next_steps = [RELOAD_HINT]
    else:
        gone = " ".join(result.unreachable)
        result.next_steps = [
            f"{gone} could not be reached: once they answer, run etcdsop recover again "
            "(it adds them, old data moved aside)",
            RELOAD_HINT,
        ]


def _forced_start(
    ctx: Context,
    source: Member,
    others: list[Member],
    facts: dict[str, HostFacts],
    answers: dict[str, LeaderAnswer],
    record: dict[str, str] | None,
    stamp: str,
    result: RecoverResult,
) -> None:
    host = ctx.host(source)
    ctx.report.phase(f"snapshot of {source.name} ({source.ip})")
    kept = Path(record["snapshot"]) if record else None
    if kept is not None and _whole(kept):
        ctx.report.info(f"the snapshot the interrupted run took is whole: {kept}")
        result.snapshot = str(kept)
    else:
        hostops.stop_etcd(host)
        ctx.report.host(source.ip, "etcd stopped (data kept)", "changed")
        path = save_bolt_copy(
            drhost.read_bolt(host, source), ctx.inventory.files_dir / "backup", source.cluster
        )
        answer = answers.get(source.ip)
        sidecar = Sidecar(
            cluster=source.cluster,
            cluster_id=answer.cluster_id if answer else "",
            revision=None,
            members=(),
            etcd_version=facts[source.ip].etcd_version or "",
            sha256=sha256_file(path),
            size=path.stat().st_size,
            source=source.name,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        write_private_json(sidecar_path(path), sidecar.to_json())
        result.snapshot = str(path)
        ctx.report.info(f"snapshot of {source.name}'s data: {path} ({sidecar.size} B, verified)")
    ctx.snapshots.append(result.snapshot)
    doc = {"source": source.ip, "snapshot": result.snapshot, "stamp": stamp}
    write_private_json(record_path(ctx.inventory), doc)
    if others:
        ctx.report.phase(f"stop etcd on the {len(others)} other reachable host(s)")
        stopped = ctx.parallel(others, lambda m: hostops.stop_etcd(ctx.host(m)))
        for member in others:
            if isinstance(stopped[member.ip], ClusterError):
                raise stopped[member.ip]  # type: ignore[misc]
            ctx.report.host(member.ip, "etcd stopped (data kept)", "changed")
    ctx.report.phase(f"start {source.name} once with force-new-cluster")
    hostops.stop_etcd(host)
    drhost.start_forced(host)
    ctx.wait_healthy([source])
    result.forced = True
    # The source leads: the forced start is over and must never be redone from this
    # record. What is left is adding hosts back, under its own name.
    others_ips = [m.ip for m in ctx.inventory.members if m.ip != source.ip]
    _write_addback(ctx.inventory, source.ip, stamp, others_ips)
    record_path(ctx.inventory).unlink(missing_ok=True)
    ctx.report.host(source.ip, "a one-member cluster with its data, healthy", "changed")


def _whole(path: Path) -> bool:
    try:
        verify_snapshot(path)
    except (OSError, ClusterError):
        return False
    return True


def _add_back(
    ctx: Context, others: list[Member], stamp: str, promote_timeout: float, result: RecoverResult
) -> None:
    for member in others:
        view = ctx.probe()
        entry = find_live(member, view.members)
        if entry is not None and entry.started and entry.is_learner and not member.learner:
            # Added by an interrupted run and started on its new data: promoted, not
            # skipped (a skipped learner left the cluster one voter short for good).
            join_member(ctx, member, promote_timeout=promote_timeout)
            result.added.append(member.ip)
            continue
        if entry is not None and entry.started:
            ctx.report.host(member.ip, "a started member already, skipped", "skipped")
            result.skipped.append(member.ip)
            continue
        host = ctx.host(member)
        hostops.stop_etcd(host)  # an old member's etcd must not start on its old data
        aside = drhost.move_aside(host, member, f"pre-recover-{stamp}")
        if aside:
            result.moved_aside[member.ip] = aside
            ctx.report.host(member.ip, f"old data moved to {aside}", "changed")
        join_member(ctx, member, promote_timeout=promote_timeout)
        result.added.append(member.ip)
