"""Pure decisions of `rbac sync` and `reload`: plans, targets, cross-checks, quorum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.unit.factories import member, trio

from etcdsop.clients.jobs import TLS_DEFAULTS, host_port, plan_jobs
from etcdsop.errors import InputError
from etcdsop.etcd import MemberInfo, Permission
from etcdsop.model import Inventory, PgCluster, SshTarget
from etcdsop.ops.common import ClusterView
from etcdsop.ops.filebackup import backup_path
from etcdsop.ops.memberfiles import parse_member_facts
from etcdsop.ops.rbac import PgAccount, accounts, plan_account
from etcdsop.ops.reload import parse_targets
from etcdsop.ops.voters import cross_check, voter_urls
from etcdsop.quorum import check_restart

ACCOUNT = PgAccount("pg-test", "/pg", "pw", weak=False)
WANT = Permission("READWRITE", b"/pg/pg-test/", b"/pg/pg-test0")


def pg(name: str = "pg-test", password: str = "pw", **host_vars: Any) -> PgCluster:
    hosts = ("10.0.0.5", "10.0.0.6")
    return PgCluster(
        name=name,
        group=name,
        hosts=hosts,
        namespace="/pg",
        etcd_password=password,
        vip_enabled=True,
        host_vars={h: dict(host_vars) for h in hosts},
        ssh={h: SshTarget(h) for h in hosts},
    )


def inventory(*clusters: PgCluster) -> Inventory:
    return Inventory(path=Path("/x/pigsty.yml"), members=tuple(trio()), pg_clusters=clusters)


def info(n: int, *, learner: bool = False, started: bool = True, ip: str = "") -> MemberInfo:
    ip = ip or f"10.10.10.{10 + n}"
    return MemberInfo(
        id=n,
        name=f"etcd-{n + 1}" if started else "",
        peer_urls=(f"https://{ip}:2380",),
        client_urls=(f"https://{ip}:2379",) if started else (),
        is_learner=learner,
    )


# -- rbac -----------------------------------------------------------------------------
def test_account_prefix_has_a_trailing_slash() -> None:
    assert ACCOUNT.permission == WANT  # [/pg/pg-test/, /pg/pg-test0): not pg-test2


@pytest.mark.parametrize(
    ("perms", "roles", "password_ok", "kinds"),
    [
        (None, None, False, ["role_add", "grant_permission", "user_add", "grant_role"]),
        ([WANT], ["pg-test"], True, []),
        ([WANT], ["pg-test"], False, ["change_password"]),
        ([], ["pg-test"], True, ["grant_permission"]),
        ([WANT], [], True, ["grant_role"]),
        ([WANT], None, False, ["user_add", "grant_role"]),
        (
            [Permission("READWRITE", b"/pg/pg-test", b"/pg/pg-tesu"), WANT],
            ["pg-test", "other"],
            True,
            ["revoke_permission"],
        ),
        (
            [Permission("READ", b"/pg/pg-test/", b"/pg/pg-test0")],
            ["pg-test"],
            True,
            ["grant_permission", "revoke_permission"],
        ),
    ],
)
def test_plan_account(
    perms: list[Permission] | None, roles: list[str] | None, password_ok: bool, kinds: list[str]
) -> None:
    assert [a.kind for a in plan_account(ACCOUNT, perms, roles, password_ok)] == kinds


def test_accounts_weak_password_and_root_refused() -> None:
    (weak,) = accounts(inventory(pg(password="")))
    assert (weak.password, weak.weak) == ("pg-test", True)
    with pytest.raises(InputError, match="pg_cluster 'root'"):
        accounts(inventory(pg("root")))


# -- reload targets and endpoints ---------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "targets"),
    [
        (["all"], ("etcd", "etcdctl", "patroni", "vip")),
        (["vip,etcd"], ("etcd", "vip")),
        (["patroni", "PATRONI", " etcdctl "], ("etcdctl", "patroni")),
    ],
)
def test_parse_targets(values: list[str], targets: tuple[str, ...]) -> None:
    assert parse_targets(values) == targets


@pytest.mark.parametrize("values", [["etcd,nope"], [","], []])
def test_parse_targets_refuses(values: list[str]) -> None:
    with pytest.raises(InputError):
        parse_targets(values)


def test_voters_exclude_learners_and_unstarted() -> None:
    view = ClusterView(
        cluster_id=1,
        members=(info(2), info(0), info(1, learner=True), info(3, started=False, ip="10.1.1.1")),
    )
    assert voter_urls(view) == ["https://10.10.10.10:2379", "https://10.10.10.12:2379"]
    assert host_port(voter_urls(view)[0]) == "10.10.10.10:2379"


def test_cross_check_names_every_disagreement() -> None:
    inv = Inventory(
        path=Path("/x/pigsty.yml"),
        members=(member("10.10.10.10", 1), member("10.10.10.11", 2), member("10.10.10.12", 3)),
    )
    view = ClusterView(
        cluster_id=1, members=(info(0), info(1, learner=True), info(7, ip="10.9.9.9"))
    )
    notes = cross_check(inv, view)
    assert len(notes) == 3
    assert "etcd-2 (10.10.10.11) is a learner" in notes[0]
    assert "etcd-3 (10.10.10.12) is not in the live cluster" in notes[1]
    assert "live voter etcd-8 (https://10.9.9.9:2379) is not in the inventory" in notes[2]
    assert "clients still use it" in notes[2]


@pytest.mark.parametrize(
    ("members", "healthy", "target", "allowed"),
    [
        ([info(0), info(1), info(2)], {0, 1, 2}, 0, True),
        ([info(0), info(1), info(2)], {0, 1}, 0, False),  # 1 left < quorum 2
        ([info(0), info(1), info(2)], {0, 1}, 2, True),  # the sick one itself
        ([info(0)], {0}, 0, False),  # a lone member can never restart safely
        ([info(0), info(1)], {0, 1}, 1, False),  # 2 voters: quorum 2
        ([info(0), info(1), info(2, learner=True)], {0, 1}, 2, True),
    ],
)
def test_check_restart(
    members: list[MemberInfo], healthy: set[int], target: int, allowed: bool
) -> None:
    ok, text = check_restart(members, healthy, target)
    assert ok is allowed
    assert "quorum" in text


def test_member_facts_staleness() -> None:
    facts = parse_member_facts(
        "file /etc/etcd/etcd.conf bmFtZTogZXRjZC0xCg==\nmissing /etc/profile.d/etcdctl.sh\n"
        "sha /etc/etcd/etcd.pass abc\nages 100 40\n"
    )
    assert facts.files == {"/etc/etcd/etcd.conf": b"name: etcd-1\n"}
    assert facts.secret_sha == {"/etc/etcd/etcd.pass": "abc"}
    assert facts.stale  # etcd runs for 100 s, its conf was written 40 s ago
    assert not parse_member_facts("ages 40 100\n").stale
    assert not parse_member_facts("").stale


def test_backup_is_never_sourced_by_profile_d() -> None:
    path = backup_path("/etc/profile.d/etcdctl.sh", "20250101T000000Z")
    assert path == "/etc/profile.d/etcdctl.sh.20250101T000000Z.bak"
    assert not path.endswith(".sh")


# -- PostgreSQL host jobs -------------------------------------------------------------------
def test_jobs_defaults_and_targets() -> None:
    jobs = plan_jobs(inventory(pg()), ("patroni",))
    # patroni_conf unset: found on the host (the unit's ExecStart, then known paths).
    assert [(j.ip, j.patroni, j.patroni_conf, j.vip_conf, j.ship_tls) for j in jobs] == [
        ("10.0.0.5", True, None, None, True),
        ("10.0.0.6", True, None, None, True),
    ]
    assert jobs[0].tls_paths == TLS_DEFAULTS
    (job, _) = plan_jobs(inventory(pg(vip_manager_conf="/etc/vip.yml")), ("vip",))
    assert (job.patroni, job.vip_conf) == (False, "/etc/vip.yml")
    (job, _) = plan_jobs(inventory(pg(patroni_conf="/etc/p.yml")), ("patroni",))
    assert job.patroni_conf == "/etc/p.yml"


def test_jobs_use_tls_files_the_inventory_names() -> None:
    given = {"pg_etcd_cacert": "/pg/cert/ca.crt", "pg_etcd_cert": "/pg/cert/server.crt"}
    with pytest.raises(InputError, match="set all of"):
        plan_jobs(inventory(pg(**given)), ("patroni",))
    job = plan_jobs(inventory(pg(**given, pg_etcd_key="/pg/cert/server.key")), ("patroni",))[0]
    assert job.tls_paths == ("/pg/cert/ca.crt", "/pg/cert/server.crt", "/pg/cert/server.key")
    assert not job.ship_tls


@pytest.mark.parametrize("bad", ["relative/patroni.yml", "/pg/../etc/shadow", "/a b.yml"])
def test_jobs_refuse_odd_paths(bad: str) -> None:
    with pytest.raises(InputError, match="absolute path"):
        plan_jobs(inventory(pg(patroni_conf=bad)), ("patroni",))
