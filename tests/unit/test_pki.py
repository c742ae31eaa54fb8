"""Certificates on the admin node: fields, idempotence, re-issue reasons, CA safety, file modes."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdsop import pki as pki_mod
from etcdsop.errors import InputError
from etcdsop.pki import IssuedCert, Pki, cert_sans

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class MadeCa:
    root: Path
    result: IssuedCert


@pytest.fixture(scope="session")
def made_ca(tmp_path_factory: pytest.TempPathFactory) -> MadeCa:
    """One CA made by etcdsop itself (RSA 4096 keygen is slow: make it once)."""
    root = tmp_path_factory.mktemp("session") / "pki"
    return MadeCa(root, Pki(root, now=Clock()).ensure_ca())


@pytest.fixture
def root(tmp_path: Path, made_ca: MadeCa) -> Path:
    """A pki dir holding a copy of the session CA (modes preserved)."""
    dst = tmp_path / "pki"
    shutil.copytree(made_ca.root, dst)
    return dst


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def umask0() -> Iterator[None]:
    # Modes must come from the code, not from a friendly umask.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def spki(key: CertificateIssuerPrivateKeyTypes | x509.Certificate) -> bytes:
    pub = key.public_key()
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_pigsty_like_ca(root: Path, key: CertificateIssuerPrivateKeyTypes) -> x509.Certificate:
    """A CA as Pigsty's `ca` role makes it: no SKI, key usage not critical."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "pigsty-ca"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pigsty"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ca"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (root / "ca").mkdir(parents=True)
    (root / "ca" / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (root / "ca" / "ca.key").chmod(0o600)
    (root / "ca" / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


# --- CA ---------------------------------------------------------------------------------


def test_new_ca_fields(made_ca: MadeCa) -> None:
    res = made_ca.result
    assert res.issued and res.reason == "missing"
    assert (
        res.cert_pem
        == res.cert_path.read_bytes()
        == made_ca.root.joinpath("ca/ca.crt").read_bytes()
    )
    cert = x509.load_pem_x509_certificate(res.cert_pem)
    key = serialization.load_pem_private_key(res.key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    assert spki(key) == spki(cert)

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pigsty-ca"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    assert not ku.value.key_encipherment
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    assert cert.not_valid_after_utc - T0 == timedelta(days=36500)
    assert cert.not_valid_before_utc <= T0

    assert mode(res.key_path) == 0o600
    assert mode(res.cert_path) == 0o644
    assert mode(res.key_path.parent) == 0o700


def test_existing_ca_kept(root: Path, made_ca: MadeCa) -> None:
    res = Pki(root, now=Clock()).ensure_ca()
    assert not res.issued and res.reason is None
    assert res.cert_pem == made_ca.result.cert_pem
    assert res.key_pem == made_ca.result.key_pem
    assert (root / "ca/ca.crt").read_bytes() == made_ca.result.cert_pem
    assert Pki(root).ca_cert_pem == made_ca.result.cert_pem


def test_pigsty_rsa_ca_is_used_not_replaced(tmp_path: Path, clock: Clock) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = write_pigsty_like_ca(tmp_path, key)
    before = {p: p.read_bytes() for p in (tmp_path / "ca").iterdir()}

    p = Pki(tmp_path, ca_create=True, now=clock)
    assert p.plan_ca() is None
    res = p.ensure_ca()
    assert not res.issued and res.reason is None
    node = p.ensure_node("etcd-1", "10.10.10.10")

    assert {q: q.read_bytes() for q in (tmp_path / "ca").iterdir()} == before
    leaf = load(node.cert_path)
    leaf.verify_directly_issued_by(ca)
    # No SKI on Pigsty's CA: the AKI is derived from its public key instead.
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki == x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def test_pigsty_issued_node_cert_is_kept(tmp_path: Path, clock: Clock) -> None:
    # Pigsty's etcd role: RSA key, CN/O/OU, the four SANs, no EKU, no key usage.
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = write_pigsty_like_ca(tmp_path, ca_key)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pigsty"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "etcd"),
            x509.NameAttribute(NameOID.COMMON_NAME, "etcd-1"),
        ]
    )
    sans = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("10.10.10.10")),
        x509.DNSName("etcd-1"),
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=7300))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "etcd").mkdir()
    crt = leaf.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "etcd/etcd-1.crt").write_bytes(crt)
    (tmp_path / "etcd/etcd-1.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "etcd/etcd-1.key").chmod(0o600)

    res = Pki(tmp_path, now=clock).ensure_node("etcd-1", "10.10.10.10")
    assert (res.issued, res.reason) == (False, None)
    assert res.cert_pem == crt == (tmp_path / "etcd/etcd-1.crt").read_bytes()


def test_ca_create_false_without_key_fails(tmp_path: Path) -> None:
    p = Pki(tmp_path / "pki", ca_create=False)
    with pytest.raises(InputError, match=r"CA key .* is missing and ca_create is false"):
        p.ensure_ca()
    with pytest.raises(InputError, match="ca_create is false"):
        p.plan_ca()
    with pytest.raises(InputError, match="ca_create is false"):
        p.ensure_node("etcd-1", "10.0.0.1")
    assert not (tmp_path / "pki").exists()


def test_ca_cert_without_key_fails_and_keeps_cert(root: Path) -> None:
    (root / "ca/ca.key").unlink()
    crt = (root / "ca/ca.crt").read_bytes()
    with pytest.raises(InputError, match=r"ca\.crt exists but the CA key .* is missing"):
        Pki(root, ca_create=True).ensure_ca()
    assert (root / "ca/ca.crt").read_bytes() == crt
    assert not (root / "ca/ca.key").exists()


def test_ca_cert_and_key_mismatch_fails(root: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (root / "ca/ca.key").write_bytes(pem)
    with pytest.raises(InputError, match="does not match the CA key"):
        Pki(root).ensure_ca()
    assert (root / "ca/ca.key").read_bytes() == pem


def test_non_ca_cert_refused(root: Path, clock: Clock) -> None:
    p = Pki(root, now=clock)
    node = p.ensure_node("etcd-1", "10.0.0.1")
    # A valid cert + matching key, but a leaf: it must not be taken for a CA.
    other = root.parent / "other"
    (other / "ca").mkdir(parents=True)
    shutil.copy(node.cert_path, other / "ca/ca.crt")
    shutil.copy(node.key_path, other / "ca/ca.key")
    with pytest.raises(InputError, match="not a CA certificate"):
        Pki(other).ensure_ca()


def test_ca_cert_remade_from_existing_key(root: Path, made_ca: MadeCa, clock: Clock) -> None:
    (root / "ca/ca.crt").unlink()
    p = Pki(root, ca_create=False, now=clock)  # the key exists: nothing is created
    assert p.plan_ca() == "certificate missing, re-made from the existing ca.key"
    assert not (root / "ca/ca.crt").exists()  # planning writes nothing
    res = p.ensure_ca()
    assert res.issued and res.reason is not None and res.reason.startswith("certificate missing")
    assert (root / "ca/ca.key").read_bytes() == made_ca.result.key_pem
    cert = load(root / "ca/ca.crt")
    key = serialization.load_pem_private_key(made_ca.result.key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert spki(cert) == spki(key)
    assert mode(root / "ca/ca.crt") == 0o644


def test_expired_ca_refused(root: Path) -> None:
    late = Clock(T0 + timedelta(days=36501))
    with pytest.raises(InputError, match="expired"):
        Pki(root, now=late).ensure_ca()


# --- node certs -------------------------------------------------------------------------


def test_node_cert_fields(root: Path, made_ca: MadeCa, clock: Clock) -> None:
    res = Pki(root, now=clock).ensure_node("etcd-1", "10.10.10.10", validity_days=365)
    assert res.issued and res.reason == "missing"
    assert res.cert_path == root / "etcd/etcd-1.crt"
    assert res.key_path == root / "etcd/etcd-1.key"
    assert res.cert_pem == res.cert_path.read_bytes()
    assert res.key_pem == res.key_path.read_bytes()
    cert = x509.load_pem_x509_certificate(res.cert_pem)
    ca = x509.load_pem_x509_certificate(made_ca.result.cert_pem)

    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["etcd-1"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.10.10.10"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "etcd-1"}
    assert len(list(san)) == 4
    assert cert_sans(res.cert_pem) == {
        "IP:127.0.0.1",
        "DNS:localhost",
        "IP:10.10.10.10",
        "DNS:etcd-1",
    }

    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {SERVER, CLIENT}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    cert.verify_directly_issued_by(ca)
    ca_pub = ca.public_key()
    assert isinstance(ca_pub, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_pub.verify(  # the same check by hand, with the CA's public key
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    assert cert.not_valid_after_utc == T0 + timedelta(days=365)
    # Backdated: a host whose clock lags a few minutes still accepts a fresh cert.
    assert cert.not_valid_before_utc <= T0 - timedelta(minutes=5)

    key = serialization.load_pem_private_key(res.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(key) == spki(cert)
    assert mode(res.key_path) == 0o600
    assert mode(res.cert_path) == 0o644


def test_node_default_validity_is_7300_days(root: Path, clock: Clock) -> None:
    res = Pki(root, now=clock).ensure_node("etcd-2", "10.0.0.2")
    assert load(res.cert_path).not_valid_after_utc == T0 + timedelta(days=7300)


def test_ipv6_and_loopback_host(root: Path, clock: Clock) -> None:
    p = Pki(root, now=clock)
    assert "IP:fd00::1" in cert_sans(p.ensure_node("etcd-1", "fd00::1").cert_pem)
    # The host IP may be 127.0.0.1 itself: the SAN is not written twice.
    local = p.ensure_node("etcd-2", "127.0.0.1")
    san = load(local.cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert len(list(san.value)) == 3
    assert p.ensure_node("etcd-2", "127.0.0.1").issued is False


def test_not_reissued_on_second_call(root: Path, clock: Clock) -> None:
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    admin = Pki(root, now=clock).ensure_admin()
    mtime = first.cert_path.stat().st_mtime_ns

    again = Pki(root, now=clock)  # a new run: everything is read back from disk
    assert again.plan_node("etcd-1", "10.0.0.1") is None
    assert again.plan_admin() is None
    second = again.ensure_node("etcd-1", "10.0.0.1")
    assert (second.issued, second.reason) == (False, None)
    assert (second.cert_pem, second.key_pem) == (first.cert_pem, first.key_pem)
    assert first.cert_path.stat().st_mtime_ns == mtime
    admin2 = again.ensure_admin()
    assert (admin2.issued, admin2.cert_pem, admin2.key_pem) == (
        False,
        admin.cert_pem,
        admin.key_pem,
    )


def test_reissued_when_ip_changes(root: Path, clock: Clock) -> None:
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    p = Pki(root, now=clock)
    reason = "SANs changed: +IP:10.0.0.2 -IP:10.0.0.1"
    assert p.plan_node("etcd-1", "10.0.0.2") == reason
    assert first.cert_path.read_bytes() == first.cert_pem  # planning wrote nothing
    res = p.ensure_node("etcd-1", "10.0.0.2")
    assert (res.issued, res.reason) == (True, reason)
    assert "IP:10.0.0.2" in cert_sans(res.cert_path.read_bytes())
    assert "IP:10.0.0.1" not in cert_sans(res.cert_pem)
    assert res.key_pem != first.key_pem  # a fresh key with every issue


@pytest.mark.parametrize(
    ("days_later", "reason"),
    [
        (334, None),  # 31 days left: kept
        (336, "expires 2026-01-01"),  # 29 days left
        (400, "expired 2026-01-01"),
    ],
)
def test_reissued_before_expiry(root: Path, days_later: int, reason: str | None) -> None:
    clock = Clock()
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1", validity_days=365)
    clock.now = T0 + timedelta(days=days_later)
    p = Pki(root, now=clock)
    assert p.plan_node("etcd-1", "10.0.0.1", validity_days=365) == reason
    res = p.ensure_node("etcd-1", "10.0.0.1", validity_days=365)
    assert res.reason == reason
    assert res.issued is (reason is not None)
    if reason is not None:
        assert load(res.cert_path).not_valid_after_utc == clock.now + timedelta(days=365)
    else:
        assert res.cert_pem == first.cert_pem


def test_reissued_when_ca_replaced(root: Path, clock: Clock) -> None:
    old = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    old_admin = Pki(root, now=clock).ensure_admin()
    shutil.rmtree(root / "ca")
    new_ca = write_pigsty_like_ca(root, ec.generate_private_key(ec.SECP256R1()))

    p = Pki(root, now=clock)
    assert p.plan_node("etcd-1", "10.0.0.1") == "not signed by the current CA"
    res = p.ensure_node("etcd-1", "10.0.0.1")
    assert (res.issued, res.reason) == (True, "not signed by the current CA")
    assert res.cert_pem != old.cert_pem
    load(res.cert_path).verify_directly_issued_by(new_ca)
    admin = p.ensure_admin()
    assert (admin.issued, admin.reason) == (True, "not signed by the current CA")
    assert admin.cert_pem != old_admin.cert_pem


def test_reissued_when_key_does_not_match(root: Path, clock: Clock) -> None:
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    other = Pki(root, now=clock).ensure_node("etcd-2", "10.0.0.2")
    first.key_path.write_bytes(other.key_pem)
    res = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    assert (res.issued, res.reason) == (True, "key does not match")
    cert = load(res.cert_path)
    key = serialization.load_pem_private_key(res.key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert spki(key) == spki(cert)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("rm-key", "key file missing"),
        ("rm-cert", "missing"),
        ("garbage-cert", "unreadable"),
    ],
)
def test_reissued_when_damaged(root: Path, clock: Clock, damage: str, reason: str) -> None:
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    if damage == "rm-key":
        first.key_path.unlink()
    elif damage == "rm-cert":
        first.cert_path.unlink()
    else:
        first.cert_path.write_bytes(b"not a certificate")
    res = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    assert res.issued and res.reason is not None and res.reason.startswith(reason)
    assert cert_sans(res.cert_path.read_bytes()) == cert_sans(first.cert_pem)


@pytest.mark.parametrize(
    ("name", "ip"),
    [
        ("../etcd-1", "10.0.0.1"),
        ("etcd/1", "10.0.0.1"),
        ("", "10.0.0.1"),
        ("x" * 65, "10.0.0.1"),
        ("etcd-1", "10.0.0.300"),
        ("etcd-1", "node1"),
    ],
)
def test_bad_name_or_ip_refused(tmp_path: Path, name: str, ip: str) -> None:
    p = Pki(tmp_path / "pki")
    with pytest.raises(InputError):
        p.plan_node(name, ip)
    with pytest.raises(InputError):
        p.ensure_node(name, ip)
    assert not (tmp_path / "pki").exists()  # refused before anything was written


# --- admin cert -------------------------------------------------------------------------


def test_admin_cert_fields(root: Path, made_ca: MadeCa, clock: Clock) -> None:
    res = Pki(root, now=clock).ensure_admin()
    assert res.issued and res.reason == "missing"
    assert res.cert_path == root / "etcdsop/admin.crt"
    assert res.key_path == root / "etcdsop/admin.key"
    cert = load(res.cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "etcdsop"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [CLIENT]
    assert cert_sans(res.cert_pem) == set()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(made_ca.result.cert_pem))
    assert cert.not_valid_after_utc == T0 + timedelta(days=7300)
    assert mode(res.key_path) == 0o600


# --- planning and files -----------------------------------------------------------------


def test_plan_on_empty_dir_writes_nothing(tmp_path: Path) -> None:
    p = Pki(tmp_path / "pki")
    assert p.plan_ca() == "missing"
    assert p.plan_node("etcd-1", "10.0.0.1") == "missing"
    assert p.plan_admin() == "missing"
    assert not (tmp_path / "pki").exists()


def test_files_never_world_readable(
    root: Path, clock: Clock, umask0: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(root / "ca")
    monkeypatch.setattr(pki_mod, "CA_KEY_BITS", 2048)  # speed; the 4096 default is tested above
    renamed: dict[str, int] = {}
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        # The mode a file has at the moment it appears under its final name.
        renamed[os.path.basename(dst)] = mode(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)  # the very module pki.py calls
    p = Pki(root, now=clock)
    p.ensure_ca()
    p.ensure_node("etcd-1", "10.0.0.1")
    p.ensure_admin()

    assert renamed == {
        "ca.key": 0o600,
        "ca.crt": 0o644,
        "etcd-1.key": 0o600,
        "etcd-1.crt": 0o644,
        "admin.key": 0o600,
        "admin.crt": 0o644,
    }
    assert mode(root / "ca") == 0o700
    assert mode(root / "etcd") == 0o755
    for path in root.rglob("*"):
        if path.is_file():
            assert not mode(path) & 0o002, path
            if path.suffix == ".key":
                assert mode(path) == 0o600, path
    assert sorted(q.name for q in root.rglob(".*")) == []  # no temp file left behind


def test_kept_key_with_wide_mode_is_tightened(root: Path, clock: Clock) -> None:
    res = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1")
    res.key_path.chmod(0o644)
    (root / "ca/ca.key").chmod(0o644)
    p = Pki(root, now=clock)
    assert p.ensure_node("etcd-1", "10.0.0.1").issued is False
    assert mode(res.key_path) == 0o600
    assert mode(root / "ca/ca.key") == 0o600


def test_parallel_first_use_makes_one_ca(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pki_mod, "CA_KEY_BITS", 2048)
    p = Pki(tmp_path / "pki", now=clock)
    results: dict[str, IssuedCert] = {}

    def work(i: int) -> None:
        results[f"etcd-{i}"] = p.ensure_node(f"etcd-{i}", f"10.0.0.{i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ca = load(tmp_path / "pki/ca/ca.crt")
    assert len(results) == 5
    for res in results.values():
        load(res.cert_path).verify_directly_issued_by(ca)


# --- no churn: short validity, a CA near its end (issue 13, item 6) ----------------------


def test_short_validity_is_not_reissued_on_the_next_run(root: Path) -> None:
    clock = Clock()
    first = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1", validity_days=20)
    assert first.issued
    for days in (0, 1, 13):  # a third of 20 days left is the margin: 6.67 days
        clock.now = T0 + timedelta(days=days)
        again = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1", validity_days=20)
        assert not again.issued and again.cert_pem == first.cert_pem, days
    clock.now = T0 + timedelta(days=14)
    due = Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1", validity_days=20)
    assert due.issued and due.reason == "expires 2025-01-21"
    assert not Pki(root, now=clock).ensure_node("etcd-1", "10.0.0.1", validity_days=20).issued


def test_a_leaf_capped_by_its_ca_is_not_reissued_and_the_ca_is_announced(root: Path) -> None:
    ca_end = load(root / "ca/ca.crt").not_valid_after_utc
    clock = Clock(ca_end - timedelta(days=10))
    p = Pki(root, now=clock)
    assert "expires" in (p.ca_warning() or "") and "(in 10 days)" in (p.ca_warning() or "")
    first = p.ensure_client("pg-test")
    assert load(first.cert_path).not_valid_after_utc == ca_end.replace(microsecond=0)
    clock.now += timedelta(days=1)
    again = Pki(root, now=clock).ensure_client("pg-test")
    assert not again.issued and again.cert_pem == first.cert_pem
    assert Pki(root, now=Clock()).ca_warning() is None
