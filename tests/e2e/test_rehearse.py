"""README's "Rehearse the SOP", run as written, on a sandbox of its own.

The lines between the README's rehearse markers run in one bash, with only what a
second sandbox needs changed: ETCDSOP_SANDBOX_DIR/ETCDSOP_SANDBOX_SUBNET, and the
default state dir and subnet in the text (so the lines cannot drift from what is
tested). Its subnet is the e2e one + 100 (the session's `bed` holds N and N+1).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import SANDBOX_DIR, SUBNET_INDEX

from etcdsop import sandbox
from etcdsop.errors import InputError
from etcdsop.etcd import EtcdClient, TlsFiles
from etcdsop.sandbox.net import Layout
from etcdsop.sandbox.postgres import PATRONI_CONF, VIP_CONF
from etcdsop.sandbox.state import PG_ETCD_PASSWORD

README = Path(__file__).resolve().parents[2] / "README.md"
SUBNET = SUBNET_INDEX + 100
STATE_DIR = Path(f"{SANDBOX_DIR}-rehearse")
LAYOUT = Layout(SUBNET)


def walkthrough() -> list[str]:
    text = README.read_text()
    block = text.split("<!-- rehearse:begin -->", 1)[1].split("<!-- rehearse:end -->", 1)[0]
    lines = block.strip().splitlines()
    assert lines[0] == "```sh" and lines[-1] == "```", "the walkthrough is one sh block"
    return lines[1:-1]


def test_walkthrough_is_what_the_test_runs() -> None:
    lines = walkthrough()
    assert lines[0] == "etcdsop sandbox up 4 --with-postgres"
    commands = [line.split("#")[0].split() for line in lines if line.startswith("etcdsop")]
    assert [c[1] for c in commands] == [
        "sandbox", "create", "sandbox", "sandbox", "add", "rm", "reload", "sandbox", "status"
    ]  # fmt: skip


def patronictl_tables(out: str) -> list[dict[str, tuple[str, str, str]]]:
    """Each `patronictl list` table printed: member -> (host, role, leader's timeline)."""
    tables: list[dict[str, tuple[str, str, str]]] = []
    for line in out.splitlines():
        if line.startswith("+ Cluster: pg-test"):
            tables.append({})
        cells = [c.strip() for c in line.strip("|").split("|")]
        if tables and line.startswith("| pg-test-"):
            # A replica's TL shows only once it has streamed a while: the leader's counts.
            tables[-1][cells[0]] = (cells[1], cells[2], cells[4] if cells[2] == "Leader" else "")
    return tables


@pytest.mark.e2e
def test_rehearse_the_sop_as_written() -> None:
    try:
        sandbox.check_supported()
    except InputError as exc:
        pytest.fail(f"the rehearsal needs the sandbox: {exc.message}")
    sandbox.down(state_dir=STATE_DIR)  # an earlier run's leftovers: start from nothing
    shutil.rmtree(STATE_DIR / "files", ignore_errors=True)
    ip = {n: LAYOUT.host_ip(n) for n in range(1, 5)}
    script = "\n".join(walkthrough())
    script = script.replace("/var/lib/etcdsop/sandbox", str(STATE_DIR))
    script = script.replace("198.18.0.", f"198.18.{SUBNET}.")
    env = {
        **os.environ,
        "ETCDSOP_SANDBOX_DIR": str(STATE_DIR),
        "ETCDSOP_SANDBOX_SUBNET": str(SUBNET),
        "COLUMNS": "200",
    }
    env.pop("ETCDSOP_INVENTORY", None)
    # `etcdsop` is this checkout's code (PYTHONPATH), whatever is installed.
    prelude = f'set -euo pipefail\netcdsop() {{ {sys.executable} -m etcdsop "$@"; }}\n'
    try:
        proc = subprocess.run(
            ["bash", "-c", prelude + script],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        # `sandbox postgres` prints one, then the walkthrough's two `patronictl list`.
        tables = patronictl_tables(proc.stdout)
        assert len(tables) == 3, proc.stdout
        # Patroni's own view: the leader stayed put, on its timeline, across add/rm/reload.
        want = {"pg-test-1": (ip[3], "Leader", "1"), "pg-test-2": (ip[4], "Replica", "")}
        assert tables == [want, want, want]
        check_outcome(ip)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "etcdsop", "sandbox", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    check_nothing_left()
    shutil.rmtree(STATE_DIR, ignore_errors=True)  # create's files/, checked above


def check_outcome(ip: dict[int, str]) -> None:
    voters = [ip[2], ip[3], ip[4]]
    pki = STATE_DIR / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )
    urls = [f"https://{v}:2379" for v in voters]
    inventory = yaml.safe_load((STATE_DIR / "inventory.yml").read_text())
    root_pw = inventory["all"]["children"]["etcd"]["vars"].get("etcd_root_password", "Etcd.Root")
    root = EtcdClient(urls, tls, user="root", password=root_pw)
    listed = root.member_list()
    assert sorted((m.name, m.is_learner, m.started) for m in listed) == [
        ("etcd-2", False, True),
        ("etcd-3", False, True),
        ("etcd-4", False, True),
    ]
    # pg-test's own etcd user (made the rbac-sync way) reads the leader key and writes.
    pg = EtcdClient(urls, tls, user="pg-test", password=PG_ETCD_PASSWORD)
    assert pg.get("/pg/pg-test/leader") == b"pg-test-1"
    pg.put("/pg/pg-test/rehearsal", "ok")
    assert root.get("/pg/pg-test/rehearsal") == b"ok"
    shell = sandbox.Shell(sandbox.paths(STATE_DIR))
    hosts = ",".join(f"{v}:2379" for v in voters)
    endpoints = [f"https://{v}:2379" for v in voters]
    for host in (ip[3], ip[4]):
        conf = yaml.safe_load(shell.ssh(host, f"cat {PATRONI_CONF}").stdout)
        assert conf["etcd3"]["hosts"] == hosts
        assert conf["etcd3"]["username"] == "pg-test"
        assert (conf["etcd3"]["cacert"], conf["etcd3"]["cert"], conf["etcd3"]["key"]) == (
            "/pg/cert/ca.crt",
            "/pg/cert/server.crt",
            "/pg/cert/server.key",
        )
        vip = yaml.safe_load(shell.ssh(host, f"cat {VIP_CONF}").stdout)
        assert vip["dcs-endpoints"] == endpoints
        assert vip["trigger-key"] == "/pg/pg-test/leader"
        active = shell.ssh(host, "systemctl is-active patroni vip-manager").stdout.split()
        assert active == ["active", "active"]
        mode = shell.ssh(host, f"stat -c '%a %U:%G' {VIP_CONF}").stdout.strip()
        assert mode == "600 root:postgres"
    # etcd-1 is gone from h1: no etcd running, its files removed.
    gone = shell.ssh(ip[1], "systemctl is-active etcd; test -e /etc/etcd/etcd.conf", check=False)
    assert gone.stdout.strip() != "active" and gone.returncode != 0
    assert re.search(r"#198\.18\.\d+\.11:", (STATE_DIR / "inventory.yml").read_text())


def check_nothing_left() -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert f"etcdsop{SUBNET}-" not in netns.stdout
    bridge = subprocess.run(["ip", "link", "show", LAYOUT.bridge], capture_output=True, check=False)
    assert bridge.returncode != 0
    mounts = Path("/proc/mounts").read_text()
    assert str(STATE_DIR) not in mounts
    # What `create` made beside the inventory (CA, backups, audit log) is the cluster's
    # and stays; the sandbox's own files and pg-test's certificate are gone.
    left = sorted(p.name for p in STATE_DIR.iterdir()) if STATE_DIR.exists() else []
    assert left in ([], ["files"])
    assert not (STATE_DIR / "files" / "pki" / "pgsql").exists()
