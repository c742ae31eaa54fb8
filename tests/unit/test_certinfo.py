"""`etcdsop certs`: judging certificates, re-signing them, rotate-ca's phases, state file,
local CA files and the restart rule; the facts parsers of the hosts' files."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from etcdsop import pki as pki_mod
from etcdsop.carotation import (
    PHASES,
    Rotation,
    archive_name,
    dump_state,
    fingerprints,
    next_phase,
    parse_state,
    trust_for,
    unsafe_restart,
)
from etcdsop.certinfo import (
    CertEntry,
    bundle,
    describe,
    due,
    fingerprint,
    judge_leaf,
    judge_trust,
    load_pems,
    pem,
    resign,
    signer,
)
from etcdsop.clients.jobs import PgHostJob
from etcdsop.errors import GuardRefused, InputError
from etcdsop.etcd import MemberInfo
from etcdsop.events import SilentReporter
from etcdsop.guards import same_ca
from etcdsop.model import PgCluster, SshTarget
from etcdsop.ops import rotateca
from etcdsop.ops.certhosts import (
    READ,
    FileFacts,
    HostRead,
    MemberCerts,
    UnitFacts,
    client_sets,
    parse_read,
)
from etcdsop.ops.certs import (
    RenewResult,
    Survey,
    _local_entries,
    local_trust,
    swap_local_copies,
)
from etcdsop.ops.common import ClusterView, RunOptions
from etcdsop.pki import Pki
from etcdsop.render import CA_CRT

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def small_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # RSA 4096 takes seconds per CA; the logic is the same with 2048.
    monkeypatch.setattr(pki_mod, "CA_KEY_BITS", 2048)
    monkeypatch.setattr(rotateca, "CA_KEY_BITS", 2048)


def make_pki(root: Path, *, now: datetime = NOW) -> Pki:
    pki = Pki(root, now=lambda: now)
    pki.ensure_ca()
    return pki


def ca_of(pki: Pki) -> tuple[x509.Certificate, Any]:
    cert = load_pems(pki.ca_cert_path.read_bytes())[0]
    key = serialization.load_pem_private_key(pki.ca_key_path.read_bytes(), password=None)
    return cert, key


def node(pki: Pki, name: str = "etcd-1", ip: str = "10.0.0.1", days: int = 365) -> x509.Certificate:
    return load_pems(pki.ensure_node(name, ip, days).cert_pem)[0]


# -- judging ----------------------------------------------------------------------------------
def test_judge_leaf_ok_due_expired_other_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "a")
    other = make_pki(tmp_path / "b")
    ca, _ = ca_of(pki)
    cert = node(pki, days=100)

    def state(c: x509.Certificate, within: int, now: datetime = NOW, cas: Any = (ca,)) -> str:
        return judge_leaf(describe("node", "h", "/p", c, now), c, cas, within * DAY, now).state

    assert state(cert, 30) == "ok"
    assert state(cert, 100) == "due"
    assert state(cert, 30, now=NOW + 101 * DAY) == "expired"
    assert state(cert, 30, cas=(ca_of(other)[0],)) == "other-ca"
    entry = judge_leaf(describe("node", "h", "/p", cert, NOW), cert, (ca,), 30 * DAY, NOW)
    assert entry.issuer == fingerprint(ca)[:8] and entry.where == "h:/p"
    assert "IP:10.0.0.1" in entry.sans and entry.days_left in (99, 100)


def test_a_leaf_that_ends_with_its_ca_is_never_due(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca, _ = ca_of(pki)
    capped = node(pki, days=100 * 365)  # longer than the CA: capped at its end
    assert capped.not_valid_after_utc == ca.not_valid_after_utc
    assert not due(capped, ca, 100_000 * DAY, NOW)


def test_trust_file_entries_name_another_ca(tmp_path: Path) -> None:
    ca = ca_of(make_pki(tmp_path / "a"))[0]
    other = ca_of(make_pki(tmp_path / "b"))[0]
    assert judge_trust(describe("trust", "h", "/p", ca, NOW), ca, ca, NOW).state == "ok"
    assert judge_trust(describe("trust", "h", "/p", other, NOW), other, ca, NOW).state == "other-ca"


# -- re-signing -------------------------------------------------------------------------------
def test_resign_keeps_key_subject_names_and_lifetime_under_another_ca(tmp_path: Path) -> None:
    old = make_pki(tmp_path / "old")
    new_ca, new_key = ca_of(make_pki(tmp_path / "new"))
    cert = node(old, days=365)
    again = resign(cert, new_ca, new_key, NOW)
    assert signer(again, [new_ca]) is new_ca
    assert signer(again, [ca_of(old)[0]]) is None
    assert again.public_key() == cert.public_key()
    assert again.subject == cert.subject
    assert again.serial_number != cert.serial_number
    ext = x509.SubjectAlternativeName
    assert again.extensions.get_extension_for_class(ext) == cert.extensions.get_extension_for_class(
        ext
    )
    lifetime = again.not_valid_after_utc - again.not_valid_before_utc
    assert lifetime == cert.not_valid_after_utc - cert.not_valid_before_utc


def test_bundle_keeps_order_and_drops_duplicates(tmp_path: Path) -> None:
    a = ca_of(make_pki(tmp_path / "a"))[0]
    b = ca_of(make_pki(tmp_path / "b"))[0]
    both = bundle(b, a, b)
    assert [fingerprint(c) for c in load_pems(both)] == [fingerprint(b), fingerprint(a)]
    assert fingerprints(both) == {fingerprint(a), fingerprint(b)}
    assert load_pems(b"not a pem") == []


def test_admin_node_copies_follow_the_host_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ca, key = ca_of(pki)
    host = node(pki, "etcd-1")
    other = node(pki, "etcd-2", "10.0.0.2")
    earlier = resign(host, ca, key, NOW - DAY)  # the same key pair, another certificate
    root = tmp_path / "files"
    for sub, name, cert, mode in (
        ("pgsql", "same.crt", host, 0o640),
        ("etcd", "earlier.crt", earlier, 0o644),
        ("etcd", "other.crt", other, 0o644),
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_bytes(pem(cert))
        (root / sub / name).chmod(mode)
    new = pem(resign(host, ca, key, NOW))
    assert swap_local_copies(root, pem(host), new) == [
        str(root / "etcd" / "earlier.crt"),
        str(root / "pgsql" / "same.crt"),
    ]
    assert (root / "pgsql" / "same.crt").read_bytes() == new
    assert (root / "etcd" / "earlier.crt").read_bytes() == new
    assert stat.S_IMODE((root / "pgsql" / "same.crt").stat().st_mode) == 0o640
    assert (root / "etcd" / "other.crt").read_bytes() == pem(other)


# -- rotate-ca: state and rule ------------------------------------------------------------------
def test_phases_run_in_order_and_a_finished_rotation_starts_afresh() -> None:
    assert next_phase(None) == "new-ca"
    walked = []
    rotation: Rotation | None = None
    while rotation is None or not rotation.finished:
        phase = next_phase(rotation)
        walked.append(phase)
        rotation = Rotation(phase, "o", "n", "ca-x")
        assert rotation.done(phase) and all(rotation.done(p) for p in walked)
    assert tuple(walked) == PHASES
    assert next_phase(rotation) == "new-ca"
    assert not Rotation("bundle", "o", "n", "a").done("reissued")


def test_state_file_round_trip_and_damage_named() -> None:
    rotation = Rotation("bundle", "aa", "bb", "ca-20260101-aaaaaaaa")
    assert parse_state(dump_state(rotation).decode(), "x") == rotation
    for bad in ("", "{}", '{"phase": "later", "old": 1, "new": 2, "archive": 3}', "[1]"):
        with pytest.raises(InputError, match=r"rotation\.json"):
            parse_state(bad, "/pki/ca/rotation.json")


def test_trust_per_phase() -> None:
    rotation = Rotation("new-ca", "old", "new", "ca-x")
    assert trust_for(rotation, "bundle") == {"old", "new"}
    assert trust_for(rotation, "reissued") == {"old", "new"}
    assert trust_for(rotation, "done") == {"new"}


def test_a_member_is_never_restarted_trusting_less_than_its_peers_certificates(
    tmp_path: Path,
) -> None:
    old = make_pki(tmp_path / "old")
    new = make_pki(tmp_path / "new")
    old_ca, new_ca = ca_of(old)[0], ca_of(new)[0]
    peers = {"etcd-1": node(old, "etcd-1"), "etcd-2": node(new, "etcd-2", "10.0.0.2")}
    assert unsafe_restart([old_ca, new_ca], peers) == []  # the bundle: everyone
    assert unsafe_restart([new_ca], peers) == ["etcd-1"]  # dropping the old CA too early
    assert unsafe_restart([old_ca], peers) == ["etcd-2"]  # a rollback while certs are new
    assert unsafe_restart([old_ca, new_ca], {"etcd-3": None}) == ["etcd-3"]


def test_archive_name_is_dated_with_the_fingerprint(tmp_path: Path) -> None:
    ca = ca_of(make_pki(tmp_path))[0]
    name = archive_name(ca, datetime(2026, 12, 3, tzinfo=timezone.utc))
    assert name == f"ca-20261203-{fingerprint(ca)[:8]}"


# -- rotate-ca: the admin node's files ---------------------------------------------------------
def fake_ctx(root: Path) -> Any:
    return SimpleNamespace(pki_dir=root, pki=Pki(root), pki_hint=lambda: "hint")


def test_local_ca_phases_keep_the_old_ca_and_switch_the_signer(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    old_ca, _ = ca_of(pki)
    old_key = pki.ca_key_path.read_bytes()
    local = rotateca.LocalCa(fake_ctx(tmp_path))
    rotation, was, new = local.begin()
    assert fingerprint(was) == fingerprint(old_ca) == rotation.old
    archive = tmp_path / "ca" / f"{rotation.archive}"
    assert archive.with_suffix(".key").read_bytes() == old_key
    assert stat.S_IMODE(archive.with_suffix(".key").stat().st_mode) == 0o600
    assert stat.S_IMODE(local.next_key.stat().st_mode) == 0o600
    # old still signs, both are trusted
    assert [fingerprint(c) for c in local_trust(fake_ctx(tmp_path)).cas] == [
        rotation.old,
        rotation.new,
    ]
    assert local.state() == rotation
    # An interrupted begin (state lost) re-uses the new CA it made.
    local.state_path.unlink()
    again, _, new_again = local.begin()
    assert again.new == rotation.new and fingerprint(new_again) == fingerprint(new)
    local.switch(again)
    local.switch(again)  # idempotent
    trust = local_trust(fake_ctx(tmp_path))
    assert [fingerprint(c) for c in trust.cas] == [rotation.new, rotation.old]
    issued = Pki(tmp_path).ensure_admin()  # pki.py signs with the new CA now
    assert signer(load_pems(issued.cert_pem)[0], [new]) is not None
    local.finish(again)
    assert fingerprints(local.crt.read_bytes()) == {rotation.new}
    assert not local.next_crt.exists() and not local.next_key.exists()
    assert archive.with_suffix(".crt").exists()  # never deleted
    assert fingerprint(local.cas(again)[1]) == fingerprint(new)


def test_a_finish_interrupted_between_its_unlinks_does_not_reuse_the_ca_key(
    tmp_path: Path,
) -> None:
    make_pki(tmp_path)
    local = rotateca.LocalCa(fake_ctx(tmp_path))
    rotation, _, _ = local.begin()
    local.switch(rotation)
    local.finish(rotation)
    local.save(rotation.to("done"))
    # killed after ca-next.crt went, before ca-next.key did: a copy of ca.key is left
    local.next_key.write_bytes(local.key.read_bytes())
    _, current, new = local.begin()
    assert fingerprint(current) == rotation.new
    assert pki_mod._spki(new.public_key()) != pki_mod._spki(current.public_key())
    assert pki_mod._spki(load_pems(local.next_crt.read_bytes())[0].public_key()) == (
        pki_mod._spki(rotateca.load_key(local.next_key).public_key())
    )


def test_the_next_ca_is_not_listed_as_archived(tmp_path: Path) -> None:
    make_pki(tmp_path)
    ctx = fake_ctx(tmp_path)
    rotateca.LocalCa(ctx).begin()
    entries = _local_entries(ctx, local_trust(ctx), DAY)
    details = {Path(e.path).name: e.detail for e in entries if e.kind == "ca-archived"}
    assert details["ca-next.crt"].startswith("the new CA of the rotation under way")
    assert [d for n, d in details.items() if n != "ca-next.crt"] == ["kept after a rotation"]


def test_local_ca_refuses_a_bundle_without_a_rotation(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    other = ca_of(make_pki(tmp_path / "other"))[0]
    pki.ca_cert_path.write_bytes(pki.ca_cert_path.read_bytes() + pem(other))
    with pytest.raises(InputError, match="no rotation is under way"):
        rotateca.LocalCa(fake_ctx(tmp_path)).begin()


def rotate_ctx(root: Path) -> Any:
    """What rotate() uses of a Context when the hosts' parts are faked."""
    return SimpleNamespace(
        pki_dir=root,
        pki=Pki(root),
        pki_hint=lambda: "hint",
        report=SilentReporter(),
        options=RunOptions(),
        connect=lambda members: None,
    )


def test_a_host_lost_during_rotate_ca_is_refused_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that answered the health check but not the next phase's read: exit 3 and
    nothing written (it was an AssertionError in push_trust)."""
    make_pki(tmp_path)
    ctx = rotate_ctx(tmp_path)
    trust = local_trust(ctx)  # type: ignore[arg-type]
    gone = MemberCerts(SimpleNamespace(ip="10.0.0.1"), None, "cannot connect")  # type: ignore[arg-type]
    surveys = iter([Survey(trust, [], []), Survey(trust, [gone], [])])
    monkeypatch.setattr(rotateca, "guard_healthy", lambda ctx: [])
    monkeypatch.setattr(rotateca, "survey", lambda *a, **k: next(surveys))
    with pytest.raises(GuardRefused, match=r"10\.0\.0\.1: cannot connect"):
        rotateca.rotate(ctx)  # type: ignore[arg-type]
    assert rotateca.LocalCa(ctx).state().phase == "new-ca"  # type: ignore[arg-type, union-attr]


def test_a_member_unreadable_before_a_restart_is_named_as_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two = (SimpleNamespace(name=f"etcd-{i}", ip=f"10.0.0.{i}") for i in (1, 2))
    stale = HostRead(units={"etcd": UnitFacts("active", 1, 9000)})
    stale.files[CA_CRT] = FileFacts(CA_CRT, CA_CRT, 10, b"")
    reads = iter(
        [
            [MemberCerts(one, stale), MemberCerts(two, stale)],  # type: ignore[arg-type]
            [MemberCerts(one, stale), MemberCerts(two, None, "cannot connect")],  # type: ignore[arg-type]
        ]
    )
    monkeypatch.setattr(rotateca, "read_members", lambda ctx, members: next(reads))
    monkeypatch.setattr(rotateca, "leader_last", lambda ctx, members: members)
    with pytest.raises(
        GuardRefused, match=r"restart etcd-1: cannot read etcd-2 \(cannot connect\)"
    ):
        rotateca.restart_stale(SimpleNamespace(), [one, two], "done", rotateca.RotateResult())  # type: ignore[arg-type, list-item]


def test_a_client_certificate_that_is_not_there_does_not_keep_the_old_ca() -> None:
    """A PostgreSQL host of the inventory without Patroni yet: its default client files
    are missing. The rotation could never finish (exit 2 on every re-run)."""
    entries = [
        CertEntry("client", "10.0.0.9", "/etc/etcd-client/client.crt", "unreadable", "missing"),
        CertEntry("node", "10.0.0.1", "/etc/etcd/server.crt", "unreachable", "gone"),
        CertEntry("client", "10.0.0.5", "/pg/cert/server.crt", "ok", issuer="0ld0ld00"),
        CertEntry("client", "10.0.0.6", "/pg/cert/server.crt", "ok", issuer="11ew11ew"),
        CertEntry("node", "admin", "/p/etcd/etcd-1.crt", "ok", issuer="0ld0ld00"),  # a copy
        CertEntry("admin", "admin", "/p/etcdsop/admin.crt", "unreadable", issuer="0ld0ld00"),
    ]
    assert rotateca.signed_by_another(entries, "11ew11ew") == [
        "10.0.0.1:/etc/etcd/server.crt",
        "10.0.0.5:/pg/cert/server.crt",
        "admin:/p/etcdsop/admin.crt",
    ]


def test_a_ca_file_rewritten_after_the_bundle_phase_is_caught_up_by_a_re_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundle phase is done, then something rewrote a member's ca.crt (same CAs)
    without restarting etcd: the re-run restarts it before the new CA signs, instead of
    "re-run to continue" on every re-run."""
    make_pki(tmp_path)
    ctx = rotate_ctx(tmp_path)
    local = rotateca.LocalCa(ctx)  # type: ignore[arg-type]
    rotation, old, new = local.begin()
    local.save(rotation.to("bundle"))
    member = SimpleNamespace(name="etcd-1", ip="10.0.0.1")
    host = {"etcd runs ms": 60_000}  # started a minute ago; ca.crt rewritten 1 s ago

    def read(ctx: Any, members: Any) -> list[MemberCerts]:
        facts = HostRead(units={"etcd": UnitFacts("active", 1, host["etcd runs ms"])})
        facts.files[CA_CRT] = FileFacts(CA_CRT, CA_CRT, 1_000, bundle(old, new))
        return [MemberCerts(member, facts)]  # type: ignore[arg-type]

    def restart(ctx: Any, members: Any, phase: str, result: Any) -> None:
        if any(r.runs_old_trust for r in read(ctx, members)):
            host["etcd runs ms"] = 0  # what restart_stale does: a fresh etcd

    trust = local_trust(ctx)  # type: ignore[arg-type]
    monkeypatch.setattr(rotateca, "guard_healthy", lambda ctx: [member])
    monkeypatch.setattr(rotateca, "survey", lambda *a, **k: Survey(trust, [], []))
    monkeypatch.setattr(rotateca, "read_members", read)
    monkeypatch.setattr(rotateca, "restart_stale", restart)
    monkeypatch.setattr(rotateca, "renew", lambda *a, **k: RenewResult(0))
    rotateca.rotate(ctx)  # type: ignore[arg-type]
    assert local.state().phase == "done"  # type: ignore[union-attr]


def test_rotate_ca_health_refusal_names_only_what_is_wrong() -> None:
    members = tuple(
        MemberInfo(
            i, f"etcd-{i}", (f"https://10.0.0.{i}:2380",), (f"https://10.0.0.{i}:2379",), False
        )
        for i in (1, 2, 3)
    )
    client = SimpleNamespace(health=lambda url: "10.0.0.3" not in url)
    inventory = SimpleNamespace(
        cluster="etcd",
        members=[SimpleNamespace(peer_url=f"https://10.0.0.{i}:2380") for i in (1, 2, 3)],
    )
    ctx = SimpleNamespace(
        probe=lambda: ClusterView(1, members),
        voter_client=lambda view=None: client,
        inventory=inventory,
    )
    with pytest.raises(GuardRefused) as refused:
        rotateca.guard_healthy(ctx)  # type: ignore[arg-type]
    assert refused.value.message.endswith("(not healthy: etcd-3)")


def test_hosts_mid_rotation_trust_the_local_ca(tmp_path: Path) -> None:
    """create/add/restore's PKI guard: a host holding old + new CA (or the new alone) while
    the admin node holds new + old (or the new alone) is ours: refusing it strands a
    half-done rotation (rotate-ca needs every voter healthy, restore is the way back)."""
    old = ca_of(make_pki(tmp_path / "old"))[0]
    new = ca_of(make_pki(tmp_path / "new"))[0]
    foreign = ca_of(make_pki(tmp_path / "foreign"))[0]
    assert same_ca(bundle(old, new), bundle(new, old))  # after the switch
    assert same_ca(bundle(old, new), pem(new))  # after `done` began on the admin node
    assert same_ca(pem(old), bundle(old, new))  # before the bundle reached the host
    assert not same_ca(pem(foreign), bundle(new, old))
    # a pki dir copied mid-rotation, still signing with the old CA, once hosts dropped it
    assert not same_ca(pem(new), bundle(old, new))
    assert not same_ca(bundle(foreign, old), pem(new))
    assert not same_ca(b"not a pem", pem(new))


# -- facts of the hosts --------------------------------------------------------------------------
def test_parse_read_files_keys_and_units() -> None:
    b64 = base64.b64encode(b"PEM").decode()
    text = (
        f"file /etc/etcd/ca.crt /etc/etcd/ca.crt 12 {b64}\n"
        "missing /etc/etcd/server.crt\n"
        "keymatch /etc/etcd/server.crt yes\n"
        "unit etcd active 321 40\n"
        "unit vip-manager inactive 0 -\n"
    )
    read = parse_read(text)
    assert read.files["/etc/etcd/ca.crt"].content == b"PEM"
    assert read.files["/etc/etcd/ca.crt"].age_ms == 12
    assert "/etc/etcd/server.crt" not in read.files
    assert read.keymatch == {"/etc/etcd/server.crt": True}
    assert read.units["etcd"].runs_ms == 40 and read.units["etcd"].pid == 321
    assert read.units["vip-manager"].runs_ms is None


def test_a_process_started_just_before_its_ca_file_was_written_runs_the_old_trust(
    tmp_path: Path,
) -> None:
    """The host read script, run here: a process started ~0.3 s before the file was
    written (the same second, mostly) still runs with what the file held before. With
    whole seconds it looked restarted, and rotate-ca skipped its restart: re-signed peers
    would then be refused by it."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.3)
        ca = tmp_path / "ca.crt"
        ca.write_bytes(b"PEM")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fake = bin_dir / "systemctl"  # MainPID of "etcd": the sleep
        fake.write_text(
            f"#!/bin/sh\ncase $* in *MainPID*) echo {proc.pid};; *) echo active;; esac\n"
        )
        fake.chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        out = subprocess.run(
            ["sh", "-c", READ, "sh", str(ca), "unit:etcd"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        proc.kill()
        proc.wait()
    read = parse_read(out)
    member = MemberCerts(SimpleNamespace(ip="10.0.0.1"), read)  # type: ignore[arg-type]
    member.read.files[CA_CRT] = read.files[str(ca)]  # type: ignore[union-attr]
    assert member.runs_old_trust, out


def test_client_sets_from_patroni_and_vip_manager() -> None:
    cluster = PgCluster("pg-test", "pg-test", ("10.0.0.5",), "/pg", "pw", True)
    job = PgHostJob(
        "10.0.0.5",
        SshTarget("10.0.0.5"),
        cluster,
        True,
        None,
        "/etc/default/vip-manager.yml",
        ("/etc/etcd-client/ca.crt", "/etc/etcd-client/client.crt", "/etc/etcd-client/client.key"),
        True,
        "postgres",
    )
    patroni = (
        b"etcd3:\n  cacert: /pg/cert/ca.crt\n  cert: /pg/cert/server.crt\n"
        b"  key: /pg/cert/server.key\n"
    )
    vip = (
        b"etcd-ca-file: /pg/cert/ca.crt\netcd-cert-file: /pg/cert/server.crt\n"
        b"etcd-key-file: /pg/cert/server.key\n"
    )
    (only,) = client_sets(job, patroni, vip)
    assert only.users == ("patroni", "vip-manager") and only.cert == "/pg/cert/server.crt"
    vip_elsewhere = vip.replace(b"/pg/cert/", b"/etc/vip/")
    assert [s.users for s in client_sets(job, patroni, vip_elsewhere)] == [
        ("patroni",),
        ("vip-manager",),
    ]
    assert client_sets(job, b"etcd3: {cacert: 'rel/ca.crt'}", None) == []
