"""End-to-end fixtures: real hosts (systemd-nspawn), real sshd, real etcd.

The session boots its own sandbox (subnet 198.18.2.0/24, its own state dir) so a
developer's `make demo` sandbox is left alone. Every test starts from hosts with
no trace of etcd configuration or data.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdsop import sandbox
from etcdsop.inventory.masking import is_secret
from etcdsop.sandbox.rootfs import POSTGRES_PACKAGES

# Under pytest-xdist (`make test` runs two workers) each worker has its own sandbox:
# worker N on subnet 2+N, in its own state dir. ETCDSOP_TEST_ETCD=3.5 runs on etcd 3.5
# hosts, in sandboxes of their own (10 subnets up), so 3.4 ones may stay up beside them.
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
ETCD = os.environ.get("ETCDSOP_TEST_ETCD", "3.4")
_OTHER_ETCD = ETCD != "3.4"
SANDBOX_DIR = Path(
    os.environ.get("ETCDSOP_TEST_SANDBOX_DIR", "/var/lib/etcdsop/test-sandbox")
    + (f"-etcd{ETCD}" if _OTHER_ETCD else "")
    + (f"-w{WORKER}" if WORKER else "")
)
SUBNET_INDEX = int(os.environ.get("ETCDSOP_TEST_SUBNET", "2")) + WORKER + (10 if _OTHER_ETCD else 0)
# One base for every e2e test, the one of `sandbox up --with-postgres`: real Patroni and
# vip-manager clients too (never auto-started), and sudo for the non-root login tests.
PG_PACKAGES = POSTGRES_PACKAGES
HOST_COUNT = 6
PASSWORD = "Test.Root.Pw-7f3a"

WIPE = (
    "systemctl disable --now etcd >/dev/null 2>&1; systemctl reset-failed etcd >/dev/null 2>&1;"
    " rm -rf /etc/etcd /data/etcd /var/lib/etcd/* /etc/systemd/system/etcd.service"
    " /etc/profile.d/etcdctl.sh /tmp/etcdsop-* /run/etcdsop; systemctl daemon-reload; true"
)


@dataclass
class Bed(sandbox.Shell):
    """The sandbox as the tests see it: its hosts, and ssh/each/put to them."""

    ips: list[str] = field(default_factory=list)

    def wipe(self, ips: Sequence[str] | None = None) -> None:
        self.each(list(ips or self.ips), WIPE)

    def inventory(
        self,
        where: Path,
        members: Sequence[str],
        *,
        group_vars: dict[str, Any] | None = None,
        host_vars: dict[str, dict[str, Any]] | None = None,
        extra_hosts: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """A Pigsty-shaped inventory; members get etcd_seq by their position + 1."""
        hosts: dict[str, dict[str, Any]] = {}
        for seq, ip in enumerate(members, start=1):
            hosts[ip] = {"etcd_seq": seq, **(host_vars or {}).get(ip, {})}
        hosts.update(extra_hosts or {})
        doc = {
            "all": {
                "children": {
                    "etcd": {
                        "hosts": hosts,
                        "vars": {
                            "etcd_cluster": "etcd",
                            "etcd_root_password": PASSWORD,
                            **(group_vars or {}),
                        },
                    }
                },
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.paths.ssh_key),
                    "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.paths.known_hosts}"
                    " -o StrictHostKeyChecking=accept-new",
                },
            }
        }
        path = where / "pigsty.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        _SEEN.note_inventory(path, doc)
        return path


class _Seen:
    """What a module's commands wrote where a secret must never be: the audit logs
    beside their inventories and their --json output; and the secrets they were given."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.dirs: set[Path] = set()
        self.json_outputs: list[str] = []
        self.secrets: set[str] = {PASSWORD}
        self.changing = 0

    def note_inventory(self, path: Path, doc: object) -> None:
        self.dirs.add(path.parent.absolute())
        self.secrets.update(_secret_values(doc))

    def note_args(self, args: Sequence[str]) -> None:
        for flag, value in itertools.pairwise(args):
            if flag in ("-i", "--inventory"):
                self.dirs.add(Path(value).parent.absolute())
        for word in args:  # key=value anywhere: -e X, -eX, --extra-vars=X, k=v lists
            for key, value in re.findall(r"([A-Za-z_]\w*)=([^\s'\"]+)", word):
                if is_secret(key):
                    self.secrets.add(value)
        self.changing += bool(args) and args[0] in _CHANGING and "--dry-run" not in args

    def leaks(self) -> tuple[list[str], int]:
        """(where a secret was found, how many logs and outputs were read)."""
        secrets = [s for s in self.secrets if len(s) >= 6]  # "x" is in every log
        texts = [(f"--json output #{i}", t) for i, t in enumerate(self.json_outputs)]
        for d in sorted(self.dirs):
            log = d / "files" / "log" / "etcdsop.jsonl"
            if log.is_file():
                texts.append((str(log), log.read_text()))
        found = [f"{where}: {s!r}" for where, text in texts for s in secrets if s in text]
        return found, len(texts)


def _secret_values(value: object) -> set[str]:
    if isinstance(value, dict):
        out: set[str] = set()
        for key, item in value.items():
            if is_secret(key) and isinstance(item, str | int):
                out.add(str(item))
            else:
                out |= _secret_values(item)
        return out
    if isinstance(value, list):
        return set().union(*(_secret_values(v) for v in value)) if value else set()
    return set()


_CHANGING = {"create", "add", "promote", "rm", "reload", "rbac", "defrag", "restore", "recover"}
_SEEN = _Seen()


@pytest.fixture(scope="module", autouse=True)
def _no_secret_in_audit_log_or_json() -> Iterator[None]:
    """After every module: no secret a test gave in the audit logs or --json output.
    A module that ran a changing command must have left a log to read (never vacuous)."""
    _SEEN.reset()
    yield
    found, read = _SEEN.leaks()
    assert not found, "secret written: " + "; ".join(found)
    assert read or not _SEEN.changing, "changing commands ran, but no audit log was found"


def spawn(*args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """The real command in the background, its progress (stderr) to read line by line;
    wide, so that a progress line is one line whatever COLUMNS says."""
    _SEEN.note_args(args)
    return subprocess.Popen(
        [sys.executable, "-m", "etcdsop", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def run_cli(
    *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command, in its own process: real exit codes, real argv."""
    _SEEN.note_args(args)
    proc = subprocess.run(
        [sys.executable, "-m", "etcdsop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if "--json" in args:
        _SEEN.json_outputs.append(proc.stdout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"etcdsop {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (systemd-nspawn hosts); run: make test")
    hosts = sandbox.up(
        HOST_COUNT,
        state_dir=SANDBOX_DIR,
        subnet_index=SUBNET_INDEX,
        extra_packages=PG_PACKAGES,
        etcd=ETCD,
    )
    yield Bed(sandbox.paths(SANDBOX_DIR), [h.ip for h in hosts])
    if not os.environ.get("ETCDSOP_KEEP_SANDBOX"):
        sandbox.down(state_dir=SANDBOX_DIR)


@pytest.fixture
def clean(bed: Bed) -> Bed:
    """Hosts with no etcd config or data; powered-off hosts are booted again."""
    for host in sandbox.status(state_dir=SANDBOX_DIR):
        if not host.running:
            sandbox.host_power_on(host.name, state_dir=SANDBOX_DIR)
    bed.wipe()
    return bed
