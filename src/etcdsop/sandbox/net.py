"""Names, addresses and network plumbing of one sandbox (bridge, netns, veth, route).

Sandbox number N owns bridge `etcdsop-brN` with 198.18.N.1/24, hosts at
198.18.N.11 and up, network namespaces `etcdsopN-hI` and host-side veths `esNhI`
(`eth0` inside). No default route anywhere; an `unreachable 198.18.0.0/15` route in
the root namespace keeps traffic for absent hosts from leaking out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from etcdsop.errors import ClusterError, InputError

from ._proc import file_lock, mounts, run, unmount

SYS_NET = Path("/sys/class/net")
NETNS_DIR = Path("/run/netns")
GUARD_ROUTE = "198.18.0.0/15"
BRIDGE_PREFIX = "etcdsop-br"
MAX_HOSTS = 200
NSPAWN_RUN = Path("/run/systemd/nspawn")
NSPAWN_TMPFS_SOURCE = "etcdsop-nspawn"
GLOBAL_LOCK = Path("/run/lock/etcdsop-sandbox.lock")


@dataclass(frozen=True)
class Layout:
    """Deterministic names and addresses of sandbox number `index` (0..255)."""

    index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 255:
            raise InputError(f"sandbox: subnet index must be 0..255, not {self.index}")

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def gateway(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def subnet(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def cgroup(self) -> str:
        return f"etcdsop{self.index}"

    @staticmethod
    def host_name(seq: int) -> str:
        return f"etcdsop-h{seq}"

    def host_ip(self, seq: int) -> str:
        if not 1 <= seq <= MAX_HOSTS:
            raise InputError(f"sandbox: host number must be 1..{MAX_HOSTS}, not {seq}")
        return f"198.18.{self.index}.{10 + seq}"

    def netns(self, seq: int) -> str:
        return f"etcdsop{self.index}-h{seq}"

    def veth(self, seq: int) -> str:
        return f"es{self.index}h{seq}"  # at most 9 characters; the kernel allows 15


@contextlib.contextmanager
def machine_lock(timeout: float = 60.0) -> Iterator[None]:
    """Serialize changes to what sandboxes share: the tmpfs, the guard route, bridges."""
    with file_lock(
        GLOBAL_LOCK, timeout=timeout, interval=0.1, busy=f"sandbox: {GLOBAL_LOCK} stays locked"
    ):
        yield


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def bridge_owner(layout: Layout) -> str | None:
    """The state dir written in the bridge's alias, None if no bridge or no alias."""
    try:
        return (SYS_NET / layout.bridge / "ifalias").read_text().strip() or None
    except OSError:
        return None


def owned_indexes(owner: str) -> list[int]:
    """Subnet indexes whose bridge names `owner` (a state dir) in its alias."""
    found = []
    for path in sorted(SYS_NET.glob(f"{BRIDGE_PREFIX}*")):
        suffix = path.name[len(BRIDGE_PREFIX) :]
        if suffix.isdigit() and int(suffix) <= 255 and bridge_owner(Layout(int(suffix))) == owner:
            found.append(int(suffix))
    return found


def check_bridge_free(layout: Layout, owner: str) -> None:
    """InputError when another state dir's sandbox uses this subnet index."""
    current = bridge_owner(layout)
    if current is not None and current != owner:
        raise InputError(
            f"sandbox: subnet {layout.subnet} (bridge {layout.bridge}) belongs to the "
            f"sandbox in {current}; run `down` there or pick another subnet index"
        )


def ensure_bridge(layout: Layout, owner: str) -> None:
    what = f"sandbox: bridge {layout.bridge}"
    check_bridge_free(layout, owner)
    if not link_exists(layout.bridge):
        run(["ip", "link", "add", layout.bridge, "type", "bridge"], what=what)
    run(["ip", "link", "set", layout.bridge, "alias", owner], what=what)
    run(["ip", "addr", "replace", f"{layout.gateway}/24", "dev", layout.bridge], what=what)
    run(["ip", "link", "set", layout.bridge, "up"], what=what)
    run(["ip", "route", "replace", "unreachable", GUARD_ROUTE], what="sandbox: guard route")


def ensure_host_net(layout: Layout, seq: int) -> None:
    """Create (or complete) the host's netns and veth pair; idempotent."""
    ns, veth = layout.netns(seq), layout.veth(seq)
    what = f"sandbox: network of {layout.host_name(seq)}"
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns], what=what)
    inner = run(["ip", "-n", ns, "link", "show", "eth0"], what=what, check=False)
    if link_exists(veth) and inner.returncode != 0:
        run(["ip", "link", "del", veth], what=what)
    if not link_exists(veth):
        if inner.returncode == 0:
            run(["ip", "-n", ns, "link", "del", "eth0"], what=what)
        argv = ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]
        run(argv, what=what)
    run(["ip", "link", "set", veth, "master", layout.bridge, "up"], what=what)
    addr = f"{layout.host_ip(seq)}/24"
    run(["ip", "-n", ns, "addr", "replace", addr, "dev", "eth0"], what=what)
    run(["ip", "-n", ns, "link", "set", "lo", "up"], what=what)
    run(["ip", "-n", ns, "link", "set", "eth0", "up"], what=what)


def remove_host_net(layout: Layout, seq: int) -> None:
    what = f"sandbox: removing the network of {layout.host_name(seq)}"
    # The veth first: deleting it takes its peer along, whereas deleting the netns
    # frees the pair asynchronously (a later `ip link del` would race with it).
    veth = layout.veth(seq)
    if link_exists(veth):
        proc = run(["ip", "link", "del", veth], what=what, check=False)
        if proc.returncode != 0 and link_exists(veth):
            raise ClusterError(f"{what}: `ip link del {veth}` failed: {proc.stderr.strip()}")
    if netns_exists(layout.netns(seq)):
        run(["ip", "netns", "del", layout.netns(seq)], what=what)


def netns_seqs(layout: Layout) -> set[int]:
    """Host numbers that have a netns of this sandbox (finds leftovers of a crashed up)."""
    prefix = f"etcdsop{layout.index}-h"
    found = set()
    with contextlib.suppress(OSError):
        for path in NETNS_DIR.iterdir():
            if path.name.startswith(prefix) and path.name[len(prefix) :].isdigit():
                found.add(int(path.name[len(prefix) :]))
    return found


def remove_bridge(layout: Layout, owner: str) -> None:
    """Delete our bridge; the guard route goes with the last etcdsop bridge."""
    if link_exists(layout.bridge) and bridge_owner(layout) in (None, owner):
        run(["ip", "link", "del", layout.bridge], what=f"sandbox: removing {layout.bridge}")
    others = [p for p in SYS_NET.iterdir() if p.name.startswith(BRIDGE_PREFIX)]
    if not others:
        argv = ["ip", "route", "del", "unreachable", GUARD_ROUTE]
        proc = run(argv, what="sandbox: guard route", check=False)
        if proc.returncode != 0 and "No such process" not in proc.stderr:
            run(argv, what="sandbox: removing the guard route")


def ensure_nspawn_tmpfs() -> None:
    """A tmpfs on /run/systemd/nspawn: /run is on disk here (testbed pitfall 4)."""
    if any(m == str(NSPAWN_RUN) for m, _, _ in mounts()):
        return
    NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", NSPAWN_TMPFS_SOURCE]
    run([*argv, str(NSPAWN_RUN)], what="sandbox: tmpfs on /run/systemd/nspawn")


# Each booted host's systemd takes about ten inotify instances, all counted against
# root; the kernel's default of 128 stops a boot half-way (no sshd) at about a dozen
# hosts across all sandboxes. Raised, never lowered; the watches limit is ample.
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES_WANTED = 8192


def ensure_inotify_instances() -> None:
    try:
        current = int(INOTIFY_INSTANCES.read_text())
        if current < INOTIFY_INSTANCES_WANTED:
            INOTIFY_INSTANCES.write_text(f"{INOTIFY_INSTANCES_WANTED}\n")
    except (OSError, ValueError):
        pass  # read-only /proc/sys (a container): hosts boot as far as the limit allows


def release_nspawn_tmpfs(nspawn_running: bool) -> None:
    """Unmount our tmpfs once no container of any kind runs any more."""
    if nspawn_running:
        return
    for mount_point, fstype, source in mounts():
        if mount_point == str(NSPAWN_RUN) and fstype == "tmpfs" and source == NSPAWN_TMPFS_SOURCE:
            unmount(mount_point, what="sandbox: unmounting /run/systemd/nspawn")
            break
