"""Certificates on the admin node: the CA, one cert per etcd member, etcdsop's own client cert.

Layout under the pki dir (Pigsty's `files/pki`):

    ca/ca.key, ca/ca.crt            the CA; an existing one (Pigsty's) is used, never replaced
    etcd/<ins>.key, etcd/<ins>.crt  one per member: server, peer and client use
    etcdsop/admin.key, admin.crt    etcdsop's client cert, without a CN

Every `ensure_*` is idempotent: a cert is kept while it is signed by the current CA,
matches its key and wanted names and is not about to expire. `plan_*` answers the
same question without writing anything (for --dry-run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdsop.errors import InputError

CA_VALIDITY_DAYS = 36500
DEFAULT_VALIDITY_DAYS = 7300
# Re-issue a leaf this long before it expires, so a re-run renews it in time.
RENEW_BEFORE = timedelta(days=30)
# A leaf whose end is within this of its CA's was capped by the CA (see _sign_leaf).
CA_CAP_SLACK = timedelta(minutes=10)
CA_WARN_BEFORE = timedelta(days=90)  # how early the CA's own expiry is announced
# Leaves start slightly in the past: a host whose clock lags a bit still accepts them.
BACKDATE = timedelta(hours=1)
# Pigsty's CA key is RSA 4096 (openssl_privatekey defaults); ours is the same kind, so
# a CA made here is indistinguishable from Pigsty's for every other Pigsty role.
CA_KEY_BITS = 4096

CA_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COMMON_NAME, "pigsty-ca"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pigsty"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ca"),
    ]
)
# No CN: etcd's JSON gateway refuses client certs with a CN once client-cert-auth is on.
ADMIN_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcdsop"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"),
    ]
)

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class IssuedCert:
    cert_path: Path
    key_path: Path
    cert_pem: bytes
    key_pem: bytes
    issued: bool  # True if (re)issued by this call
    reason: str | None  # why it was (re)issued; None when kept


@dataclass(frozen=True)
class _Ca:
    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class _CaToWrite:
    """The CA (cert, or key and cert) must be written, and why."""

    reason: str
    key: CertificateIssuerPrivateKeyTypes | None  # an existing key to re-use; None: make one
    key_pem: bytes | None


@dataclass(frozen=True)
class _LeafSpec:
    """What a leaf cert must look like; existing certs are compared against it."""

    cert_path: Path
    key_path: Path
    subject: x509.Name
    sans: frozenset[str]  # formatted as cert_sans() does
    san_names: tuple[x509.GeneralName, ...]
    usages: tuple[x509.ObjectIdentifier, ...]
    key_encipherment: bool
    validity_days: int


def cert_sans(pem: bytes) -> set[str]:
    """SANs of a PEM cert as strings: {"IP:127.0.0.1", "DNS:localhost", ...}."""
    return _sans(x509.load_pem_x509_certificate(pem))


class Pki:
    """The pki dir of one inventory. `now` is injectable for expiry tests."""

    def __init__(
        self,
        root: Path,
        *,
        ca_create: bool = True,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.root = root
        self.ca_create = ca_create
        self._now_fn = now or (lambda: datetime.now(timezone.utc))
        self._ca: _Ca | None = None
        # Members may be set up from parallel threads: only one of them may create the CA.
        self._lock = threading.Lock()

    # --- paths and the CA -----------------------------------------------------------

    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_cert_pem(self) -> bytes:
        """The CA certificate, ensuring the CA first (created at most once)."""
        return self.ensure_ca().cert_pem

    def plan_ca(self) -> str | None:
        """Why ensure_ca() would write the CA, or None; raises InputError as it would."""
        with self._lock:
            if self._ca is not None:
                return None
            state = self._inspect_ca()
            if isinstance(state, _Ca):
                self._ca = state  # reading is no side effect: keep it for later calls
                return None
            return state.reason

    def ensure_ca(self) -> IssuedCert:
        with self._lock:
            if self._ca is not None:
                return self._ca_result(issued=False, reason=None)
            state = self._inspect_ca()
            if isinstance(state, _Ca):
                self._ca = state
                self._tighten(self.ca_key_path)
                return self._ca_result(issued=False, reason=None)
            _mkdir(self.ca_key_path.parent, 0o700)
            key, key_pem = state.key, state.key_pem
            if key is None or key_pem is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
                key_pem = _key_pem(key)
                self._write(self.ca_key_path, key_pem, 0o600)
            cert = self._self_sign(key)
            cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            self._write(self.ca_cert_path, cert_pem, 0o644)
            self._ca = _Ca(cert, key, cert_pem, key_pem)
            return self._ca_result(issued=True, reason=state.reason)

    # --- leaves ---------------------------------------------------------------------

    def plan_node(
        self, name: str, ip: str, validity_days: int = DEFAULT_VALIDITY_DAYS
    ) -> str | None:
        return self._plan(self._node_spec(name, ip, validity_days))

    def ensure_node(
        self, name: str, ip: str, validity_days: int = DEFAULT_VALIDITY_DAYS
    ) -> IssuedCert:
        return self._ensure(self._node_spec(name, ip, validity_days))

    def plan_admin(self) -> str | None:
        return self._plan(self._admin_spec())

    def ensure_admin(self) -> IssuedCert:
        return self._ensure(self._admin_spec())

    def ca_warning(self) -> str | None:
        """The CA expires within 90 days: every certificate ends with it, and etcd reads
        its CA only at start, so rotating it takes planning (a bundle, rolling restarts)."""
        ca = self._loaded_ca().cert
        left = ca.not_valid_after_utc - self._now()
        if left > CA_WARN_BEFORE:
            return None
        return (
            f"the CA {self.ca_cert_path} expires {ca.not_valid_after_utc.date().isoformat()} "
            f"(in {max(left.days, 0)} days): no certificate it signs can outlive it; plan its "
            "rotation (old+new CA bundle, rolling restarts, re-issued certificates)"
        )

    def plan_client(self, name: str) -> str | None:
        return self._plan(self._client_spec(name))

    def ensure_client(self, name: str) -> IssuedCert:
        """A CN-less client cert `etcdsop/<name>.crt` for an etcd client host (Patroni,
        vip-manager): etcd demands a cert from the CA; identity comes from the password."""
        return self._ensure(self._client_spec(name))

    def _client_spec(self, name: str) -> _LeafSpec:
        if not _NAME_RE.fullmatch(name) or name == "admin":
            raise InputError(
                f"invalid client certificate name {name!r}: letters, digits, '.', '_' and '-' "
                "only, at most 64 characters, not 'admin'"
            )
        return dataclasses.replace(
            self._admin_spec(),
            cert_path=self.root / "etcdsop" / f"{name}.crt",
            key_path=self.root / "etcdsop" / f"{name}.key",
            subject=x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcdsop"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
                ]
            ),
        )

    def _node_spec(self, name: str, ip: str, validity_days: int) -> _LeafSpec:
        if not _NAME_RE.fullmatch(name):
            raise InputError(
                f"invalid etcd instance name {name!r}: letters, digits, '.', '_' and '-' "
                "only, at most 64 characters"
            )
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise InputError(f"invalid IP address {ip!r} for the certificate of {name}") from None
        if validity_days < 1:
            raise InputError(f"certificate validity must be at least 1 day, got {validity_days}")
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            x509.IPAddress(addr),
            x509.DNSName(name),
        ]
        names = list({_gn_str(n): n for n in names}.values())  # 127.0.0.1 may be the host IP
        # Same subject as Pigsty's etcd role, so the certs it issued are kept as they are.
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pigsty"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "etcd"),
            ]
        )
        return _LeafSpec(
            cert_path=self.root / "etcd" / f"{name}.crt",
            key_path=self.root / "etcd" / f"{name}.key",
            subject=subject,
            sans=frozenset(_gn_str(n) for n in names),
            san_names=tuple(names),
            # One cert for server, peer and client use.
            usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            key_encipherment=True,
            validity_days=validity_days,
        )

    def _admin_spec(self) -> _LeafSpec:
        return _LeafSpec(
            cert_path=self.root / "etcdsop" / "admin.crt",
            key_path=self.root / "etcdsop" / "admin.key",
            subject=ADMIN_SUBJECT,
            sans=frozenset(),
            san_names=(),
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            key_encipherment=False,
            validity_days=DEFAULT_VALIDITY_DAYS,
        )

    def _plan(self, spec: _LeafSpec) -> str | None:
        with self._lock:
            if self._ca is not None:
                ca_cert: x509.Certificate | None = self._ca.cert
            else:
                state = self._inspect_ca()
                if isinstance(state, _Ca):
                    self._ca = state
                    ca_cert = state.cert
                elif state.key is not None:
                    # The CA cert would be re-made from the existing key: judge against that.
                    ca_cert = self._self_sign(state.key)
                else:
                    ca_cert = None  # a brand-new CA: nothing existing can be signed by it
        if ca_cert is None:
            exists = spec.cert_path.exists() and spec.key_path.exists()
            return "not signed by the current CA" if exists else "missing"
        reason, _ = self._check_leaf(spec, ca_cert)
        return reason

    def _ensure(self, spec: _LeafSpec) -> IssuedCert:
        ca = self._loaded_ca()
        reason, pems = self._check_leaf(spec, ca.cert)
        if reason is None:
            assert pems is not None
            self._tighten(spec.key_path)
            return IssuedCert(spec.cert_path, spec.key_path, pems[0], pems[1], False, None)
        # Fresh P-256 key on every (re)issue: fast, and nothing old is carried over.
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign_leaf(spec, key.public_key(), ca)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = _key_pem(key)
        _mkdir(spec.key_path.parent, 0o755)
        # Key first: a crash in between leaves a mismatched pair, re-issued on the next run.
        self._write(spec.key_path, key_pem, 0o600)
        self._write(spec.cert_path, cert_pem, 0o644)
        return IssuedCert(spec.cert_path, spec.key_path, cert_pem, key_pem, True, reason)

    def _check_leaf(
        self, spec: _LeafSpec, ca_cert: x509.Certificate
    ) -> tuple[str | None, tuple[bytes, bytes] | None]:
        """(reason to re-issue, None) or (None, (cert_pem, key_pem)) when the pair is fine."""
        if not spec.cert_path.exists():
            return "missing", None
        if not spec.key_path.exists():
            return "key file missing", None
        try:
            cert_pem = spec.cert_path.read_bytes()
            key_pem = spec.key_path.read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (OSError, ValueError, TypeError) as exc:
            return f"unreadable ({exc})", None
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return "not signed by the current CA", None
        if _spki(key.public_key()) != _spki(cert.public_key()):
            return "key does not match", None
        if _name_key(cert.subject) != _name_key(spec.subject):
            return (
                f"subject changed: {cert.subject.rfc4514_string()} -> "
                f"{spec.subject.rfc4514_string()}"
            ), None
        have = _sans(cert)
        if have != spec.sans:
            changes = [f"+{s}" for s in sorted(spec.sans - have)]
            changes += [f"-{s}" for s in sorted(have - spec.sans)]
            return f"SANs changed: {' '.join(changes)}", None
        missing_usage = _missing_usages(cert, spec.usages)
        if missing_usage:
            return f"extended key usage lacks {', '.join(missing_usage)}", None
        not_after = cert.not_valid_after_utc
        now = self._now()
        if not_after <= now:
            return f"expired {not_after.date().isoformat()}", None
        if renewal_due(cert, ca_cert, now):
            return f"expires {not_after.date().isoformat()}", None
        return None, (cert_pem, key_pem)

    def _sign_leaf(
        self, spec: _LeafSpec, public_key: ec.EllipticCurvePublicKey, ca: _Ca
    ) -> x509.Certificate:
        now = self._now()
        # A leaf never outlives its CA.
        not_after = min(now + timedelta(days=spec.validity_days), ca.cert.not_valid_after_utc)
        try:
            ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:  # Pigsty's CA has no SKI extension
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(spec.subject)
            .issuer_name(ca.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(key_encipherment=spec.key_encipherment, ca=False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(list(spec.usages)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
        )
        if spec.san_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(spec.san_names)), critical=False
            )
        cert = builder.sign(ca.key, _sign_hash(ca.key))
        try:
            cert.verify_directly_issued_by(ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise InputError(
                f"the CA key {self.ca_key_path} produced an invalid signature: it is damaged"
            ) from None
        return cert

    # --- CA internals ---------------------------------------------------------------

    def _loaded_ca(self) -> _Ca:
        if self._ca is None:
            self.ensure_ca()
        assert self._ca is not None
        return self._ca

    def _ca_result(self, *, issued: bool, reason: str | None) -> IssuedCert:
        assert self._ca is not None
        return IssuedCert(
            self.ca_cert_path,
            self.ca_key_path,
            self._ca.cert_pem,
            self._ca.key_pem,
            issued,
            reason,
        )

    def _inspect_ca(self) -> _Ca | _CaToWrite:
        """The usable CA found in ca/, or what must be written; reads only.

        Raises InputError for every state it must not repair: a CA is never replaced.
        """
        key_path, cert_path = self.ca_key_path, self.ca_cert_path
        if not key_path.exists():
            if cert_path.exists():
                raise InputError(
                    f"{cert_path} exists but the CA key {key_path} is missing: restore the key "
                    "(etcdsop never replaces an existing CA)"
                )
            if not self.ca_create:
                raise InputError(
                    f"the CA key {key_path} is missing and ca_create is false: put the CA key "
                    "and certificate there, or set ca_create: true"
                )
            return _CaToWrite("missing", None, None)
        try:
            key_pem = key_path.read_bytes()
            # The RSA consistency check costs ~0.2 s for a 4096-bit key on every run; it is
            # skipped and every cert signed is verified against the CA cert instead.
            key = serialization.load_pem_private_key(
                key_pem, password=None, unsafe_skip_rsa_key_validation=True
            )
        except (OSError, ValueError, TypeError) as exc:
            # TypeError: the key is encrypted; we have no way to ask for its passphrase.
            raise InputError(f"cannot use the CA key {key_path}: {exc}") from None
        if not isinstance(
            key,
            (
                rsa.RSAPrivateKey,
                ec.EllipticCurvePrivateKey,
                ed25519.Ed25519PrivateKey,
                ed448.Ed448PrivateKey,
            ),
        ):
            raise InputError(f"the CA key {key_path} is of an unsupported type for signing")
        if not cert_path.exists():
            # Pigsty does the same: it self-signs a new ca.crt from the existing key.
            return _CaToWrite("certificate missing, re-made from the existing ca.key", key, key_pem)
        try:
            cert_pem = cert_path.read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the CA certificate {cert_path}: {exc}") from None
        if _spki(cert.public_key()) != _spki(key.public_key()):
            raise InputError(
                f"the CA certificate {cert_path} does not match the CA key {key_path}: "
                "put the matching pair there (etcdsop never replaces an existing CA)"
            )
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise InputError(f"{cert_path} is not a CA certificate (no basicConstraints CA:TRUE)")
        if cert.not_valid_after_utc <= self._now():
            raise InputError(
                f"the CA certificate {cert_path} expired on "
                f"{cert.not_valid_after_utc.date().isoformat()}: renew it with the same key"
            )
        return _Ca(cert, key, cert_pem, key_pem)

    def _self_sign(self, key: CertificateIssuerPrivateKeyTypes) -> x509.Certificate:
        now = self._now()
        public_key = key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(CA_SUBJECT)
            .issuer_name(CA_SUBJECT)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(key_encipherment=False, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(key, _sign_hash(key))
        )

    # --- files ----------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._now_fn()
        return now if now.tzinfo else now.replace(tzinfo=timezone.utc)

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        try:
            _write_atomic(path, data, mode)
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None

    @staticmethod
    def _tighten(key_path: Path) -> None:
        """A key we keep must not stay readable by others (e.g. copied in by hand)."""
        try:
            if key_path.stat().st_mode & 0o077:
                key_path.chmod(0o600)
        except OSError as exc:
            raise InputError(f"cannot restrict {key_path} to mode 0600: {exc.strerror}") from None


def renewal_due(cert: x509.Certificate, ca_cert: x509.Certificate, now: datetime) -> bool:
    """A leaf is re-issued ahead of its expiry: within 30 days, or a third of its lifetime
    when that is shorter (a cert_validity of 30 days or less would else be due again at
    once, every run). One that ends with its CA is never due: a new one could not outlive
    the CA either (ca_warning says so)."""
    not_after = cert.not_valid_after_utc
    if not_after >= ca_cert.not_valid_after_utc - CA_CAP_SLACK:
        return False
    lifetime = not_after - cert.not_valid_before_utc
    return not_after - now <= min(RENEW_BEFORE, lifetime / 3)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp opens with O_EXCL and mode 0600, so a key never exists with a wider mode;
    # the final mode is set before the data lands and before the rename.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mkdir(path: Path, mode: int) -> None:
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise InputError(f"cannot create {path}: {exc.strerror or exc}") from None


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sign_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign without a separate digest.
    return (
        None
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
        else hashes.SHA256()
    )


def _key_usage(*, key_encipherment: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name_key(name: x509.Name) -> list[tuple[str, str]]:
    # Order-insensitive: tools differ in the order they write O/OU/CN.
    return sorted((a.oid.dotted_string, str(a.value)) for a in name)


def _gn_str(gn: x509.GeneralName) -> str:
    if isinstance(gn, x509.IPAddress):
        return f"IP:{gn.value}"
    if isinstance(gn, x509.DNSName):
        return f"DNS:{gn.value}"
    return f"{type(gn).__name__}:{gn.value}"


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {_gn_str(gn) for gn in ext}


def _missing_usages(cert: x509.Certificate, wanted: Iterable[x509.ObjectIdentifier]) -> list[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []  # no EKU means any usage (Pigsty's own certs carry none)
    have = set(eku)
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in wanted if oid not in have]
