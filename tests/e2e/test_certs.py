"""`etcdsop certs`, `certs renew` and `certs rotate-ca` against real etcd and a real
Patroni cluster (with vip-manager), all on ONE cluster: listing reads only, renewal
keeps every process, and the rotation runs last (interrupted once, then resumed)."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from tests.e2e import pgbed
from tests.e2e.conftest import PASSWORD, Bed, run_cli
from tests.e2e.test_reload import LeaderWatch, root
from tests.faults.harness import Writer, follow

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient, TlsFiles
from etcdsop.pki import Pki

pytestmark = [pytest.mark.e2e, pytest.mark.etcd_matrix]

ELECTION_S = 1.0  # the inventory's etcd_election_timeout (Pigsty's default, 1000 ms)


@pytest.fixture(scope="module")
def cluster(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bed, Path]]:
    """etcd on h1-h3; pg-test (Patroni leader on h4, replica on h5, vip-manager) as
    Pigsty lays it out, its etcd client TLS in /pg/cert."""
    ips = bed.ips
    bed.wipe()
    pgbed.wipe(bed, ips)
    etcd = {ips[0]: 1, ips[1]: 2, ips[2]: 3}
    inv = pgbed.inventory(bed, tmp_path_factory.mktemp("certs"), etcd, ips[3:5])
    run_cli("create", "-i", str(inv))
    run_cli("rbac", "sync", "-i", str(inv))
    pgbed.provision(bed, inv, ips[3:5], ips[:3])
    yield bed, inv
    pgbed.wipe(bed, ips)


def pki_of(inv: Path) -> Path:
    return inv.parent / "files" / "pki"


def served_serial(ip: str, pki: Path) -> int:
    """The serial a member's client port presents in a TLS handshake now."""
    context = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
    context.load_cert_chain(str(pki / "etcdsop" / "admin.crt"), str(pki / "etcdsop" / "admin.key"))
    with (
        socket.create_connection((ip, 2379), 5) as sock,
        context.wrap_socket(sock, server_hostname=ip) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def main_pid(bed: Bed, ip: str, unit: str) -> str:
    return bed.ssh(ip, f"systemctl show -p MainPID --value {unit}").stdout.strip()


def test_certs_lists_ca_members_admin_and_patroni(cluster: tuple[Bed, Path]) -> None:
    bed, inv = cluster
    ips = bed.ips
    out = json.loads(run_cli("certs", "-i", str(inv), "--json").stdout)
    assert out["unreachable"] == [] and out["problems"] == 0, out
    by_where = {c["where"]: c for c in out["certificates"]}
    pki = pki_of(inv)
    ca = by_where[f"admin:{pki}/ca/ca.crt"]
    assert ca["kind"] == "ca" and ca["issuer"] == ca["fingerprint"] == out["ca"]
    assert by_where[f"admin:{pki}/etcdsop/admin.crt"]["kind"] == "admin"
    for ip in ips[:3]:
        node = by_where[f"{ip}:/etc/etcd/server.crt"]
        assert node["kind"] == "node" and node["issuer"] == out["ca"]
        assert f"IP:{ip}" in node["sans"] and node["days_left"] > 7000
        assert node["not_after"] and node["state"] == "ok"
        assert by_where[f"{ip}:/etc/etcd/ca.crt"]["fingerprint"] == out["ca"]
    for ip in ips[3:5]:
        client = by_where[f"{ip}:/pg/cert/server.crt"]
        assert client["kind"] == "client" and client["issuer"] == out["ca"]
        assert "patroni" in client["detail"] and "vip-manager" in client["detail"]
        assert by_where[f"{ip}:/pg/cert/ca.crt"]["kind"] == "trust"


@dataclass(frozen=True)
class Held:
    """What a host runs and holds, in one round trip."""

    pid: str  # MainPID of the unit
    cert: x509.Certificate
    key_sha: str
    modes: str  # mode and owner of the cert and the key


def held(bed: Bed, ip: str, unit: str, cert: str, key: str) -> Held:
    script = (
        f"systemctl show -p MainPID --value {unit}; sha256sum {key} | cut -d' ' -f1;"
        f" stat -c '%a %U' {cert} {key} | tr '\\n' ' '; echo; cat {cert}"
    )
    pid, sha, modes, pem = bed.ssh(ip, script).stdout.split("\n", 3)
    return Held(pid, x509.load_pem_x509_certificate(pem.encode()), sha, modes.strip())


def test_renew_reissues_in_place_without_restarts(cluster: tuple[Bed, Path]) -> None:
    bed, inv = cluster
    ips, pki = bed.ips, pki_of(inv)
    members, pg = ips[:3], ips[3:5]
    node_files = ("etcd", "/etc/etcd/server.crt", "/etc/etcd/server.key")
    pg_files = ("patroni", "/pg/cert/server.crt", "/pg/cert/server.key")
    before = {ip: held(bed, ip, *node_files) for ip in members}
    before |= {ip: held(bed, ip, *pg_files) for ip in pg}

    renewed = run_cli("certs", "renew", "--within", "100000", "-y", "-i", str(inv), "--json")
    out = json.loads(renewed.stdout)

    assert out["failed"] == [], out
    after = {ip: held(bed, ip, *node_files) for ip in members}
    after |= {ip: held(bed, ip, *pg_files) for ip in pg}
    for ip in members + pg:
        assert after[ip].cert.serial_number != before[ip].cert.serial_number
        # The same key: none was made or sent; file modes and owners as they were.
        assert after[ip].cert.public_key() == before[ip].cert.public_key()
        assert after[ip].key_sha == before[ip].key_sha
        assert after[ip].modes == before[ip].modes
        assert after[ip].pid == before[ip].pid  # neither etcd nor Patroni restarted
    for ip in members:
        assert after[ip].modes == "644 etcd 600 etcd"
        assert served_serial(ip, pki) == after[ip].cert.serial_number  # read per handshake
        # The admin node's copy is the host's certificate.
        copy = (pki / "etcd" / f"etcd-{members.index(ip) + 1}.crt").read_bytes()
        assert x509.load_pem_x509_certificate(copy) == after[ip].cert
    client = root(inv, members)
    client.put("/app/certs/after-renew", "ok")
    assert client.get("/app/certs/after-renew") == b"ok"


def test_rotate_ca_interrupted_then_resumed_keeps_patroni_and_writes(
    cluster: tuple[Bed, Path], tmp_path: Path
) -> None:
    bed, inv = cluster
    ips, pki = bed.ips, pki_of(inv)
    members, (primary, replica) = ips[:3], ips[3:5]
    old_ca = (pki / "ca" / "ca.crt").read_bytes()
    patroni = {ip: main_pid(bed, ip, "patroni") for ip in (primary, replica)}
    args = ["certs", "rotate-ca", "-y", "-i", str(inv), "--json"]

    def after_first_restart(proc: subprocess.Popen[str], line: str, _count: int) -> bool:
        if "etcd restarted, healthy" in line:
            proc.send_signal(signal.SIGINT)
            return True
        return False

    with (
        LeaderWatch(inv, members, [primary, replica]) as watch,
        Writer(lambda: root(inv, members)) as writer,
    ):
        rc, text = follow(args, after_first_restart)
        assert rc == 130, text
        state = json.loads((pki / "ca" / "rotation.json").read_text())
        assert state["phase"] == "new-ca"  # the bundle phase was cut short
        out = json.loads(run_cli(*args[:-1], "--json").stdout)
    assert out["phases"] == ["bundle", "reissued", "done"]
    assert len(out["restarted"]["bundle"]) == 2  # the member restarted before is not again
    assert len(out["restarted"]["done"]) == 3

    # Writes: never refused longer than one election (plus the writer's put deadline),
    # every acknowledged key kept.
    assert writer.acked, "the writer never wrote"
    assert writer.longest <= ELECTION_S + Writer.PUT_DEADLINE, writer.longest
    kept = root(inv, members).get_prefix("/app/writer/")
    assert set(writer.acked) <= set(kept)
    # Patroni: the same leader throughout, never restarted.
    assert {s.leader for s in watch.samples if s.leader is not None} == {b"pg-test-1"}
    assert watch.seen(primary, "role") == {"master"}
    assert {ip: main_pid(bed, ip, "patroni") for ip in (primary, replica)} == patroni

    # The new CA alone everywhere; the old one kept under a dated name.
    new_ca = (pki / "ca" / "ca.crt").read_bytes()
    new = x509.load_pem_x509_certificates(new_ca)
    assert len(new) == 1 and new_ca != old_ca
    for ip in members:
        assert (
            x509.load_pem_x509_certificates(bed.ssh(ip, "cat /etc/etcd/ca.crt").stdout.encode())
            == new
        )
    for ip in (primary, replica):
        assert (
            x509.load_pem_x509_certificates(bed.ssh(ip, "cat /pg/cert/ca.crt").stdout.encode())
            == new
        )
    archived = list((pki / "ca").glob("ca-*-*.crt"))
    assert len(archived) == 1 and archived[0].read_bytes() == old_ca
    assert json.loads((pki / "ca" / "rotation.json").read_text())["phase"] == "done"

    # A client certificate signed by the OLD CA is refused; one by the new CA works.
    old = tmp_path / "old"
    (old / "ca").mkdir(parents=True)
    (old / "ca" / "ca.crt").write_bytes(old_ca)
    (old / "ca" / "ca.key").write_bytes(archived[0].with_suffix(".key").read_bytes())
    stale = Pki(old).ensure_admin()
    refused = EtcdClient(
        [f"https://{ip}:2379" for ip in members],
        TlsFiles(pki / "ca" / "ca.crt", stale.cert_path, stale.key_path),
        user="root",
        password=PASSWORD,
        timeout=5,
    )
    with pytest.raises(ClusterError):
        refused.get("/app/certs/after-renew")
    assert root(inv, members).get("/app/certs/after-renew") == b"ok"
    listed = json.loads(run_cli("certs", "-i", str(inv), "--json").stdout)
    assert listed["problems"] == 0, [c for c in listed["certificates"] if c["state"] != "ok"]


def test_rotate_ca_refused_with_a_voter_down(cluster: tuple[Bed, Path]) -> None:
    bed, inv = cluster
    pki, down = pki_of(inv), bed.ips[2]
    ca, state = (pki / "ca" / "ca.crt").read_bytes(), (pki / "ca" / "rotation.json").read_bytes()
    bed.ssh(down, "systemctl stop etcd")
    try:
        refused = run_cli("certs", "rotate-ca", "-y", "-i", str(inv), check=False)
    finally:
        bed.ssh(down, "systemctl start etcd")
    assert refused.returncode == 3, refused.stderr
    assert "every voter must be healthy" in refused.stderr
    assert "Traceback" not in refused.stderr
    # Nothing changed: no new CA, no new phase.
    assert (pki / "ca" / "ca.crt").read_bytes() == ca
    assert (pki / "ca" / "rotation.json").read_bytes() == state
    assert not (pki / "ca" / "ca-next.key").exists()
