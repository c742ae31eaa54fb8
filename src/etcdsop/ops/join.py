"""Join one host to a live cluster: `add`, and `create` on a live cluster.

Learner first (it cannot hurt the quorum while it catches up), promoted once in
sync. A failure is undone only while undoing cannot cost quorum: a member that is
(or may be) a voter is never stopped or removed here, and a data dir is wiped only
once its member is out of the list. A member announced before this run (by hand,
as the SOP's manual steps do) is started as it is and never added twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass

from etcdsop.errors import ClusterError, EtcdsopError, GuardRefused, Interrupted, MemberError
from etcdsop.etcd import EtcdClient, MemberInfo
from etcdsop.model import Member
from etcdsop.ops import hostops
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.membership import add_member, promote_member, remove_member
from etcdsop.ops.stages import (
    apply_plans,
    check_guards,
    gather_facts,
    issue_certificates,
    plan_member,
)
from etcdsop.plan import find_live

PROGRESS_EVERY = 2.0  # seconds between catch-up lines
UNIT_CHECK_EVERY = 2.0  # seconds between looks at the joining host's unit
FAILED_STARTS = 2  # systemd restarts after which the joining etcd is taken as failing


@dataclass(frozen=True)
class Joined:
    ip: str
    id: str
    learner: bool
    skipped: bool = False  # a started member already: nothing to do


def live_view(ctx: Context) -> ClusterView:
    view = ctx.probe()
    if not view.live:
        raise ClusterError(
            f"no member of cluster {ctx.inventory.cluster!r} answers: "
            "nothing to add to (create it with etcdsop create)"
        )
    return view


def join_member(
    ctx: Context, member: Member, *, promote_timeout: float, promote_announced: bool = True
) -> Joined:
    """One host into the live cluster; the member list is as before when it fails
    early, and a re-run finishes what an interrupted run started."""
    ctx.report.phase(f"add {member.name} ({member.ip})")
    view = live_view(ctx)
    voters = ctx.voter_client(view)
    entry = find_live(member, view.members)
    if entry is not None and entry.started:
        if not entry.is_learner or member.learner:
            kind = "learner" if entry.is_learner else "member"
            ctx.report.host(member.ip, f"already a {kind}, skipped", "skipped")
            return Joined(member.ip, entry.hex_id, entry.is_learner, skipped=True)
        ctx.report.host(member.ip, "already a learner: promoting it", "info")
        promote_in_sync(ctx, voters, member, entry, promote_timeout)
        done = verify(ctx, voters, member, entry.id, learner=False)
        return Joined(member.ip, done.hex_id, False)

    preflight(ctx, view, member, entry)
    joiner = dataclasses.replace(member, init="existing")
    facts = gather_facts(ctx, [joiner])
    check_guards([joiner], facts, view)
    certs = issue_certificates(ctx, [joiner], [])
    apply_plans(ctx, [plan_member(ctx, joiner, [joiner], facts[joiner.ip], view, certs)])

    state = _Progress(created=entry is None)
    try:
        if entry is None:
            entry = add_member(
                voters, member.peer_url, learner=True, timeout=ctx.options.wait_timeout
            ).member
            ctx.report.host(member.ip, f"member {entry.hex_id} added as learner", "changed")
        else:
            kind = "learner" if entry.is_learner else "voter"
            ctx.report.host(
                member.ip,
                f"announced before as {kind} {entry.hex_id}: starting it as it is",
                "info",
            )
        state.member_id = entry.id
        promote = entry.is_learner and not member.learner and (state.created or promote_announced)
        ctx.host(member).run(["systemctl", "start", "--no-block", "etcd"], timeout=60)
        wait_started(ctx, voters, member, entry, timeout=promote_timeout)
        if promote:
            state.promote_sent = True  # from here on the member may be a voter
            promote_in_sync(ctx, voters, member, entry, promote_timeout)
        done = verify(ctx, voters, member, entry.id, learner=entry.is_learner and not promote)
    except (EtcdsopError, KeyboardInterrupt) as exc:
        if ctx.aborted:
            raise  # the lock is lost: another operator may act now; a re-run resumes
        why = exc.message if isinstance(exc, EtcdsopError) else "interrupted"
        interrupted = not isinstance(exc, EtcdsopError)
        raise undo(ctx, voters, member, state, why=why, interrupted=interrupted) from exc
    return Joined(member.ip, done.hex_id, done.is_learner)


@dataclass
class _Progress:
    """How far a join got: what undoing it may touch."""

    created: bool  # the member add is ours (it may have been applied even if unanswered)
    member_id: int | None = None  # None: the add's answer never came
    promote_sent: bool = False  # the member may be a voter: never stop or remove it


def preflight(ctx: Context, view: ClusterView, member: Member, own: MemberInfo | None) -> None:
    """Every voter answers and knows the leader; nothing else pending; the host answers."""
    pending = [
        m
        for m in view.members
        if (not m.started or m.is_learner) and (own is None or m.id != own.id)
    ]
    if pending:
        who = ", ".join(f"{p.name or 'unstarted'} {p.hex_id} ({p.peer_urls[0]})" for p in pending)
        raise GuardRefused(
            f"a pending member must be finished first: {who}: promote it "
            "(etcdsop promote IP) or remove it (etcdsop rm IP)"
        )
    # An announced voter that never started counts toward the quorum already: on a
    # 1-member cluster it is what the quorum waits for, so no leader is asked for then.
    needs_it = own is not None and not own.is_learner
    client = ctx.voter_client(view)
    for voter in view.members:
        if needs_it or (own is not None and voter.id == own.id):
            continue  # without a quorum, no status: they answered the member list
        url = voter.client_urls[0] if voter.client_urls else ""
        try:
            status = client.status(url)
        except ClusterError as exc:
            raise GuardRefused(
                f"voter {voter.name} ({url}) does not answer: a new member "
                f"would lower the fault tolerance further ({exc.message})"
            ) from exc
        if not status.leader and not needs_it:
            raise GuardRefused(f"voter {voter.name} knows no leader: cluster not healthy")
    ctx.connect([member])


def leader_url(ctx: Context, voters: EtcdClient) -> str:
    """The leader's client URL, from Maintenance Status of the voters."""
    members = voters.member_list()
    for m in members:
        if m.is_learner or not m.client_urls:
            continue
        try:
            leader_id = voters.status(m.client_urls[0]).leader
        except ClusterError:
            continue
        leader = next((x for x in members if x.id == leader_id and x.client_urls), None)
        if leader is not None:
            return leader.client_urls[0]
    raise ClusterError("no voter reports a leader")


def leader_list(ctx: Context, voters: EtcdClient) -> list[MemberInfo]:
    """The member list as the leader has it: a follower cut off from its peers still
    answers, with a list that may be stale (3.4 serves it from local state)."""
    return voters.member_list(endpoint=leader_url(ctx, voters))


def _progress(ctx: Context, voters: EtcdClient, member: Member) -> str:
    try:
        mine = voters.status(member.client_url).raft_index
    except ClusterError:
        return "waiting for etcd to start and receive the leader's data"
    try:
        leader = voters.status(leader_url(ctx, voters)).raft_index
    except ClusterError:
        return f"raft index {mine}"
    return f"catching up: raft index {mine} / {leader} (leader)"


def wait_started(
    ctx: Context, voters: EtcdClient, member: Member, entry: MemberInfo, *, timeout: float
) -> MemberInfo:
    """Until the member is started and healthy, bounded by --promote-timeout: a learner
    answers /health only once it applied the leader's data, however large."""
    host = ctx.host(member)
    deadline = time.monotonic() + timeout
    shown = checked = time.monotonic()
    while True:
        with contextlib.suppress(ClusterError):
            now = next((m for m in voters.member_list() if m.id == entry.id), None)
            if now is None:
                raise MemberError(f"{member.ip}: member {entry.hex_id} left the member list")
            if now.started and voters.health(member.client_url):
                ctx.report.host(member.ip, f"started, healthy {_kind(now)}", "ok")
                return now
        moment = time.monotonic()
        if moment - checked >= UNIT_CHECK_EVERY:
            checked = moment
            _check_unit(
                host_state=host.run(
                    ["systemctl", "show", "-p", "ActiveState", "-p", "NRestarts", "etcd"],
                    check=False,
                    timeout=20,
                ).stdout,
                ip=member.ip,
            )
        if moment - shown >= PROGRESS_EVERY:
            shown = moment
            ctx.report.host(member.ip, _progress(ctx, voters, member), "info")
        if moment > deadline:
            raise MemberError(
                f"{member.ip}: not started and healthy after {timeout:.0f}s "
                "(--promote-timeout bounds the catch-up)"
            )
        time.sleep(0.3)


def _check_unit(host_state: str, ip: str) -> None:
    values = dict(line.split("=", 1) for line in host_state.splitlines() if "=" in line)
    restarts = int(values.get("NRestarts", "0") or 0)
    if values.get("ActiveState") == "failed" or restarts >= FAILED_STARTS:
        raise MemberError(
            f"{ip}: etcd does not start there (unit {values.get('ActiveState', '?')}, "
            f"{restarts} restart(s)); see its journal below"
        )


def _kind(entry: MemberInfo) -> str:
    return "learner" if entry.is_learner else "voter"


def promote_in_sync(
    ctx: Context, voters: EtcdClient, member: Member, entry: MemberInfo, timeout: float
) -> MemberInfo:
    """Promote through the leader once in sync, catch-up progress shown meanwhile."""
    shown = [0.0]

    def waiting() -> None:
        if time.monotonic() - shown[0] >= PROGRESS_EVERY:
            shown[0] = time.monotonic()
            ctx.report.host(member.ip, _progress(ctx, voters, member), "info")

    try:
        promoted = promote_member(
            voters,
            entry.id,
            leader_url=lambda: leader_url(ctx, voters),
            timeout=timeout,
            on_waiting=waiting,
            read=lambda: leader_list(ctx, voters),
        )
    except ClusterError as exc:
        raise MemberError(
            f"{member.ip}: promote failed: {exc.message}; raise --promote-timeout or "
            f"promote later with: etcdsop promote {member.ip}"
        ) from exc
    ctx.report.host(member.ip, f"promoted {entry.hex_id} to voter", "changed")
    return promoted


def verify(
    ctx: Context, voters: EtcdClient, member: Member, member_id: int, *, learner: bool
) -> MemberInfo:
    """Bounded wait until the member is started, of the wanted kind, and healthy."""
    from etcdsop.waits import poll_until

    def ready() -> MemberInfo | None:
        with contextlib.suppress(ClusterError):
            entry = next((m for m in voters.member_list() if m.id == member_id), None)
            ok = entry is not None and entry.started and entry.is_learner == learner
            if ok and voters.health(member.client_url):
                return entry
        return None

    found = poll_until(ready, timeout=ctx.options.wait_timeout)
    kind = "learner" if learner else "voter"
    if found is None:
        raise MemberError(
            f"{member.ip}: not a healthy {kind} after {ctx.options.wait_timeout:.0f}s"
        )
    ctx.report.host(member.ip, f"healthy {kind}", "ok")
    return found


def undo(
    ctx: Context,
    voters: EtcdClient,
    member: Member,
    state: _Progress,
    *,
    why: str,
    interrupted: bool,
) -> EtcdsopError:
    """Undo a failed join as far as that is safe; the error to raise, saying what is left.

    Decided on the leader's member list. A member that is, or may be, a voter (a
    promote was sent) is never stopped or removed: that could cost the quorum. A
    learner is removed first, stopped after (a learner's stop costs nothing), and its
    data wiped only once the leader's list no longer has it.
    """
    ctx.report.host(member.ip, f"failed ({why})", "failed")
    host = ctx.host(member)
    journal = ""
    with contextlib.suppress(ClusterError):
        journal = host.journal_tail("etcd", 20)
    details = f"--- {member.ip} journalctl -u etcd ---\n{journal}" if journal else None
    error_type = Interrupted if interrupted else MemberError
    lead = f"{member.ip}: adding {member.name} failed: {why}"

    def listed() -> MemberInfo | bool | None:
        """Our entry in the leader's list, None when absent, False when unreadable."""
        try:
            members = leader_list(ctx, voters)
        except ClusterError:
            return False
        if state.member_id is not None:
            return next((m for m in members if m.id == state.member_id), None)
        return next((m for m in members if member.peer_url in m.peer_urls), None)

    now = listed()
    if now is False:
        return error_type(
            f"{lead}; no leader answers the member list, so nothing was undone: "
            f"check `etcdsop status`, then re-run `etcdsop add {member.ip}`",
            details=details,
        )
    if state.promote_sent or (isinstance(now, MemberInfo) and not now.is_learner):
        return error_type(
            f"{lead}; {member.name} is (or may be) a voter already and is kept, nothing "
            f"undone (stopping it could cost the quorum): re-run `etcdsop add {member.ip}` "
            "to finish",
            details=details,
        )
    if not state.created:
        with contextlib.suppress(EtcdsopError):
            hostops.stop_etcd(host)  # a learner or not a member: stopping costs no quorum
        return error_type(
            f"{lead}; it was announced before this run and is left in the member list as "
            f"it was (etcd stopped on the host): fix the cause and re-run, or remove it "
            f"with `etcdsop rm {member.ip}`",
            details=details,
        )
    ctx.report.host(member.ip, "rolling back: remove the learner, stop etcd, wipe its data", "info")
    problems: list[str] = []
    if isinstance(now, MemberInfo):  # a learner: removing it never changes the quorum
        try:
            remove_member(
                voters,
                now.id,
                timeout=ctx.options.wait_timeout,
                read=lambda: leader_list(ctx, voters),
            )
        except EtcdsopError as exc:
            problems.append(f"member remove: {exc.message}")
    try:
        hostops.stop_etcd(host)  # a learner (no promote was ever sent) or gone
    except EtcdsopError as exc:
        problems.append(f"stop: {exc.message}")
    if listed() is None:
        try:
            hostops.wipe_data(host, member)
        except EtcdsopError as exc:
            problems.append(f"wipe: {exc.message}")
    else:
        problems.append(
            f"its data dir is kept: the member may still be in the list (`etcdsop rm {member.ip}`)"
        )
    state_text = (
        "rolled back, member list as before"
        if not problems
        else "ROLLBACK INCOMPLETE: " + "; ".join(problems)
    )
    return error_type(f"{lead}; {state_text}", details=details)
