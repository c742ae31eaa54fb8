"""Host keys over real SSH: accept-new by default, --strict-host-keys, changed keys refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import Bed, run_cli

pytestmark = pytest.mark.e2e


def test_host_keys_accept_new_strict_and_changed(clean: Bed, tmp_path: Path) -> None:
    ip = clean.ips[0]
    known = tmp_path / "known_hosts"
    inventory = clean.inventory(
        tmp_path,
        [ip],
        host_vars={ip: {"ansible_ssh_common_args": f"-o UserKnownHostsFile={known}"}},
    )

    proc = run_cli("create", "-i", str(inventory), "--dry-run", "--strict-host-keys", check=False)
    assert proc.returncode == 2, proc.stderr
    assert ip in proc.stderr and "strict-host-keys" in proc.stderr
    assert not known.exists()

    run_cli("create", "-i", str(inventory), "--dry-run")  # accept-new records the key
    recorded = known.read_text()
    assert recorded.startswith(f"{ip} ") and recorded.count("\n") == 1
    assert known.stat().st_mode & 0o777 == 0o600
    run_cli("create", "-i", str(inventory), "--dry-run", "--strict-host-keys")
    assert known.read_text() == recorded  # known now: nothing added

    # A changed key (same type, other key) is refused with the fix, even without strict.
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    other = (tmp_path / "k.pub").read_text().split()[1]
    key_type = recorded.split()[1]
    assert key_type == "ssh-ed25519"
    known.write_text(f"{ip} ssh-ed25519 {other}\n")
    proc = run_cli("create", "-i", str(inventory), "--dry-run", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "CHANGED" in proc.stderr and f"ssh-keygen -f {known} -R" in proc.stderr
    assert known.read_text() == f"{ip} ssh-ed25519 {other}\n"


LOGIN_USER = (
    "id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user};"
    " install -d -m 700 -o {user} -g {user} /home/{user}/.ssh;"
    " install -m 600 -o {user} -g {user} /root/.ssh/authorized_keys /home/{user}/.ssh/;"
)


def add_login_user(bed: Bed, ips: list[str], user: str, *, sudo: bool) -> None:
    """A login with the sandbox key; with passwordless sudo or none at all."""
    script = LOGIN_USER.format(user=user)
    if sudo:
        script += f" echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{user};"
        script += f" chmod 440 /etc/sudoers.d/{user}"
    else:
        script += f" rm -f /etc/sudoers.d/{user}"
    bed.each(ips, script)


def test_non_root_user_works_through_sudo(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:3]
    add_login_user(clean, ips, "ops", sudo=True)
    inventory = clean.inventory(tmp_path, ips, group_vars={"ansible_user": "ops"})

    proc = run_cli("create", "-i", str(inventory), "-v", "--json")
    assert "sudo -n -- " in proc.stderr
    assert sorted(json.loads(proc.stdout)["started"]) == sorted(ips)
    status = json.loads(run_cli("status", "-i", str(inventory), "--json").stdout)
    assert status["healthy"] is True and status["voters"] == 3
    # Files written through sudo still get their owners and modes.
    modes = clean.ssh(ips[0], "stat -c '%U:%G %a' /etc/etcd/etcd.pass /etc/etcd/server.key")
    assert modes.stdout.split("\n")[:2] == ["root:etcd 640", "etcd:etcd 600"]

    run_cli("rm", "-i", str(inventory), "--yes", "--no-backup")
    for ip in ips:
        assert clean.ssh(ip, "test -e /etc/etcd", check=False).returncode != 0
        assert clean.ssh(ip, "systemctl is-active etcd", check=False).stdout.strip() != "active"


def test_user_without_sudo_is_refused_before_any_change(clean: Bed, tmp_path: Path) -> None:
    ips = clean.ips[:2]
    add_login_user(clean, ips, "nosudo", sudo=False)
    inventory = clean.inventory(tmp_path, ips, host_vars={ips[1]: {"ansible_user": "nosudo"}})

    proc = run_cli("create", "-i", str(inventory), check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{ips[1]}: nosudo may not run commands as root" in proc.stderr
    assert "Traceback" not in proc.stderr
    for ip in ips:
        assert clean.ssh(ip, "test -e /etc/etcd", check=False).returncode != 0


def test_ssh_config_and_agent_supply_what_the_inventory_leaves_out(
    clean: Bed, tmp_path: Path
) -> None:
    """No user, key or known_hosts in the inventory: ~/.ssh/config, then ssh-agent, give them."""
    ip = clean.ips[0]
    inventory = clean.inventory(tmp_path, [ip])
    doc = yaml.safe_load(inventory.read_text())
    doc["all"]["vars"] = {}
    inventory.write_text(yaml.safe_dump(doc))
    known = tmp_path / "known_hosts"
    config = tmp_path / "ssh_config"
    key = clean.paths.ssh_key
    config.write_text(
        f"Host {ip}\n  User root\n  IdentityFile {key}\n  UserKnownHostsFile {known}\n"
    )
    run_cli("create", "-i", str(inventory), "--dry-run", env={"ETCDSOP_SSH_CONFIG": str(config)})
    assert known.read_text().startswith(f"{ip} ssh-ed25519 ")

    # The key only in an agent: the config names user and known_hosts, not the key.
    config.write_text(f"Host {ip}\n  User root\n  UserKnownHostsFile {known}\n")
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env = dict(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", agent.stdout))
    try:
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **env}, check=True)
        run_cli(
            "create",
            "-i",
            str(inventory),
            "--dry-run",
            env={**env, "ETCDSOP_SSH_CONFIG": str(config)},
        )
        proc = run_cli(
            "create",
            "-i",
            str(inventory),
            "--dry-run",
            check=False,
            env={"ETCDSOP_SSH_CONFIG": str(config)},
        )  # without the agent: no key at all
        assert proc.returncode == 2
        assert f"{ip}: no SSH key to log in to root@{ip}:22 with" in proc.stderr
    finally:
        subprocess.run(["kill", env["SSH_AGENT_PID"]], check=False)
