"""Files of one sandbox under its state dir: paths, the JSON state, key, inventory."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from etcdsop.errors import ClusterError, InputError

from ._proc import run
from .net import Layout

DEFAULT_STATE_DIR = Path("/var/lib/etcdsop/sandbox")
STATE_VERSION = 1
ETCD_MEMBERS = 3
PG_CLUSTER = "pg-test"  # Pigsty's sandbox: pg-test, PostgreSQL HA on its own hosts
PG_HOSTS = 2
PG_ETCD_PASSWORD = "Pg.Test.Etcd"


@dataclass(frozen=True)
class SandboxPaths:
    """Everything of one sandbox lives under state_dir."""

    state_dir: Path
    inventory: Path  # <state_dir>/inventory.yml
    ssh_key: Path  # <state_dir>/id_ed25519 (0600)
    known_hosts: Path  # <state_dir>/known_hosts, emptied at each `up`
    state_file: Path  # <state_dir>/state.json: subnet index, base rootfs, host pids
    hosts_dir: Path  # <state_dir>/hosts/hN/{upper,work,root}
    logs_dir: Path  # <state_dir>/logs/<host>.log: the console of each container

    def host_dir(self, seq: int) -> Path:
        return self.hosts_dir / f"h{seq}"

    def host_root(self, seq: int) -> Path:
        return self.host_dir(seq) / "root"

    def host_log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"


def paths(state_dir: Path | None = None) -> SandboxPaths:
    env = os.environ.get("ETCDSOP_SANDBOX_DIR")
    base = Path(state_dir) if state_dir is not None else Path(env or DEFAULT_STATE_DIR)
    base = base.absolute()
    # The dir goes into overlay mount options and a bridge alias: keep it plain.
    if any(c in str(base) for c in ",:\\\n\t ") or len(str(base)) > 200:
        raise InputError(
            f"sandbox: state dir {base} must be a short path without spaces, ',' or ':'"
        )
    return SandboxPaths(
        state_dir=base,
        inventory=base / "inventory.yml",
        ssh_key=base / "id_ed25519",
        known_hosts=base / "known_hosts",
        state_file=base / "state.json",
        hosts_dir=base / "hosts",
        logs_dir=base / "logs",
    )


@dataclass
class State:
    """Mutable record of a sandbox, saved as JSON after every change."""

    subnet_index: int
    rootfs: str = ""
    base_key: str = ""
    pids: dict[int, int | None] = field(default_factory=dict)  # host seq -> nspawn pid
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.subnet_index)

    def to_json(self) -> str:
        data = {
            "version": STATE_VERSION,
            "subnet_index": self.subnet_index,
            "rootfs": self.rootfs,
            "base_key": self.base_key,
            "hosts": {
                self.layout.host_name(seq): {"seq": seq, "pid": pid}
                for seq, pid in sorted(self.pids.items())
            },
        }
        return json.dumps(data, indent=2) + "\n"


def load_state(p: SandboxPaths) -> State | None:
    try:
        text = p.state_file.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClusterError(f"sandbox: cannot read {p.state_file}: {exc}") from exc
    try:
        data = json.loads(text)
        state = State(
            subnet_index=int(data["subnet_index"]),
            rootfs=str(data.get("rootfs", "")),
            base_key=str(data.get("base_key", "")),
        )
        for host in data.get("hosts", {}).values():
            pid = host.get("pid")
            state.pids[int(host["seq"])] = int(pid) if pid is not None else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ClusterError(
            f"sandbox: {p.state_file} is damaged ({exc}); run `etcdsop sandbox down`"
        ) from exc
    return state


def save_state(p: SandboxPaths, state: State) -> None:
    tmp = p.state_file.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(p.state_file)


def set_pid(p: SandboxPaths, state: State, seq: int, pid: int | None) -> None:
    """Thread-safe: record a host's nspawn pid and save the state file."""
    with state.lock:
        state.pids[seq] = pid
        save_state(p, state)


def ensure_ssh_key(p: SandboxPaths) -> str:
    """Create the sandbox's own key pair once; return the public key line."""
    pub = p.ssh_key.with_name(p.ssh_key.name + ".pub")
    if not p.ssh_key.exists() or not pub.exists():
        for stale in (p.ssh_key, pub):
            stale.unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "etcdsop-sandbox"]
        run([*argv, "-f", str(p.ssh_key)], what="sandbox: creating the ssh key")
    p.ssh_key.chmod(0o600)
    return pub.read_text().strip()


def render_inventory(
    p: SandboxPaths, layout: Layout, seqs: list[int], postgres: bool = False
) -> str:
    """A Pigsty-shaped inventory: the first three hosts form etcd, the others are spare
    (each also a commented-out etcd line with the next etcd_seq, the SOP's way to add
    or remove a member); with postgres, pg-test on the last two hosts as in Pigsty's
    sandbox (pg_seq 1 the primary, its VIP .3 of the subnet like 10.10.10.3)."""
    seqs = sorted(seqs)
    members, spares = seqs[:ETCD_MEMBERS], seqs[ETCD_MEMBERS:]
    lines = [
        "# Generated by `etcdsop sandbox up`; rewritten at each `up`, removed by `down`.",
        f"# Hosts are systemd-nspawn containers on bridge {layout.bridge} ({layout.subnet}).",
        "all:",
        "  children:",
        "    etcd:",
        "      hosts:",
    ]
    for number, seq in enumerate(members, start=1):
        lines.append(
            f"        {layout.host_ip(seq)}: {{ etcd_seq: {number} }}  # {layout.host_name(seq)}"
        )
    for number, seq in enumerate(spares, start=len(members) + 1):
        lines.append(
            f"       #{layout.host_ip(seq)}: {{ etcd_seq: {number} }}  # {layout.host_name(seq)}"
            " (spare: uncomment to add it)"
        )
    lines.append("      vars: { etcd_cluster: etcd }")
    if spares:
        lines += [
            "    spare:  # running hosts outside the cluster: uncomment one's line",
            "      hosts:  # under etcd.hosts to add it as a member",
        ]
        for seq in spares:
            lines.append(f"        {layout.host_ip(seq)}: {{}}  # {layout.host_name(seq)}")
    if postgres and len(seqs) >= PG_HOSTS:
        lines += [f"    {PG_CLUSTER}:  # `etcdsop sandbox postgres` runs it (Pigsty's pgsql.yml)"]
        lines += ["      hosts:"]
        for number, seq in enumerate(seqs[-PG_HOSTS:], start=1):
            role = "primary" if number == 1 else "replica"
            lines.append(
                f"        {layout.host_ip(seq)}: {{ pg_seq: {number}, pg_role: {role} }}"
                f"  # {layout.host_name(seq)}"
            )
        lines += [
            "      vars:",
            f"        pg_cluster: {PG_CLUSTER}",
            f"        pg_etcd_password: {PG_ETCD_PASSWORD}",
            "        pg_vip_enabled: true",
            f"        pg_vip_address: {pg_vip_address(layout)}",
            "        pg_vip_interface: eth0",
        ]
    common = f"-o UserKnownHostsFile={p.known_hosts} -o StrictHostKeyChecking=accept-new"
    lines += [
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {p.ssh_key}",
        f"    ansible_ssh_common_args: '{common}'",
        "",
    ]
    return "\n".join(lines)


def pg_vip_address(layout: Layout) -> str:
    return f"198.18.{layout.index}.3/24"


def ssh_argv(p: SandboxPaths, ip: str, *, connect_timeout: int = 3) -> list[str]:
    """The ssh client command line for root@ip, isolated from the user's ssh config."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(p.ssh_key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={p.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "LogLevel=ERROR",
        f"root@{ip}",
        "--",
    ]
