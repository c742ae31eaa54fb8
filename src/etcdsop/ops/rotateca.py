"""`etcdsop certs rotate-ca`: a new CA without downtime (phases: carotation.py).

Each phase is idempotent and saved in files/pki/ca/rotation.json once done, so a re-run
after an interruption anywhere continues. Before every member restart the trust it
will start with must hold the CA of every member's current certificate
(carotation.unsafe_restart), and the quorum guard of every rolling restart applies;
the leader hands over to a healthy follower before its own restart.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from etcdsop.carotation import (
    NEXT,
    STATE_FILE,
    Rotation,
    archive_name,
    dump_state,
    fingerprints,
    next_phase,
    parse_state,
    trust_for,
    unsafe_restart,
)
from etcdsop.certinfo import CertEntry, bundle, fingerprint, load_pems, pem, short_fp
from etcdsop.errors import ClusterError, EtcdsopError, GuardRefused, InputError
from etcdsop.model import Member
from etcdsop.ops.certhosts import ClientCerts, MemberCerts, read_members
from etcdsop.ops.certs import (
    ADMIN,
    Survey,
    load_key,
    local_trust,
    renew,
    restart_vip,
    survey,
)
from etcdsop.ops.common import Context
from etcdsop.ops.filebackup import run_stamp, write_with_backup
from etcdsop.ops.restart import leader_last, rolling_restart
from etcdsop.pki import CA_KEY_BITS, RENEW_BEFORE, Pki, _key_pem, _spki, _write_atomic
from etcdsop.plan import find_live
from etcdsop.remote import run_parallel
from etcdsop.render import CA_CRT, SERVER_CRT
from etcdsop.waits import poll_until


@dataclass
class RotateResult:
    old: str = ""
    new: str = ""
    archive: str = ""
    phases: list[str] = field(default_factory=list)  # done by this run
    restarted: dict[str, list[str]] = field(default_factory=dict)  # phase -> member IPs
    reissued: int = 0
    vip_restarted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "old_ca": self.old,
            "new_ca": self.new,
            "archive": self.archive,
            "phases": self.phases,
            "restarted": self.restarted,
            "reissued": self.reissued,
            # vip-manager restarts per host (once per phase that changed its files)
            "vip_manager_restarts": {
                ip: self.vip_restarted.count(ip) for ip in sorted(set(self.vip_restarted))
            },
        }


# -- the admin node's files ----------------------------------------------------------------
class LocalCa:
    """files/pki/ca: ca.crt/ca.key (the signing CA first in ca.crt), ca-next.* (the new CA
    until it signs), ca-YYYYMMDD-<fp8>.* (archived, never deleted), rotation.json."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.dir = ctx.pki_dir / "ca"
        self.crt, self.key = self.dir / "ca.crt", self.dir / "ca.key"
        self.next_crt, self.next_key = self.dir / f"{NEXT}.crt", self.dir / f"{NEXT}.key"
        self.state_path = self.dir / STATE_FILE

    def state(self) -> Rotation | None:
        if not self.state_path.exists():
            return None
        try:
            text = self.state_path.read_text()
        except OSError as exc:
            raise InputError(f"cannot read {self.state_path}: {exc.strerror}") from None
        return parse_state(text, str(self.state_path))

    def save(self, rotation: Rotation) -> None:
        _write_atomic(self.state_path, dump_state(rotation), 0o644)

    def begin(self) -> tuple[Rotation, x509.Certificate, x509.Certificate]:
        """Phase new-ca: archive the old CA, make (or re-use) the new one, trust both."""
        trust = local_trust(self.ctx)
        old = trust.signing
        old_key_pem = self.key.read_bytes()
        key = load_key(self.key)
        if _spki(key.public_key()) != _spki(old.public_key()):
            raise InputError(f"the CA key {self.key} does not match {self.crt}")
        if len(trust.cas) > 1 and not self.next_crt.exists():
            raise InputError(
                f"{self.crt} holds {len(trust.cas)} CAs but no rotation is under way "
                f"({self.state_path} missing): keep only the CA that ca.key belongs to"
            )
        archive = archive_name(old, datetime.now(timezone.utc))
        crt, arch_key = self.dir / f"{archive}.crt", self.dir / f"{archive}.key"
        if not crt.exists():
            _write_atomic(arch_key, old_key_pem, 0o600)
            _write_atomic(crt, pem(old), 0o644)
        new = self._next(old)
        _write_atomic(self.crt, bundle(old, new), 0o644)
        rotation = Rotation("new-ca", fingerprint(old), fingerprint(new), archive)
        self.save(rotation)
        return rotation, old, new

    def _next(self, old: x509.Certificate) -> x509.Certificate:
        """The new CA: the one an interrupted run made, else a fresh RSA 4096 (as Pigsty's).
        A ca-next.key holding the current CA's key (an interrupted `finish` left it) is
        not a new one: re-using it would "rotate" to the same key."""
        key = load_key(self.next_key) if self.next_key.exists() else None
        if key is not None and _spki(key.public_key()) == _spki(old.public_key()):
            key = None
        if key is not None and self.next_crt.exists():
            certs = load_pems(self.next_crt.read_bytes())
            if certs and _spki(certs[0].public_key()) == _spki(key.public_key()):
                return certs[0]
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
            _write_atomic(self.next_key, _key_pem(key), 0o600)
        cert = Pki(self.ctx.pki_dir)._self_sign(key)
        _write_atomic(self.next_crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert

    def cas(self, rotation: Rotation) -> tuple[x509.Certificate, x509.Certificate]:
        """The old (archived) and the new CA of a rotation under way."""
        old = load_pems((self.dir / f"{rotation.archive}.crt").read_bytes())
        new = load_pems(self.next_crt.read_bytes()) if self.next_crt.exists() else []
        if not new:  # after `done` the new CA is ca.crt itself
            new = [c for c in load_pems(self.crt.read_bytes()) if fingerprint(c) == rotation.new]
        if not old or fingerprint(old[0]) != rotation.old or not new:
            raise InputError(
                f"{self.dir}: the CAs of the rotation in {self.state_path} are not all there "
                f"(old {rotation.archive}.crt, new {NEXT}.crt)"
            )
        return old[0], new[0]

    def switch(self, rotation: Rotation) -> None:
        """The new CA signs from now on; the old one stays trusted."""
        old, new = self.cas(rotation)
        next_key = self.next_key.read_bytes()
        if self.key.read_bytes() != next_key:
            _write_atomic(self.key, next_key, 0o600)
        _write_atomic(self.crt, bundle(new, old), 0o644)

    def finish(self, rotation: Rotation) -> None:
        _, new = self.cas(rotation)
        _write_atomic(self.crt, pem(new), 0o644)
        for path in (self.next_crt, self.next_key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# -- hosts -------------------------------------------------------------------------------------
def guard_healthy(ctx: Context) -> list[Member]:
    """Every voter healthy before anything changes (exit 3 otherwise); the members to
    work on are the inventory's that are in the live cluster."""
    view = ctx.probe()
    if not view.live:
        raise GuardRefused(
            f"refusing to rotate the CA: no member of {ctx.inventory.cluster!r} answers"
        )
    client = ctx.voter_client(view)
    sick = [
        m.name or m.hex_id
        for m in view.members
        if m.is_learner or not m.started or not client.health(m.client_urls[0])
    ]
    strangers = [
        u
        for m in view.members
        for u in m.peer_urls
        if not any(u == x.peer_url for x in ctx.inventory.members)
    ]
    if sick or strangers:
        why = "; ".join(
            f"{what}: {', '.join(names)}"
            for what, names in (("not healthy", sick), ("not in the inventory", strangers))
            if names
        )
        raise GuardRefused(
            f"refusing to rotate the CA, nothing was changed: every voter must be healthy ({why})"
        )
    return [m for m in ctx.inventory.members if find_live(m, view.members) is not None]


def reachable(found: Survey) -> Survey:
    """Every host of the survey was read (exit 3 otherwise): one that cannot be updated
    would be cut off. Checked at every phase: a host may go down during a run."""
    if found.unreachable:
        raise GuardRefused(
            "refusing to rotate the CA: a host that cannot be updated would be cut off, "
            "re-run once it is back: " + "; ".join(found.unreachable)
        )
    return found


def _fail_on(results: dict[str, object], what: str) -> None:
    failed = [f"{k}: {v.message}" for k, v in results.items() if isinstance(v, EtcdsopError)]
    if failed:
        raise ClusterError(
            f"{what} failed on {len(failed)} host(s), re-run to continue: {failed[0]}",
            details="\n".join(failed[1:]) or None,
        )


def push_trust(
    ctx: Context,
    content: bytes,
    want: frozenset[str],
    members: list[MemberCerts],
    clients: list[ClientCerts],
    result: RotateResult,
) -> None:
    """The CA file of every member and client set to `content` where its CAs differ;
    vip-manager (which reads it at start only) restarted where its file changed."""
    stamp, forks = run_stamp(), ctx.options.forks

    def member(m: MemberCerts) -> None:
        assert m.read is not None
        f = m.read.files.get(CA_CRT)
        if f is not None and fingerprints(f.content) == want:
            return
        if f is None:
            write_with_backup(
                ctx.host(m.member),
                CA_CRT,
                content,
                stamp,
                owner="etcd",
                group="etcd",
                mode=0o644,
                existed=False,
            )
        else:
            write_with_backup(ctx.host(m.member), f.target, content, stamp)
        ctx.report.host(m.member.ip, f"{CA_CRT}: {len(want)} CA(s)", "changed")

    def client(c: ClientCerts) -> None:
        assert c.read is not None and c.host is not None
        vip = False
        for s in c.sets:
            f = c.read.files.get(s.cacert)
            if f is None or fingerprints(f.content) == want:
                continue
            write_with_backup(c.host, f.target, content, stamp)
            ctx.report.host(
                c.job.ip, f"{s.cacert}: {len(want)} CA(s) ({'+'.join(s.users)})", "changed"
            )
            vip = vip or "vip-manager" in s.users
        if vip and c.vip_active:
            why = restart_vip(c.host)
            if why:
                raise ClusterError(why)
            result.vip_restarted.append(c.job.ip)

    _fail_on(
        run_parallel(members, member, forks=forks, key=lambda m: m.member.ip), "writing ca.crt"
    )
    _fail_on(
        run_parallel(clients, client, forks=forks, key=lambda c: c.job.ip),
        "writing the clients' CA",
    )


def _server_certs(reads: list[MemberCerts]) -> dict[str, x509.Certificate | None]:
    out: dict[str, x509.Certificate | None] = {}
    for m in reads:
        certs = load_pems(m.content(SERVER_CRT) or b"")
        out[m.member.name] = certs[0] if certs else None
    return out


def hand_over(ctx: Context, member: Member, done: list[str]) -> None:
    """Before the leader restarts: leadership to a healthy follower (one already
    restarted, if any), so its restart costs no election."""
    client = ctx.voter_client()
    status = client.status(member.client_url)
    if status.leader != status.member_id:
        return
    live = [
        m
        for m in client.member_list()
        if m.id != status.member_id and m.started and not m.is_learner
    ]
    healthy = [m for m in live if m.client_urls and client.health(m.client_urls[0])]
    if not healthy:
        raise GuardRefused(
            f"refusing to restart the leader {member.name}: no healthy follower to take over"
        )
    healthy.sort(key=lambda m: not any(urlsplit(u).hostname in done for u in m.client_urls))
    target = healthy[0]
    ctx.report.host(member.ip, f"leadership to {target.name or target.hex_id}", "start")
    client.move_leader(target.id, leader_endpoint=member.client_url)

    def moved() -> bool | None:
        try:
            return True if client.status(target.client_urls[0]).leader == target.id else None
        except ClusterError:
            return None

    if poll_until(moved, timeout=ctx.options.wait_timeout, interval=0.2) is None:
        raise ClusterError(
            f"leadership did not move from {member.name} within {ctx.options.wait_timeout:.0f}s"
        )


def wait_caught_up(ctx: Context, member: Member) -> None:
    """The restarted member has applied what the leader had when it came back."""
    client = ctx.voter_client()

    def leader_index() -> int | None:
        try:
            status = client.status(member.client_url)
            urls = {m.id: m.client_urls for m in client.member_list()}
            return client.status(urls[status.leader][0]).raft_index
        except (ClusterError, KeyError, IndexError):
            return None

    target = poll_until(leader_index, timeout=ctx.options.wait_timeout)
    if target is None:
        raise ClusterError(f"{member.name}: no leader known after its restart")

    def caught_up() -> bool | None:
        try:
            return True if client.status(member.client_url).raft_index >= target else None
        except ClusterError:
            return None

    if poll_until(caught_up, timeout=ctx.options.wait_timeout) is None:
        raise ClusterError(
            f"{member.name} did not catch up with the leader in {ctx.options.wait_timeout:.0f}s"
        )


def restart_stale(ctx: Context, members: list[Member], phase: str, result: RotateResult) -> None:
    """Members whose etcd started before their ca.crt was written, one at a time,
    followers first, the leader last (after handing over), each healthy and caught up."""
    done = result.restarted.setdefault(phase, [])
    reads = read_members(ctx, members)
    _fail_on({r.member.ip: ClusterError(r.error) for r in reads if r.error}, "reading the members")
    stale = [r.member for r in reads if r.runs_old_trust]
    if not stale:
        ctx.report.info(f"{phase}: every member already runs with its current ca.crt")
        return
    for member in leader_last(ctx, stale):
        now = read_members(ctx, members)  # current certificates and trust, just before
        unread = [f"{r.member.name} ({r.error})" for r in now if r.error]
        if unread:  # its certificate unknown: the rule cannot be checked
            raise GuardRefused(
                f"refusing to restart {member.name}: cannot read {', '.join(unread)}; "
                "re-run once it answers"
            )
        trust = load_pems(next(r for r in now if r.member is member).content(CA_CRT) or b"")
        refused = unsafe_restart(trust, _server_certs(now))
        if refused:
            raise GuardRefused(
                f"refusing to restart {member.name}: the CAs of its ca.crt do not sign the "
                f"certificate(s) of {', '.join(refused)}: it could not talk to them"
            )
        hand_over(ctx, member, done)
        rolling_restart(ctx, member, done)
        wait_caught_up(ctx, member)
        done.append(member.ip)


# -- the phases --------------------------------------------------------------------------------
def rotate(ctx: Context) -> RotateResult:
    report, local = ctx.report, LocalCa(ctx)
    result = RotateResult()
    rotation = local.state()
    local_trust(ctx)  # no CA here: say so (exit 1) before asking the cluster anything
    report.phase("health")
    members = guard_healthy(ctx)
    ctx.connect(members)
    found = reachable(survey(ctx, RENEW_BEFORE, members))
    if next_phase(rotation) == "new-ca":
        report.phase("new CA")
        rotation, old, new = local.begin()
        report.info(
            f"new CA {short_fp(new)}; the old one {short_fp(old)} kept as "
            f"{rotation.archive}.crt/.key"
        )
        result.phases.append("new-ca")
    assert rotation is not None
    old, new = local.cas(rotation)
    result.old, result.new, result.archive = short_fp(old), short_fp(new), rotation.archive
    # Until the new CA signs, a re-run checks the bundle again (no-ops when it holds): a
    # ca.crt rewritten since without a restart is caught up, not "re-run" forever.
    if not rotation.done("reissued"):
        report.phase("trust old + new CA everywhere")
        found = reachable(survey(ctx, RENEW_BEFORE, members))
        push_trust(
            ctx,
            bundle(old, new),
            trust_for(rotation, "bundle"),
            found.members,
            found.clients,
            result,
        )
        report.phase("rolling restart (old + new CA)")
        restart_stale(ctx, members, "bundle", result)
        if not rotation.done("bundle"):
            rotation = rotation.to("bundle")
            local.save(rotation)
            result.phases.append("bundle")
    if not rotation.done("reissued"):
        report.phase("certificates re-issued by the new CA")
        _check_bundle_everywhere(ctx, members, rotation)
        local.switch(rotation)
        renewed = renew(ctx, RENEW_BEFORE, everything=True, members=members)
        result.reissued += len(renewed.reissued)
        result.vip_restarted += renewed.restarted
        if renewed.failed:
            raise ClusterError(
                f"{len(renewed.failed)} certificate(s) not re-issued, re-run to continue: "
                + renewed.failed[0],
                details="\n".join(renewed.failed[1:]) or None,
            )
        rotation = rotation.to("reissued")
        local.save(rotation)
        result.phases.append("reissued")
    report.phase("trust the new CA alone")
    found = reachable(survey(ctx, RENEW_BEFORE, members))
    left = signed_by_another(found.entries, short_fp(new))
    if left:
        raise ClusterError(
            f"{len(left)} certificate(s) still signed by another CA, the old CA stays trusted: "
            + ", ".join(left[:5])
        )
    local.finish(rotation)
    push_trust(ctx, pem(new), trust_for(rotation, "done"), found.members, found.clients, result)
    report.phase("rolling restart (new CA alone)")
    restart_stale(ctx, members, "done", result)
    rotation = rotation.to("done")
    local.save(rotation)
    result.phases.append("done")
    return result


def signed_by_another(entries: list[CertEntry], new: str) -> list[str]:
    """The certificates the old CA must stay trusted for: every node, client and admin
    certificate not signed by the new CA. A file that is not there (a PostgreSQL host
    without Patroni yet: reload's default set) is none: no client presents it."""
    return [
        e.where
        for e in entries
        if e.kind in ("node", "client", "admin")
        and e.issuer != new
        and (e.host != ADMIN or e.kind == "admin")  # other admin-node files are copies
        and not (e.state == "unreadable" and not e.issuer)
    ]


def _check_bundle_everywhere(ctx: Context, members: list[Member], rotation: Rotation) -> None:
    """No certificate is signed by the new CA before every member runs with it trusted."""
    want = trust_for(rotation, "bundle")
    reads = read_members(ctx, members)
    behind = [
        r.member.name
        for r in reads
        if r.error or r.runs_old_trust or not want <= fingerprints(r.content(CA_CRT) or b"")
    ]
    if behind:
        raise ClusterError(
            f"not every member runs with the old + new CA yet ({', '.join(behind)}): "
            "re-run to continue"
        )
