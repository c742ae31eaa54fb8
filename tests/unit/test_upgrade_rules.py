"""`etcdsop upgrade`'s pure rules: versions, the target, the package version, the order,
what a host's package facts say (no host, no etcd: data in, decision out)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from etcdsop.errors import GuardRefused, InputError
from etcdsop.ops.packages import (
    MARK,
    install_outcome,
    other_changes,
    parse_facts,
    restore_guard,
    wait_dpkg_idle,
)
from etcdsop.remote import CommandResult
from etcdsop.versions import (
    Candidate,
    Target,
    Version,
    auth_gated,
    check_before_36,
    check_not_older,
    choose_target,
    cluster_reached,
    debian_key,
    next_member,
    parse_target,
    patroni_refusal,
    pick_package_version,
    planned_order,
)

V = Version.parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.5.30", Version(3, 5, 30)),
        ("v3.4.23", Version(3, 4, 23)),
        ("3.4.23-4+b4", Version(3, 4, 23)),  # Debian's, as apt-cache madison prints it
        ("1:3.5.30-2", Version(3, 5, 30)),  # with an epoch
        ("3.5.0", Version(3, 5, 0)),  # GET /version's etcdcluster
        ("3.6", Version(3, 6, 0)),
        ("not_decided", None),  # etcdcluster right after a start
        ("", None),
    ],
)
def test_versions_parse_from_etcd_and_the_package_manager(
    text: str, expected: Version | None
) -> None:
    assert Version.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.5", Target((3, 5))),
        ("v3.5", Target((3, 5))),
        ("3.5.30", Target((3, 5), Version(3, 5, 30))),
    ],
)
def test_to_takes_a_minor_or_an_exact_version(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["latest", "3", "3.5.30-2", "3.5.x", "", "3.5.30.1"])
def test_anything_else_for_to_is_bad_input(text: str) -> None:
    with pytest.raises(InputError, match="--to"):
        parse_target(text)


def test_the_default_target_is_the_minor_after_the_cluster_version() -> None:
    assert choose_target(None, Version(3, 4, 0)) == Target((3, 5))
    assert choose_target(None, Version(3, 5, 0)) == Target((3, 6))


def test_the_cluster_line_itself_is_a_target_a_rerun_or_a_patch_release() -> None:
    assert choose_target(parse_target("3.5"), Version(3, 5, 0)) == Target((3, 5))


@pytest.mark.parametrize(
    ("to", "cluster", "said"),
    [
        ("3.6", "3.4.0", "one minor at a time: run etcdsop upgrade --to 3.5 first"),
        ("3.6.1", "3.4.0", "one minor at a time"),
        ("3.4", "3.5.0", "downgrades"),
        ("4.0", "3.5.0", "within etcd 3"),
    ],
)
def test_a_jump_of_two_minors_or_a_downgrade_is_refused_as_input(
    to: str, cluster: str, said: str
) -> None:
    cluster_version = V(cluster)
    assert cluster_version is not None
    with pytest.raises(InputError, match=said):
        choose_target(parse_target(to), cluster_version)


def test_no_member_is_taken_to_an_older_version() -> None:
    check_not_older(Version(3, 5, 30), {"etcd-1": Version(3, 4, 23), "etcd-2": Version(3, 5, 30)})
    with pytest.raises(InputError, match=r"etcd-2 runs 3\.5\.30"):
        check_not_older(
            Version(3, 5, 16), {"etcd-1": Version(3, 4, 23), "etcd-2": Version(3, 5, 30)}
        )


def test_debian_versions_sort_by_upstream_then_revision() -> None:
    versions = ["3.5.30-1", "3.5.16-4", "3.5.30-2", "3.5.30-10", "3.4.23-4+b4"]
    assert sorted(versions, key=debian_key) == [
        "3.4.23-4+b4",
        "3.5.16-4",
        "3.5.30-1",
        "3.5.30-2",
        "3.5.30-10",
    ]


def test_the_highest_version_of_the_line_that_every_host_has_is_installed() -> None:
    available = {
        "10.0.0.1": ["3.5.30-2", "3.5.16-4", "3.4.23-4+b4"],
        "10.0.0.2": ["3.5.16-4", "3.4.23-4+b4"],  # no 3.5.30 there: all go to 3.5.16
    }
    assert pick_package_version(Target((3, 5)), available) == "3.5.16-4"
    assert pick_package_version(Target((3, 5)), {"h": ["3.5.30-1", "3.5.30-2"]}) == "3.5.30-2"


def test_an_exact_target_picks_that_upstream_version() -> None:
    target = Target((3, 5), Version(3, 5, 16))
    assert pick_package_version(target, {"h": ["3.5.30-2", "3.5.16-4"]}) == "3.5.16-4"


def test_a_host_without_the_version_is_refused_naming_it_and_what_it_has() -> None:
    available = {"10.0.0.1": ["3.5.30-2", "3.4.23-4+b4"], "10.0.0.2": ["3.4.23-4+b4"]}
    with pytest.raises(GuardRefused) as caught:
        pick_package_version(Target((3, 5)), available)
    assert "not available from the package manager on 10.0.0.2 (10.0.0.2 has 3.4.23-4+b4)" in (
        caught.value.message
    )
    assert "nothing was changed" in caught.value.message


def test_hosts_with_no_version_in_common_are_refused() -> None:
    with pytest.raises(GuardRefused, match=r"no version of etcd 3\.5 is available on every host"):
        pick_package_version(Target((3, 5)), {"a": ["3.5.30-2"], "b": ["3.5.16-4"]})


def test_36_needs_every_member_on_3_5_26_or_later() -> None:
    with pytest.raises(GuardRefused, match=r"3\.5\.26 or later first \(etcd-2 runs 3\.5\.16\)"):
        check_before_36(
            Version(3, 6, 0), {"etcd-1": Version(3, 5, 30), "etcd-2": Version(3, 5, 16)}
        )
    warnings = check_before_36(Version(3, 6, 0), {"etcd-1": Version(3, 5, 30)})
    assert warnings == ["etcd-1 runs 3.5.30: the 3.6 upgrade guide advises 3.5.32 or later first"]
    assert check_before_36(Version(3, 6, 0), {"etcd-1": Version(3, 5, 32)}) == []
    assert check_before_36(Version(3, 5, 30), {"etcd-1": Version(3, 4, 23)}) == []


def test_learners_then_followers_then_the_leader() -> None:
    pending = [Candidate(1, "etcd-1"), Candidate(2, "etcd-2"), Candidate(3, "etcd-3", True)]
    assert [c.name for c in planned_order(pending, leader=1)] == ["etcd-3", "etcd-2", "etcd-1"]
    assert next_member(pending, leader=2) == Candidate(3, "etcd-3", True)
    assert next_member([Candidate(1, "etcd-1")], leader=1) == Candidate(1, "etcd-1")
    assert next_member([], leader=1) is None


def test_a_leader_change_mid_run_moves_the_new_leader_to_the_end() -> None:
    pending = [Candidate(2, "etcd-2"), Candidate(3, "etcd-3")]
    assert next_member(pending, leader=3) == Candidate(2, "etcd-2")
    assert next_member(pending, leader=2) == Candidate(3, "etcd-3")


def test_cluster_version_reached_once_on_the_target_line() -> None:
    assert cluster_reached("3.5.0", Version(3, 5, 30))
    assert not cluster_reached("3.4.0", Version(3, 5, 30))
    assert not cluster_reached("not_decided", Version(3, 5, 30))


BOOKWORM = """apt yes
own /usr/bin/etcd etcd-server
own /usr/bin/etcdctl etcd-client
installed etcd-server 3.4.23-4+b4
madison etcd-server 3.5.30-2
madison etcd-server 3.4.23-4+b4
installed etcd-client 3.4.23-4+b4
madison etcd-client 3.5.30-2
madison etcd-client 3.4.23-4+b4
etcdutl no
"""


def test_a_bookworm_host_offers_what_both_of_its_packages_have() -> None:
    facts = parse_facts("10.0.0.1", BOOKWORM)
    assert facts.refusal() is None
    assert facts.packages == ["etcd-client", "etcd-server"]
    assert facts.installed == {"etcd-server": "3.4.23-4+b4", "etcd-client": "3.4.23-4+b4"}
    assert facts.installable() == ["3.4.23-4+b4", "3.5.30-2"]
    lacking = parse_facts("h", BOOKWORM.replace("madison etcd-client 3.5.30-2\n", ""))
    assert lacking.installable() == ["3.4.23-4+b4"]  # etcd-client has no 3.5.30 there


def test_hosts_etcdsop_cannot_upgrade_through_apt_are_refused_with_why() -> None:
    assert "has no apt" in (parse_facts("h", "apt no\n").refusal() or "")
    unowned = parse_facts("h", "apt yes\nown /usr/bin/etcd -\n")
    assert "/usr/bin/etcd belong(s) to no package" in (unowned.refusal() or "")
    assert "no /usr/bin/etcd" in (parse_facts("h", "apt yes\n").refusal() or "")


def test_v2_and_experimental_lines_of_etcd_conf_are_kept_for_the_36_check() -> None:
    facts = parse_facts("h", BOOKWORM + "conf enable-v2: true\nconf experimental-x: 1\n")
    assert facts.conf_lines == ["enable-v2: true", "experimental-x: 1"]


@pytest.mark.parametrize(
    ("version", "gated"),
    [
        ("3.4.23", False),
        ("3.4.42", True),
        ("3.5.16", False),
        ("3.5.27", False),
        ("3.5.28", True),
        ("3.5.30", True),
        ("3.6.8", False),
        ("3.6.9", True),
        ("3.7.0", True),
    ],
)
def test_the_etcd_releases_that_ask_a_login_for_the_member_list(version: str, gated: bool) -> None:
    parsed = V(version)
    assert parsed is not None
    assert auth_gated(parsed) is gated


def test_a_patroni_older_than_4_1_1_refuses_an_auth_gated_target() -> None:
    old = {"10.0.0.5 (pg-test)": Version(3, 0, 2), "10.0.0.6 (pg-test)": Version(4, 1, 1)}
    said = patroni_refusal(Version(3, 5, 30), old)
    assert said is not None
    assert "Patroni 3.0.2 on 10.0.0.5 (pg-test) would lose etcd" in said
    assert "upgrade Patroni first, or give --to 3.5.27 or older; nothing was changed" in said
    assert patroni_refusal(Version(3, 5, 16), old) is None  # before the CVE fixes
    assert patroni_refusal(Version(3, 5, 30), {"h": Version(4, 1, 1)}) is None


SIMULATION = """NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Inst etcd-server [3.4.23-4+b4] (3.5.16-4 etcdsop-sandbox:localhost [amd64])
Inst etcd-client [3.4.23-4+b4] (3.5.16-4 etcdsop-sandbox:localhost [amd64])
Inst libnew (1.0 Debian:12 [amd64])
Conf etcd-server (3.5.16-4 etcdsop-sandbox:localhost [amd64])
"""


def test_an_install_of_etcds_packages_and_new_dependencies_changes_nothing_else() -> None:
    assert other_changes(["etcd-client", "etcd-server"], SIMULATION) == []


def test_a_removal_or_another_package_upgraded_under_policy_rc_d_is_named() -> None:
    simulation = (
        SIMULATION
        + "Remv pg-ha-agent [1.0]\n"
        + "Inst libc6 [2.36-9] (2.41-12 Debian:13 [amd64])\n"
        + "E: Held packages were changed and -y was used without --allow-change-held-packages.\n"
    )
    assert other_changes(["etcd-client", "etcd-server"], simulation) == [
        "remove pg-ha-agent",
        "upgrade libc6 2.36-9",
        "Held packages were changed and -y was used without --allow-change-held-packages.",
    ]


def test_a_policy_rc_d_an_interrupted_install_left_is_seen() -> None:
    assert parse_facts("h", "apt yes\nguard left\n").guard_left
    assert not parse_facts("h", "apt yes\n").guard_left


def test_a_killed_install_is_not_reported_as_a_changed_unit() -> None:
    assert install_outcome(10) == "failed"
    assert install_outcome(11) == "left etcd's unit or etcd.conf changed"
    assert install_outcome(137) == "was interrupted (exit 137)"


class LocalHost:
    """Runs the scripts etcdsop builds for a host here, with a fake lslocks on PATH and
    policy-rc.d under tmp: what the shell does, not what a function was called with."""

    label = "h1"

    def __init__(self, tmp: Path, locks: str, *, lslocks: str = "lslocks") -> None:
        self.tmp, self.lslocks = tmp, lslocks
        (tmp / "bin").mkdir(exist_ok=True)
        fake = tmp / "bin" / "lslocks"
        fake.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(locks)}\n")
        fake.chmod(0o755)

    def run(self, argv: list[str], *, timeout: float = 120.0, check: bool = True) -> CommandResult:
        assert timeout > 0
        argv = [
            a.replace("/usr/sbin/policy-rc.d", str(self.tmp / "policy-rc.d")).replace(
                "command -v lslocks", f"command -v {self.lslocks}"
            )
            for a in argv
        ]
        env = {**os.environ, "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}"}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        assert proc.returncode == 0 or not check, proc.stderr
        return CommandResult(self.label, argv[0], proc.returncode, proc.stdout, proc.stderr)


# lslocks' raw lines as on a Debian host while apt-get runs a package's postinst.
APT_RUNNING = (
    "-1 \\x20 /run/other\n713 apt-get /var/lib/dpkg/lock-frontend\n737 dpkg /var/lib/dpkg/lock\n"
)


def _ours(tmp: Path) -> Path:
    guard = tmp / "policy-rc.d"
    guard.write_text(f"#!/bin/sh\n{MARK}\nexit 101\n")
    (tmp / "policy-rc.d.etcdsop-saved").write_text("#!/bin/sh\nexit 0\n")
    return guard


def test_a_running_apt_is_named_and_no_apt_is_waited_for_not_at_all(tmp_path: Path) -> None:
    busy = LocalHost(tmp_path, APT_RUNNING)
    assert wait_dpkg_idle(busy, 0) == "apt-get (pid 713) holds /var/lib/dpkg/lock-frontend"  # type: ignore[arg-type]
    began = time.monotonic()
    assert wait_dpkg_idle(busy, 2) is not None  # type: ignore[arg-type]
    assert 1.5 <= time.monotonic() - began < 10  # bounded by the timeout given
    only_dpkg = LocalHost(tmp_path, "737 dpkg /var/lib/dpkg/lock\n")
    assert wait_dpkg_idle(only_dpkg, 0) == "dpkg (pid 737) holds /var/lib/dpkg/lock"  # type: ignore[arg-type]
    idle = LocalHost(tmp_path, "12 cron /run/crond.pid\n")
    assert wait_dpkg_idle(idle, 30) is None  # type: ignore[arg-type]


def test_our_policy_rc_d_is_kept_while_a_dpkg_runs_and_put_back_once_none_does(
    tmp_path: Path,
) -> None:
    guard = _ours(tmp_path)
    kept = restore_guard(LocalHost(tmp_path, APT_RUNNING))  # type: ignore[arg-type]
    assert kept is not None and "apt-get (pid 713) holds /var/lib/dpkg/lock-frontend" in kept
    assert MARK in guard.read_text()  # still ours: no service restarts
    assert restore_guard(LocalHost(tmp_path, "")) is None  # type: ignore[arg-type]
    assert guard.read_text() == "#!/bin/sh\nexit 0\n"  # the one set aside, back
    assert not (tmp_path / "policy-rc.d.etcdsop-saved").exists()


def test_a_host_without_lslocks_counts_as_busy(tmp_path: Path) -> None:
    host = LocalHost(tmp_path, "", lslocks="etcdsop-no-such-lslocks")
    assert "no lslocks" in (wait_dpkg_idle(host, 0) or "")  # type: ignore[arg-type]
