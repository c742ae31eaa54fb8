"""Certificates as `etcdsop certs` sees them: judged against the trusted CAs, and re-signed.

Pure: no host, no file. A certificate is judged by who signed it (a CA of the local
trust set, by fingerprint), when it ends, and whether it is due for renewal within a
window. Renewal re-signs the SAME public key with the same subject, names and usages:
no key ever crosses the wire, and a single atomic rename of the certificate swaps it
(writing a new key and a new certificate would be two renames, with a moment where
they do not match and etcd would refuse every handshake).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from etcdsop.pki import BACKDATE, CA_CAP_SLACK, _sans, _sign_hash

State = Literal["ok", "due", "expired", "other-ca", "unreadable", "unreachable"]
Kind = Literal["ca", "ca-archived", "trust", "node", "admin", "client"]
_SHA256 = hashes.SHA256()


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(_SHA256).hex()


def short_fp(cert: x509.Certificate) -> str:
    return fingerprint(cert)[:8]


def load_pems(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA bundle holds several); [] if none parses."""
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def bundle(*certs: x509.Certificate) -> bytes:
    """One PEM file of these CAs, each once, in this order (the first is the signer)."""
    seen: dict[str, x509.Certificate] = {}
    for cert in certs:
        seen.setdefault(fingerprint(cert), cert)
    return b"".join(pem(c) for c in seen.values())


def signer(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The CA of `cas` that signed cert, or None."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


@dataclass
class CertEntry:
    """One certificate (or one CA of a trust file) where it lives, and its verdict."""

    kind: Kind
    host: str  # "admin" for the admin node's files
    path: str
    state: State
    detail: str = ""
    subject: str = ""
    sans: list[str] = field(default_factory=list)
    serial: str = ""
    fingerprint: str = ""
    issuer: str = ""  # the short fingerprint of the CA that signed it ("" unknown)
    not_after: datetime | None = None
    days_left: int | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "where": self.where,
            "host": self.host,
            "path": self.path,
            "state": self.state,
            "detail": self.detail,
            "subject": self.subject,
            "sans": self.sans,
            "serial": self.serial,
            "fingerprint": self.fingerprint,
            "issuer": self.issuer,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "days_left": self.days_left,
        }


def describe(kind: Kind, host: str, path: str, cert: x509.Certificate, now: datetime) -> CertEntry:
    end = cert.not_valid_after_utc
    return CertEntry(
        kind=kind,
        host=host,
        path=path,
        state="ok",
        subject=cert.subject.rfc4514_string() or "(no subject)",
        sans=sorted(_sans(cert)),
        serial=format(cert.serial_number, "x"),
        fingerprint=short_fp(cert),
        not_after=end,
        days_left=(end - now).days,
    )


def judge_leaf(
    entry: CertEntry,
    cert: x509.Certificate,
    cas: Sequence[x509.Certificate],
    within: timedelta,
    now: datetime,
) -> CertEntry:
    """A node/admin/client cert: expired, signed by none of `cas`, due, or ok."""
    ca = signer(cert, cas)
    entry.issuer = short_fp(ca) if ca is not None else ""
    end = cert.not_valid_after_utc
    if end <= now:
        entry.state, entry.detail = "expired", f"expired {end.date().isoformat()}"
    elif ca is None:
        entry.state, entry.detail = "other-ca", "signed by a CA this admin node does not trust"
    elif due(cert, ca, within, now):
        entry.state, entry.detail = "due", f"ends within {within.days} days"
    return entry


def judge_ca(
    entry: CertEntry, cert: x509.Certificate, within: timedelta, now: datetime
) -> CertEntry:
    entry.issuer = short_fp(cert)  # self-signed
    end = cert.not_valid_after_utc
    if end <= now:
        entry.state, entry.detail = "expired", f"expired {end.date().isoformat()}"
    elif end - now <= within:
        entry.state, entry.detail = "due", f"ends within {within.days} days: rotate-ca"
    return entry


def judge_trust(
    entry: CertEntry, cert: x509.Certificate, signing: x509.Certificate, now: datetime
) -> CertEntry:
    """A CA in a host's trust file: the admin node's signing CA, another one, or expired."""
    entry.issuer = short_fp(cert)
    if cert.not_valid_after_utc <= now:
        entry.state, entry.detail = "expired", "an expired CA"
    elif fingerprint(cert) != fingerprint(signing):
        entry.state, entry.detail = "other-ca", "not the admin node's current CA"
    return entry


def due(cert: x509.Certificate, ca: x509.Certificate, within: timedelta, now: datetime) -> bool:
    """Ends within the window; one that ends with its CA is not due (a new one could not
    outlive the CA either: that takes rotate-ca)."""
    end = cert.not_valid_after_utc
    if end >= ca.not_valid_after_utc - CA_CAP_SLACK:
        return False
    return end - now <= within


def resign(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    now: datetime,
) -> x509.Certificate:
    """The same certificate (key, subject, names, usages, lifetime) signed anew by ca."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    not_after = min(now - BACKDATE + lifetime, ca_cert.not_valid_after_utc)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(aki, critical=False)
    )
    for ext in cert.extensions:
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            continue
        builder = builder.add_extension(ext.value, critical=ext.critical)
    new = builder.sign(ca_key, _sign_hash(ca_key))
    new.verify_directly_issued_by(ca_cert)
    return new
