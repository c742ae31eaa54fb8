"""Host keys over real SSH: accept-new by default, --strict-host-keys, changed keys refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
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
