"""The planner's decisions from given snapshots: what changes, what (re)starts."""

from __future__ import annotations

import hashlib

import pytest
from tests.unit.factories import member, trio

from etcdsop.etcd import MemberInfo
from etcdsop.facts import HostFacts, RemoteDir, RemoteFile, parse_facts
from etcdsop.guards import create_refusal
from etcdsop.plan import conf_needs_restart, find_live, plan_host, unit_needs_restart
from etcdsop.render import UNIT, PeerRef, node_dirs, node_files

M = trio()[0]


def _files(m=M, init="new", ca=b"CA", cluster=None):  # type: ignore[no-untyped-def]
    peers = cluster or [PeerRef(x.name, x.peer_url) for x in trio()]
    return node_files(
        m,
        initial_cluster=peers,
        init=init,
        endpoints=[m.client_url],
        ca_pem=ca,
        cert_pem=b"CRT",
        key_pem=b"KEY",
    )


def _facts_with(files, *, active="active", enabled="enabled", data=True):  # type: ignore[no-untyped-def]
    remote = {
        f.path: RemoteFile(
            f.path,
            f.mode,
            f.owner,
            f.group,
            None if f.secret else f.content,
            hashlib.sha256(f.content).hexdigest(),
        )
        for f in files
    }
    dirs = {d.path: RemoteDir(d.path, d.mode, d.owner, d.group) for d in node_dirs(M)}
    return HostFacts(
        files=remote,
        dirs=dirs,
        etcd_version="3.4.23",
        has_data=data,
        active=active,
        enabled=enabled,
        etcd_user=True,
        os_id="debian",
    )


LIVE = MemberInfo(1, M.name, (M.peer_url,), (M.client_url,), False)


def test_fresh_host_installs_writes_everything_and_starts() -> None:
    plan = plan_host(M, _files(), node_dirs(M), HostFacts(), live=None, cluster_live=False)
    assert plan.install_package and plan.enable and plan.daemon_reload
    assert [c.kind for c in plan.changes] == ["create"] * 7
    assert len(plan.dirs) == 3
    assert plan.service == "start"


def test_converged_running_member_needs_nothing() -> None:
    files = _files()
    plan = plan_host(M, files, node_dirs(M), _facts_with(files), live=LIVE, cluster_live=True)
    assert not plan.changed
    assert plan.service == "none"


def test_runtime_conf_change_restarts() -> None:
    old = _files()
    new = _files(m=member(M.ip, 1, heartbeat_interval=200, election_timeout=2000))
    plan = plan_host(M, new, node_dirs(M), _facts_with(old), live=LIVE, cluster_live=True)
    assert [c.path for c in plan.changes] == ["/etc/etcd/etcd.conf"]
    assert "heartbeat-interval: 200" in plan.changes[0].diff
    assert plan.service == "restart"
    assert plan.reasons == ("etcd.conf changed",)


def test_bootstrap_only_change_rewrites_file_without_restart() -> None:
    old = _files()
    new = _files(init="existing", cluster=[PeerRef(M.name, M.peer_url)])
    plan = plan_host(M, new, node_dirs(M), _facts_with(old), live=LIVE, cluster_live=True)
    assert [c.path for c in plan.changes] == ["/etc/etcd/etcd.conf"]
    assert plan.service == "none"


def test_node_cert_rotation_needs_no_restart_but_new_ca_does() -> None:
    old = _files()
    rotated = [
        f if f.path != "/etc/etcd/server.crt" else type(f)(f.path, b"NEW", f.owner, f.group, f.mode)
        for f in old
    ]
    plan = plan_host(M, rotated, node_dirs(M), _facts_with(old), live=LIVE, cluster_live=True)
    assert plan.service == "none" and "certificate" in plan.changes[0].diff
    plan = plan_host(
        M, _files(ca=b"CA2"), node_dirs(M), _facts_with(old), live=LIVE, cluster_live=True
    )
    assert plan.service == "restart" and plan.reasons == ("CA changed",)


def test_secret_diffs_are_masked() -> None:
    old = _files()
    new = _files(m=member(M.ip, 1, root_password="Other.Pass"))
    plan = plan_host(M, new, node_dirs(M), _facts_with(old), live=LIVE, cluster_live=True)
    change = next(c for c in plan.changes if c.path == "/etc/etcd/etcd.pass")
    assert "Other.Pass" not in change.diff and "hidden" in change.diff
    assert plan.service == "none"


def test_mode_drift_is_fixed_without_restart() -> None:
    files = _files()
    facts = _facts_with(files)
    key = facts.files["/etc/etcd/server.key"]
    facts.files["/etc/etcd/server.key"] = RemoteFile(
        key.path, 0o644, "etcd", "etcd", None, key.sha256
    )
    plan = plan_host(M, files, node_dirs(M), facts, live=LIVE, cluster_live=True)
    assert [(c.path, c.kind) for c in plan.changes] == [("/etc/etcd/server.key", "attributes")]
    assert plan.service == "none"


def test_stopped_member_is_started_and_non_member_of_live_cluster_joins() -> None:
    files = _files()
    stopped = _facts_with(files, active="inactive")
    assert (
        plan_host(M, files, node_dirs(M), stopped, live=LIVE, cluster_live=True).service == "start"
    )
    assert (
        plan_host(M, files, node_dirs(M), HostFacts(), live=None, cluster_live=True).service
        == "join"
    )


@pytest.mark.parametrize(
    ("old", "new", "restart"),
    [
        (b"name: a\nheartbeat-interval: 100\n", b"name: a\nheartbeat-interval: 100\n", False),
        (
            b"name: a\ninitial-cluster-state: new\n",
            b"name: a\ninitial-cluster-state: existing\n",
            False,
        ),
        (b"name: a\n", b"name: b\n", True),
        (b"{{ not yaml", b"name: a\n", True),
        (None, b"name: a\n", True),
    ],
)
def test_conf_needs_restart(old: bytes | None, new: bytes, restart: bool) -> None:
    assert conf_needs_restart(old, new) is restart


def _with_unit(files, unit: bytes):  # type: ignore[no-untyped-def]
    return [f if f.path != UNIT else type(f)(f.path, unit, f.owner, f.group, f.mode) for f in files]


def test_a_unit_whose_start_timeout_alone_changed_is_reloaded_without_restart() -> None:
    """A member whose unit an older etcdsop wrote (TimeoutStartSec=60)."""
    files = _files()
    unit = next(f.content for f in files if f.path == UNIT)
    old = unit.replace(b"TimeoutStartSec=0", b"TimeoutStartSec=60")
    old = b"\n".join(line for line in old.split(b"\n") if not line.startswith(b"# "))
    assert old != unit
    plan = plan_host(
        M, files, node_dirs(M), _facts_with(_with_unit(files, old)), live=LIVE, cluster_live=True
    )
    assert [c.path for c in plan.changes] == [UNIT]
    assert plan.daemon_reload and plan.service == "none" and plan.reasons == ()


def test_a_unit_change_etcd_reads_at_start_restarts() -> None:
    files = _files()
    unit = next(f.content for f in files if f.path == UNIT)
    old = unit.replace(b"LimitNOFILE=65536", b"LimitNOFILE=1024")
    plan = plan_host(
        M, files, node_dirs(M), _facts_with(_with_unit(files, old)), live=LIVE, cluster_live=True
    )
    assert plan.daemon_reload and plan.service == "restart" and plan.reasons == ("unit changed",)


@pytest.mark.parametrize(
    ("old", "new", "restart"),
    [
        (b"[Service]\nTimeoutStartSec=60\n", b"[Service]\n# why\nTimeoutStartSec=0\n", False),
        (b"[Unit]\nDescription=a\n", b"[Unit]\nDescription=b\n", False),
        (b"[Service]\nTimeoutStopSec=60\n", b"[Service]\nTimeoutStopSec=90\n", False),
        (b"[Service]\nUser=etcd\n", b"[Service]\nUser=root\n", True),
        (b"[Service]\nExecStart=/a\n", b"[Service]\nExecStart=/b\n", True),
        (b"[Service]\nUser=etcd\n", b"[Service]\nUser=etcd\nLimitNOFILE=1\n", True),
        (None, b"[Service]\n", True),
    ],
)
def test_unit_needs_restart(old: bytes | None, new: bytes, restart: bool) -> None:
    assert unit_needs_restart(old, new) is restart


def test_find_live_matches_unstarted_member_by_peer_url() -> None:
    unstarted = MemberInfo(9, "", (M.peer_url,), (), True)
    other = MemberInfo(8, "etcd-1", ("https://10.10.10.99:2380",), (), False)
    assert find_live(M, [other, unstarted]) is unstarted


def test_parse_facts_reads_script_output() -> None:
    text = (
        "file /etc/etcd/etcd.conf 644 etcd etcd b64 bmFtZTogZXRjZC0xCg==\n"
        "file /etc/etcd/etcd.pass 640 root etcd sha256 abc123\n"
        "dir /data/etcd 700 etcd etcd\n"
        "binary /usr/bin/etcd 3.4.23\n"
        "datadir yes\nactive active\nenabled enabled\nsince 12345\nmainpid 77\nuser etcd\n"
        "os debian \n"
    )
    facts = parse_facts(text)
    assert facts.files["/etc/etcd/etcd.conf"].content == b"name: etcd-1\n"
    assert facts.files["/etc/etcd/etcd.pass"].content is None
    assert facts.files["/etc/etcd/etcd.pass"].sha256 == "abc123"
    assert facts.dirs["/data/etcd"].mode == 0o700
    assert (facts.etcd_version, facts.has_data, facts.running) == ("3.4.23", True, True)
    assert (facts.active_since, facts.main_pid, facts.debian_like) == (12345, 77, True)
    bare = parse_facts("active inactive\nenabled disabled\n")
    assert bare.etcd_version is None and not bare.running and not bare.has_data


# -- guards ---------------------------------------------------------------------------
def _conf_facts(conf: bytes, *, active: str = "active", data: bool = True) -> HostFacts:
    f = RemoteFile(
        "/etc/etcd/etcd.conf", 0o644, "etcd", "etcd", conf, hashlib.sha256(conf).hexdigest()
    )
    return HostFacts(files={f.path: f}, etcd_version="3.4.23", has_data=data, active=active)


def test_guard_refuses_a_host_serving_another_cluster() -> None:
    why = create_refusal(M, _conf_facts(b"name: x-1\ninitial-cluster-token: other\n"), None, False)
    assert why and "'other'" in why and "etcdsop rm 10.10.10.10" in why


def test_guard_refuses_unmanaged_running_etcd() -> None:
    facts = HostFacts(etcd_version="3.4.23", active="active")
    why = create_refusal(M, facts, None, False)
    assert why and "did not configure" in why


def test_guard_refuses_stale_data_dir_outside_live_cluster() -> None:
    facts = _conf_facts(b"name: etcd-1\ninitial-cluster-token: etcd\n", active="inactive")
    why = create_refusal(M, facts, None, True)
    assert why and "not a member of the live cluster" in why and "etcd_init=existing" in why


def test_guard_asks_for_existing_when_joining_a_live_cluster() -> None:
    why = create_refusal(M, HostFacts(), None, True)
    assert why and "-e etcd_init=existing" in why
    joiner = member(M.ip, 1, init="existing")
    assert create_refusal(joiner, HostFacts(), None, True) is None


def test_guard_accepts_own_member_and_stopped_own_cluster() -> None:
    facts = _conf_facts(b"name: etcd-1\ninitial-cluster-token: etcd\n")
    assert create_refusal(M, facts, LIVE, True) is None
    stopped = _conf_facts(b"name: etcd-1\ninitial-cluster-token: etcd\n", active="inactive")
    assert create_refusal(M, stopped, None, False) is None
    renamed = _conf_facts(b"name: etcd-9\ninitial-cluster-token: etcd\n", active="inactive")
    assert "etcd-9" in (create_refusal(M, renamed, None, False) or "")
