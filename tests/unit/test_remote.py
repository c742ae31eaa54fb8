"""Pure parts of the SSH transport."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from etcdsop.model import SshTarget
from etcdsop.remote import SshOptions, _sudo_refused, resolve, without_stack_traces


@pytest.mark.parametrize(
    ("stderr", "refused"),
    [
        ("sudo: a password is required\n", True),
        ("sudo: ops is not in the sudoers file.  This incident will be reported.\n", True),
        ("Sorry, user ops is not allowed to execute '/bin/sh' as root on h.\n", False),
        ("sudo: user ops is not allowed to execute 'sh' as root\n", True),
        ("etcdctl: context deadline exceeded\n", False),
        ("", False),
        ("warning\nsudo: a password is required\n", False),  # only sudo's own first line
    ],
)
def test_sudo_refusal_is_recognised_from_its_first_line(stderr: str, refused: bool) -> None:
    assert _sudo_refused(stderr) is refused


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(
        "Host 10.0.0.5\n"
        "  HostName jump.example\n  Port 2222\n  User ops\n"
        "  IdentityFile ~/.ssh/ops_key\n  UserKnownHostsFile /tmp/kh /tmp/kh2\n"
        "  StrictHostKeyChecking yes\n"
        "Host *\n  User fallback\n"
    )
    return path


def test_ssh_config_fills_what_the_inventory_leaves_open(tmp_path: Path) -> None:
    options = SshOptions(ssh_config=write_config(tmp_path))
    r = resolve(SshTarget(address="10.0.0.5"), options)
    assert (r.hostname, r.port, r.user) == ("jump.example", 2222, "ops")
    assert r.key_files == (os.path.expanduser("~/.ssh/ops_key"),)
    assert (r.known_hosts, r.strict) == (Path("/tmp/kh"), True)


def test_inventory_vars_win_over_ssh_config_and_defaults_apply(tmp_path: Path) -> None:
    options = SshOptions(ssh_config=write_config(tmp_path))
    target = SshTarget(
        address="10.0.0.5",
        port=22,
        user="root",
        key_file="/keys/k",
        known_hosts_file="/kh",
        strict_host_key_checking="accept-new",
    )
    r = resolve(target, options)
    assert (r.hostname, r.port, r.user, r.key_files) == ("jump.example", 22, "root", ("/keys/k",))
    assert (r.known_hosts, r.strict) == (Path("/kh"), False)
    other = resolve(SshTarget(address="10.0.0.6"), options)
    assert (other.hostname, other.port, other.user, other.key_files) == (
        "10.0.0.6",
        22,
        "fallback",
        (),
    )
    assert other.known_hosts == Path(os.path.expanduser("~/.ssh/known_hosts"))
    assert resolve(SshTarget(address="10.0.0.6"), SshOptions(strict_host_keys=True)).strict


def test_journal_keeps_why_a_go_program_panicked_not_its_goroutine_dump() -> None:
    journal = [
        '{"level":"info","msg":"starting"}',
        "create wal error: no space left on device",
        "panic: create wal error: no space left on device",
        "",
        "goroutine 1 [running]:",
        "github.com/coreos/pkg/capnslog.(*PackageLogger).Panicf(0x0?, {0x102c2dd?, 0x15?})",
        "        github.com/coreos/pkg/capnslog/pkg_logger.go:88 +0xb4",
        "main.main()",
        "        go.etcd.io/etcd/main.go:28 +0x17",
        "etcd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT",
    ]
    assert without_stack_traces(journal) == [
        '{"level":"info","msg":"starting"}',
        "create wal error: no space left on device",
        "panic: create wal error: no space left on device",
        "etcd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT",
    ]
