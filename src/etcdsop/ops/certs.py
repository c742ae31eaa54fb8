"""`etcdsop certs` and `certs renew`: every certificate the cluster and its clients use.

The survey reads the admin node's pki dir and, in parallel, every member and
PostgreSQL host (certhosts.py); an unreachable host is an entry, not a failure.
Renewal re-signs a due certificate's own public key with the current CA
(certinfo.resign) and swaps the file atomically, keeping owner and mode; the admin
node's copies of it (same content) are swapped too. No restart: etcd reads its node
certificate per handshake (etcd-rules.md), Patroni's urllib3 loads its cert, key and
CA per new connection; vip-manager reads them at start only and is restarted.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from etcdsop.carotation import NEXT
from etcdsop.certinfo import (
    CertEntry,
    Kind,
    describe,
    judge_ca,
    judge_leaf,
    judge_trust,
    load_pems,
    pem,
    resign,
    short_fp,
)
from etcdsop.errors import ClusterError, EtcdsopError, InputError
from etcdsop.model import Member
from etcdsop.ops.certhosts import ClientCerts, MemberCerts, read_clients, read_members
from etcdsop.ops.common import Context
from etcdsop.ops.filebackup import run_stamp, write_with_backup
from etcdsop.pki import CA_WARN_BEFORE, RENEW_BEFORE, _spki, _write_atomic
from etcdsop.remote import RemoteHost, run_parallel
from etcdsop.render import CA_CRT, SERVER_CRT
from etcdsop.waits import poll_until

ADMIN = "admin"  # the host name of the admin node's own files
LEAF_DIRS = ("etcd", "etcdsop")  # the admin node's certificates under the pki dir
COPY_DIRS = ("etcd", "etcdsop", "pgsql")  # where copies of host certs may sit (Pigsty's too)


# -- the local trust ------------------------------------------------------------------
@dataclass(frozen=True)
class Trust:
    """The admin node's CA file: the signing CA first, then any other it trusts (a
    rotation in progress puts the old and the new CA there)."""

    cas: tuple[x509.Certificate, ...]

    @property
    def signing(self) -> x509.Certificate:
        return self.cas[0]


def local_trust(ctx: Context) -> Trust:
    path = ctx.pki.ca_cert_path
    try:
        cas = load_pems(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read the CA {path}: {exc.strerror}: {ctx.pki_hint()}") from None
    if not cas:
        raise InputError(f"{path} holds no certificate: {ctx.pki_hint()}")
    return Trust(tuple(cas))


def load_key(path: Path) -> Any:
    try:
        return serialization.load_pem_private_key(
            path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot use the key {path}: {exc}") from None


# -- the survey -----------------------------------------------------------------------
@dataclass
class Survey:
    trust: Trust
    members: list[MemberCerts]
    clients: list[ClientCerts]
    entries: list[CertEntry] = field(default_factory=list)

    @property
    def unreachable(self) -> list[str]:
        return [f"{m.member.ip}: {m.error}" for m in self.members if m.error] + [
            f"{c.job.ip}: {c.error}" for c in self.clients if c.error
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "ca": short_fp(self.trust.signing),
            "trusted": [short_fp(c) for c in self.trust.cas],
            "certificates": [e.to_json() for e in self.entries],
            "unreachable": self.unreachable,
            "problems": sum(1 for e in self.entries if e.state != "ok"),
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _leaf(
    kind: Kind, host: str, path: str, data: bytes | None, trust: Trust, within: timedelta
) -> CertEntry:
    now = _now()
    certs = load_pems(data or b"")
    if not certs:
        why = "missing" if data is None else "not a certificate"
        return CertEntry(kind, host, path, "unreadable", why)
    return judge_leaf(describe(kind, host, path, certs[0], now), certs[0], trust.cas, within, now)


def _trust_file(host: str, path: str, data: bytes | None, trust: Trust) -> list[CertEntry]:
    now = _now()
    certs = load_pems(data or b"")
    if not certs:
        why = "missing" if data is None else "not a certificate"
        return [CertEntry("trust", host, path, "unreadable", why)]
    return [
        judge_trust(describe("trust", host, path, c, now), c, trust.signing, now) for c in certs
    ]


def _local_entries(ctx: Context, trust: Trust, within: timedelta) -> list[CertEntry]:
    now, root = _now(), ctx.pki_dir
    entries = []
    for i, ca in enumerate(trust.cas):
        entry = judge_ca(
            describe("ca", ADMIN, str(ctx.pki.ca_cert_path), ca, now), ca, CA_WARN_BEFORE, now
        )
        if i:
            entry.detail = entry.detail or "also trusted (a CA rotation is under way)"
        entries.append(entry)
    for path in sorted((root / "ca").glob("ca-*.crt")):
        for ca in load_pems(path.read_bytes()):
            entry = describe("ca-archived", ADMIN, str(path), ca, now)
            entry.issuer = entry.fingerprint
            entry.detail = (
                "the new CA of the rotation under way (signs once re-issuing begins)"
                if path.name == f"{NEXT}.crt"
                else "kept after a rotation"
            )
            entries.append(entry)
    for sub in LEAF_DIRS:
        for path in sorted((root / sub).glob("*.crt")):
            kind: Kind = "node" if sub == "etcd" else "admin" if path.stem == "admin" else "client"
            entries.append(_leaf(kind, ADMIN, str(path), path.read_bytes(), trust, within))
    return entries


def survey(ctx: Context, within: timedelta, members: Sequence[Member] | None = None) -> Survey:
    """Everything, read only: the admin node's files, every member (or those given: the
    live ones), every client host."""
    trust = local_trust(ctx)
    chosen = list(ctx.inventory.members if members is None else members)
    reads: list[MemberCerts] = []
    clients: list[ClientCerts] = []

    # Members and PostgreSQL hosts at once: two pools, each of them parallel inside.
    def read_all() -> None:
        reads[:] = read_members(ctx, chosen)

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()
    clients[:] = read_clients(ctx)
    thread.join()
    result = Survey(trust, reads, clients, _local_entries(ctx, trust, within))
    for m in reads:
        if m.error:
            result.entries.append(
                CertEntry("node", m.member.ip, SERVER_CRT, "unreachable", m.error)
            )
            continue
        result.entries += _trust_file(m.member.ip, CA_CRT, m.content(CA_CRT), trust)
        entry = _leaf("node", m.member.ip, SERVER_CRT, m.content(SERVER_CRT), trust, within)
        if m.read and m.read.keymatch.get(SERVER_CRT) is False and entry.state == "ok":
            entry.state, entry.detail = "unreadable", "server.key does not match it"
        result.entries.append(entry)
    for c in clients:
        if c.error:
            result.entries.append(CertEntry("client", c.job.ip, "-", "unreachable", c.error))
            continue
        assert c.read is not None
        for s in c.sets:
            users = "+".join(s.users)
            ca = c.read.files.get(s.cacert)
            for e in _trust_file(c.job.ip, s.cacert, ca.content if ca else None, trust):
                e.detail = f"{users}; {e.detail}".rstrip("; ")
                result.entries.append(e)
            f = c.read.files.get(s.cert)
            entry = _leaf("client", c.job.ip, s.cert, f.content if f else None, trust, within)
            entry.detail = f"{users}; {entry.detail}".rstrip("; ")
            result.entries.append(entry)
    return result


def window(days: int | None) -> timedelta:
    if days is None:
        return RENEW_BEFORE
    if days < 0:
        raise InputError(f"--within must be 0 or more days, got {days}")
    return timedelta(days=days)


# -- writing certificates -----------------------------------------------------------------
def swap_local_copies(root: Path, old: bytes, new: bytes) -> list[str]:
    """The admin node's copies of a host certificate replaced by its successor: the files
    holding a certificate for the same key and subject (the same certificate, or one
    issued for that key pair before)."""
    was = load_pems(old)[0]
    done = []
    for sub in COPY_DIRS:
        for path in sorted((root / sub).glob("*.crt")):
            try:
                found = load_pems(path.read_bytes())
            except OSError:
                continue
            if found and same_holder(found[0], was):
                _write_atomic(path, new, path.stat().st_mode & 0o777)
                done.append(str(path))
    return done


def same_holder(a: x509.Certificate, b: x509.Certificate) -> bool:
    return a.subject == b.subject and _spki(a.public_key()) == _spki(b.public_key())


@dataclass
class Reissued:
    where: str
    old_serial: str
    new_serial: str
    issuer: str
    copies: list[str] = field(default_factory=list)  # the admin node's copies swapped too


def reissue_on_host(
    host: RemoteHost,
    path: str,
    target: str,
    old: bytes,
    ca: x509.Certificate,
    ca_key: Any,
    stamp: str,
    root: Path,
) -> tuple[Reissued, bytes]:
    """Re-sign the cert at path (target: links resolved) with ca; keep owner and mode."""
    cert = load_pems(old)[0]
    new = resign(cert, ca, ca_key, _now())
    content = pem(new)
    write_with_backup(host, target, content, stamp)
    copies = swap_local_copies(root, old, content)
    return Reissued(
        f"{host.label}:{path}",
        format(cert.serial_number, "x"),
        format(new.serial_number, "x"),
        short_fp(ca),
        copies,
    ), content


def ca_pair(ctx: Context, trust: Trust) -> tuple[x509.Certificate, Any]:
    """The signing CA and its key (they must match: pki.py checks the same)."""
    key = load_key(ctx.pki.ca_key_path)
    if _spki(key.public_key()) != _spki(trust.signing.public_key()):
        raise InputError(
            f"the CA key {ctx.pki.ca_key_path} does not match the first certificate of "
            f"{ctx.pki.ca_cert_path}: {ctx.pki_hint()}"
        )
    return trust.signing, key


def restart_vip(host: RemoteHost) -> str | None:
    """vip-manager reads its TLS files at start only: restart it as reload does; None
    when it stayed up, else why not."""
    host.run(["systemctl", "restart", "vip-manager"], timeout=60)
    check = host.run(
        ["sh", "-c", "sleep 1; systemctl is-active vip-manager"], check=False, timeout=30
    )
    state = check.stdout.strip()
    return None if state == "active" else f"vip-manager is {state or 'unknown'} after its restart"


# -- verification ---------------------------------------------------------------------------
def served_serial(ctx: Context, member: Member, timeout: float = 3.0) -> str:
    """The serial of the certificate a member's client port presents now (a handshake
    with the admin node's trust and certificate)."""
    tls = ctx.tls_files()
    if tls is None:
        raise ClusterError(f"no admin certificate under {ctx.pki_dir}")
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    try:
        with (
            socket.create_connection((member.ip, member.port), timeout) as sock,
            context.wrap_socket(sock, server_hostname=member.ip) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ClusterError(f"{member.ip}: TLS handshake failed: {exc}") from None
    if der is None:
        raise ClusterError(f"{member.ip}: presented no certificate")
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def verify_serving(ctx: Context, wanted: dict[str, str], timeout: float = 10.0) -> list[str]:
    """Each member's handshake shows the serial it should; a put still works. Returns
    one line per member (raises when one does not)."""
    lines = []
    for member in ctx.inventory.members:
        serial = wanted.get(member.ip)
        if serial is None:
            continue

        def shows(m: Member = member, s: str = serial) -> bool | None:
            try:
                return True if served_serial(ctx, m) == s else None
            except ClusterError:
                return None

        if poll_until(shows, timeout=timeout, interval=0.5) is None:
            raise ClusterError(
                f"{member.ip}: its client port does not present the new certificate "
                f"(serial {serial}) after {timeout:.0f}s"
            )
        lines.append(f"{member.ip} serves serial {serial}")
    key = f"/etcdsop/certs/{ctx.inventory.cluster}"
    client = ctx.voter_client()
    client.put(key, str(int(time.time())))
    client.delete_prefix(key)
    return lines


# -- renew ----------------------------------------------------------------------------------
@dataclass
class RenewResult:
    within_days: int
    reissued: list[Reissued] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "within_days": self.within_days,
            "reissued": [r.__dict__ for r in self.reissued],
            "failed": self.failed,
            "skipped": self.skipped,
            "vip_manager_restarted": self.restarted,
            "verified": self.verified,
        }


RENEWABLE = ("due", "expired")


def renew(
    ctx: Context,
    within: timedelta,
    *,
    everything: bool = False,
    members: Sequence[Member] | None = None,
) -> RenewResult:
    """Re-sign every node and client certificate due within the window (all of them that
    the signing CA did not sign, with `everything`: rotate-ca's step), then verify."""
    report = ctx.report
    result = RenewResult(within.days)
    report.phase("certificates")
    found = survey(ctx, within, members)
    for line in found.unreachable:
        report.warn(f"unreachable, not renewed: {line}")
        result.failed.append(line)
    ca, ca_key = ca_pair(ctx, found.trust)
    stamp, root = run_stamp(), ctx.pki_dir

    def wanted(entry: CertEntry) -> bool:
        if everything:
            return entry.issuer != short_fp(ca) and entry.state != "unreadable"
        if entry.state == "other-ca":
            result.skipped.append(f"{entry.where}: {entry.detail} (rotate-ca, or create)")
        return entry.state in RENEWABLE

    by_where = {e.where: e for e in found.entries}
    serials: dict[str, str] = {}

    def member_job(m: MemberCerts) -> None:
        entry = by_where.get(f"{m.member.ip}:{SERVER_CRT}")
        if m.read is None or entry is None or not wanted(entry):
            return
        if not m.read.keymatch.get(SERVER_CRT):
            result.failed.append(f"{entry.where}: server.key does not match it, not renewed")
            return
        f = m.read.files[SERVER_CRT]
        done, _ = reissue_on_host(
            ctx.host(m.member), SERVER_CRT, f.target, f.content, ca, ca_key, stamp, root
        )
        result.reissued.append(done)
        serials[m.member.ip] = done.new_serial
        report.host(m.member.ip, f"server.crt re-issued (serial {done.new_serial})", "changed")

    def client_job(c: ClientCerts) -> None:
        if c.read is None or c.host is None:
            return
        changed_vip = False
        for s in c.sets:
            entry = by_where.get(f"{c.job.ip}:{s.cert}")
            if entry is None or not wanted(entry):
                continue
            if not c.read.keymatch.get(s.cert):
                result.failed.append(f"{entry.where}: {s.key} does not match it, not renewed")
                continue
            f = c.read.files[s.cert]
            done, _ = reissue_on_host(c.host, s.cert, f.target, f.content, ca, ca_key, stamp, root)
            result.reissued.append(done)
            report.host(c.job.ip, f"{s.cert} re-issued for {'+'.join(s.users)}", "changed")
            changed_vip = changed_vip or "vip-manager" in s.users
        if changed_vip and c.vip_active:
            why = restart_vip(c.host)
            if why:
                result.failed.append(f"{c.job.ip}: {why}")
            else:
                result.restarted.append(c.job.ip)

    forks = ctx.options.forks
    errors = run_parallel(found.members, member_job, forks=forks, key=lambda m: m.member.ip)
    errors |= run_parallel(found.clients, client_job, forks=forks, key=lambda c: c.job.ip)
    for where, value in errors.items():
        if isinstance(value, EtcdsopError):
            result.failed.append(f"{where}: {value.message}")
    swapped = {p for r in result.reissued for p in r.copies}
    for entry in _local_entries(ctx, found.trust, within):
        if entry.kind in ("ca", "ca-archived") or entry.path in swapped or not wanted(entry):
            continue
        path = Path(entry.path)
        serial = _renew_local(path, ca, ca_key)
        if serial is not None:
            result.reissued.append(Reissued(entry.where, entry.serial, serial, short_fp(ca)))
            report.host(ADMIN, f"{path.name} re-issued", "changed")
        else:
            result.failed.append(
                f"{entry.where}: its key {path.with_suffix('.key')} does not match"
            )
    if serials and not ctx.options.dry_run:
        report.phase("verify")
        result.verified = verify_serving(ctx, serials)
        for line in result.verified:
            report.host(line.split()[0], line.split(" ", 1)[1], "ok")
    return result


def _renew_local(path: Path, ca: x509.Certificate, ca_key: Any) -> str | None:
    """An admin-node certificate re-signed in place, if its key is beside it and matches:
    its new serial."""
    key_path = path.with_suffix(".key")
    cert = load_pems(path.read_bytes())[0]
    try:
        key = load_key(key_path)
    except InputError:
        return None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        return None
    new = resign(cert, ca, ca_key, _now())
    _write_atomic(path, pem(new), path.stat().st_mode & 0o777)
    return format(new.serial_number, "x")
