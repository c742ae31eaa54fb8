"""Local sandbox: real Linux hosts (systemd-nspawn containers with systemd, sshd, etcd).

Recipe and pitfalls: shared/spec/testbed.md. The library never prints; pass a
`progress` callback to hear what happens (it may be called from worker threads,
one call at a time).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from etcdsop.errors import ClusterError, EtcdsopError, InputError

from . import hosts as _hosts
from . import net as _net
from . import postgres as _postgres
from ._proc import Progress, mounts_under, unmount_all_under, wait_until
from .etcdrepo import DEFAULT_ETCD
from .rootfs import POSTGRES_PACKAGES, cache_key, check_etcd_version, ensure_base, package_list
from .shell import Shell
from .state import (
    PG_HOSTS,
    SandboxPaths,
    State,
    ensure_ssh_key,
    load_state,
    render_inventory,
    save_state,
    set_pid,
    ssh_argv,
)
from .state import paths as _paths

__all__ = [
    "SandboxHost",
    "SandboxPaths",
    "Shell",
    "check_supported",
    "down",
    "host_power_off",
    "host_power_on",
    "paths",
    "ssh_command",
    "status",
    "subnet_from_env",
    "up",
]

REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "ip", "mount", "ssh", "ssh-keygen")
STATE_LOCK_WAIT = 900.0  # an `up` that builds the base rootfs holds it for a minute or two
INSTALL_HINT = "apt-get install systemd-container debootstrap iproute2 openssh-client"


@dataclass(frozen=True)
class SandboxHost:
    name: str  # e.g. "etcdsop-h1"
    ip: str  # 198.18.0.11, .12, ...
    pid: int | None  # systemd-nspawn pid, None when not running
    running: bool


def paths(state_dir: Path | None = None) -> SandboxPaths:
    """Where the sandbox keeps its files (env ETCDSOP_SANDBOX_DIR overrides the default)."""
    return _paths(state_dir)


def subnet_from_env() -> int:
    """ETCDSOP_SANDBOX_SUBNET: N for 198.18.N.0/24 (default 0), so that a second sandbox
    (another ETCDSOP_SANDBOX_DIR) can run beside the first."""
    value = os.environ.get("ETCDSOP_SANDBOX_SUBNET", "0").strip() or "0"
    if not value.isdigit() or not 0 <= int(value) <= 255:
        raise InputError(f"ETCDSOP_SANDBOX_SUBNET must be 0..255, not {value!r}")
    return int(value)


def check_supported() -> None:
    """Raise InputError (one line: what is missing, what to install) when unsupported."""
    lead = "sandbox needs root on Linux with systemd-nspawn"
    if not sys.platform.startswith("linux"):
        raise InputError(f"{lead}; this is {sys.platform}")
    if os.geteuid() != 0:
        raise InputError(f"{lead}; run it as root")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise InputError(f"{lead}; missing {', '.join(missing)}: {INSTALL_HINT}")
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        filesystems = ""
    if "overlay" not in filesystems.split():
        raise InputError(f"{lead} and overlayfs; load it with `modprobe overlay`")


@contextlib.contextmanager
def _locked(p: SandboxPaths) -> Iterator[None]:
    """One `up`/`down`/power change at a time per state dir (others wait their turn)."""
    p.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (p.state_dir / ".lock").open("w") as fh:
        locked = wait_until(lambda: _try_flock(fh.fileno()), STATE_LOCK_WAIT, interval=0.1)
        if not locked:
            raise ClusterError(f"sandbox: {p.state_dir} stays busy with another etcdsop")
        yield


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _serialized(progress: Progress | None) -> Progress | None:
    if progress is None:
        return None
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            progress(message)

    return say


def _host_of(state: State, p: SandboxPaths, seq: int) -> SandboxHost:
    ref = _hosts.host_ref(p, state.layout, seq)
    pid = _hosts.nspawn_pid(ref, state.pids.get(seq))
    return SandboxHost(name=ref.name, ip=ref.ip, pid=pid, running=pid is not None)


def status(*, state_dir: Path | None = None) -> list[SandboxHost]:
    """The sandbox's hosts, running or not (empty when there is no sandbox)."""
    p = paths(state_dir)
    state = load_state(p)
    if state is None:
        return []
    return [_host_of(state, p, seq) for seq in sorted(state.pids)]


def ssh_command(name_or_ip: str | int, *command: str, state_dir: Path | None = None) -> list[str]:
    """ssh argv that runs `command` as root on a sandbox host (isolated from ~/.ssh).

    The words are quoted into one string for the remote shell; without a command
    the result is a prefix to append one already-quoted command string to.
    """
    p = paths(state_dir)
    state = _require_state(p)
    argv = ssh_argv(p, state.layout.host_ip(_resolve(state, name_or_ip)))
    return [*argv, shlex.join(command)] if command else argv


def up(
    count: int,
    *,
    state_dir: Path | None = None,
    progress: Progress | None = None,
    extra_packages: Sequence[str] = (),
    subnet_index: int = 0,
    ready_timeout: float = _hosts.READY_TIMEOUT,
    etcd: str = DEFAULT_ETCD,
) -> list[SandboxHost]:
    """Have hosts h1..h<count> running (keeps running ones, boots the missing ones).

    subnet_index N selects bridge etcdsop-brN and 198.18.N.0/24, so a second sandbox
    (tests) can run beside the default one (N=0). etcd is "3.4" (bookworm's) or "3.5".
    """
    check_supported()
    check_etcd_version(etcd)
    if not 1 <= count <= _net.MAX_HOSTS:
        raise InputError(f"sandbox: host count must be 1..{_net.MAX_HOSTS}, not {count}")
    layout = _net.Layout(subnet_index)
    p = paths(state_dir)
    postgres = set(POSTGRES_PACKAGES) <= set(extra_packages)
    if postgres and count < PG_HOSTS:
        raise InputError(f"sandbox: PostgreSQL (pg-test) needs {PG_HOSTS} hosts or more")
    say = _serialized(progress)
    _net.check_bridge_free(layout, owner=str(p.state_dir))
    with _locked(p):
        state = load_state(p)
        key = cache_key(package_list(extra_packages), etcd)
        if state is not None and state.subnet_index != subnet_index:
            raise InputError(
                f"sandbox: {p.state_dir} holds a sandbox on subnet index {state.subnet_index}, "
                f"not {subnet_index}; run `down` first"
            )
        if state is not None and state.pids and state.base_key not in ("", key):
            raise InputError(
                "sandbox: its hosts run another base rootfs (etcd version or extra packages); "
                "run `down` first"
            )
        base = ensure_base(extra_packages, say, etcd)
        if state is None:
            state = State(subnet_index=subnet_index)
        state.rootfs, state.base_key = str(base.rootfs), base.key
        public_key = ensure_ssh_key(p)
        p.known_hosts.write_text("")  # host keys change at every fresh boot (pitfall 8)
        p.known_hosts.chmod(0o600)
        with _net.machine_lock():
            _net.ensure_nspawn_tmpfs()
            _net.ensure_inotify_instances()
            _net.ensure_bridge(layout, owner=str(p.state_dir))
        seqs = sorted(set(range(1, count + 1)) | set(state.pids))
        refs = {seq: _hosts.host_ref(p, layout, seq) for seq in seqs}
        running = {seq: _hosts.nspawn_pid(refs[seq], state.pids.get(seq)) for seq in seqs}
        for seq in seqs:
            state.pids[seq] = running[seq]
        save_state(p, state)
        etc_hosts = _hosts.hosts_file(layout, seqs)
        to_boot = [seq for seq in seqs if running[seq] is None]
        for seq in to_boot:
            _net.ensure_host_net(layout, seq)
        for seq in seqs:
            if running[seq] is not None:
                _hosts.write_host_files_running(refs[seq], etc_hosts)
        if say and to_boot:
            kept = len(seqs) - len(to_boot)
            say(f"booting {len(to_boot)} host(s)" + (f", keeping {kept} running" if kept else ""))
        elif say:
            say(f"all {len(seqs)} host(s) already running")

        def start(seq: int) -> None:
            _hosts.ensure_overlay(p, base.rootfs, seq)
            _hosts.write_host_files(refs[seq], etc_hosts, public_key)
            _hosts.boot(p, state, refs[seq], ready_timeout=ready_timeout, progress=say)

        failures = _parallel(start, to_boot, refs)
        p.inventory.write_text(render_inventory(p, layout, seqs, postgres))
        if failures:
            _raise_failures("boot", failures, len(to_boot))
    return status(state_dir=p.state_dir)


def _parallel(
    fn: Callable[[int], None], seqs: list[int], refs: dict[int, _hosts.HostRef]
) -> dict[str, EtcdsopError]:
    """Run fn per host in threads; return the failures by host name (never loses any)."""
    failures: dict[str, EtcdsopError] = {}
    if not seqs:
        return failures
    with ThreadPoolExecutor(max_workers=min(len(seqs), 16)) as pool:
        futures = {seq: pool.submit(fn, seq) for seq in seqs}
        for seq, future in futures.items():
            exc = future.exception()
            if isinstance(exc, EtcdsopError):
                failures[refs[seq].name] = exc
            elif isinstance(exc, OSError):
                failures[refs[seq].name] = ClusterError(f"sandbox: {refs[seq].name}: {exc}")
            elif exc is not None:
                raise exc
    return failures


def _raise_failures(action: str, failures: dict[str, EtcdsopError], total: int) -> None:
    first = next(iter(failures.values()))
    lines = []
    for name, exc in failures.items():
        lines.append(f"{name}: {exc.message}")
        if exc.details:
            lines += ["  " + line for line in exc.details.splitlines()]
    raise ClusterError(
        f"sandbox: {len(failures)} of {total} host(s) failed to {action}: {first.message}"
        " (`etcdsop sandbox down` cleans up)",
        details="\n".join(lines),
    )


def _require_state(p: SandboxPaths) -> State:
    state = load_state(p)
    if state is None:
        raise InputError(f"sandbox: no sandbox in {p.state_dir}; run `etcdsop sandbox up`")
    return state


def _resolve(state: State, name_or_ip: str | int) -> int:
    layout = state.layout
    for seq in state.pids:
        if str(name_or_ip) in (layout.host_name(seq), layout.host_ip(seq), f"h{seq}", str(seq)):
            return seq
    known = ", ".join(layout.host_name(s) for s in sorted(state.pids))
    raise InputError(f"sandbox: no host {name_or_ip!r} (hosts: {known or 'none'})")


def host_power_off(
    name_or_ip: str | int, *, state_dir: Path | None = None, progress: Progress | None = None
) -> SandboxHost:
    """Stop one container (simulates a dead host); its disk and network stay."""
    check_supported()
    p = paths(state_dir)
    with _locked(p):
        state = _require_state(p)
        seq = _resolve(state, name_or_ip)
        ref = _hosts.host_ref(p, state.layout, seq)
        _hosts.stop([(ref, _hosts.nspawn_pid(ref, state.pids.get(seq)))], progress)
        set_pid(p, state, seq, None)
        if progress:
            progress(f"{ref.name} {ref.ip} powered off")
        return _host_of(state, p, seq)


def host_power_on(
    name_or_ip: str | int,
    *,
    state_dir: Path | None = None,
    progress: Progress | None = None,
    ready_timeout: float = _hosts.READY_TIMEOUT,
) -> SandboxHost:
    """Boot one powered-off container again: same IP, same disk, same host keys."""
    check_supported()
    p = paths(state_dir)
    with _locked(p):
        state = _require_state(p)
        seq = _resolve(state, name_or_ip)
        layout = state.layout
        ref = _hosts.host_ref(p, layout, seq)
        if _hosts.nspawn_pid(ref, state.pids.get(seq)) is None:
            with _net.machine_lock():
                _net.ensure_nspawn_tmpfs()
                _net.ensure_bridge(layout, owner=str(p.state_dir))
            _net.ensure_host_net(layout, seq)
            _hosts.ensure_overlay(p, Path(state.rootfs), seq)
            etc_hosts = _hosts.hosts_file(layout, sorted(state.pids))
            _hosts.write_host_files(ref, etc_hosts, ensure_ssh_key(p))
            _hosts.boot(p, state, ref, ready_timeout=ready_timeout, progress=progress)
        return _host_of(state, p, seq)


def down(
    *,
    state_dir: Path | None = None,
    progress: Progress | None = None,
    subnet_index: int | None = None,
) -> None:
    """Remove everything `up` made (also after a half-finished `up`); keeps the rootfs cache.

    Idempotent. subnet_index is only needed when both the state file and the bridge
    are gone but namespaces remain.
    """
    check_supported()
    p = paths(state_dir)
    gone = not p.state_dir.exists() and subnet_index is None
    if gone and not _net.owned_indexes(str(p.state_dir)):
        return
    errors: list[str] = []

    def attempt(fn: Callable[[], None]) -> None:
        try:
            fn()
        except (EtcdsopError, OSError) as exc:
            errors.append(exc.message if isinstance(exc, EtcdsopError) else str(exc))

    with _locked(p):
        try:
            state = load_state(p)
        except ClusterError as exc:
            errors.append(exc.message)
            state = None
        owner = str(p.state_dir)
        index = state.subnet_index if state else subnet_index
        if index is None:  # state file lost: the bridge alias still names its owner
            index = next(iter(_net.owned_indexes(owner)), None)
        layout = _net.Layout(index or 0)
        # Only our own bridge's netns, veths and cgroups are ours to remove.
        mine = index is not None and _net.bridge_owner(layout) in (None, owner)
        if index is not None and not mine:
            errors.append(
                f"{layout.bridge} belongs to the sandbox in {_net.bridge_owner(layout)}; "
                "left its network and cgroups alone"
            )
        seqs = set(state.pids if state else ())
        if p.hosts_dir.is_dir():
            seqs |= {int(d.name[1:]) for d in p.hosts_dir.iterdir() if d.name[1:].isdigit()}
        if mine:
            seqs |= _net.netns_seqs(layout) | _hosts.cgroup_seqs(layout)
        refs = [_hosts.host_ref(p, layout, seq) for seq in sorted(seqs)]
        if not mine:
            refs = [replace(ref, cgroups=()) for ref in refs]
        pids = {r.seq: _hosts.nspawn_pid(r, state.pids.get(r.seq) if state else None) for r in refs}
        if progress and any(pids.values()):
            progress(f"powering off {sum(1 for v in pids.values() if v)} host(s)")
        attempt(lambda: _hosts.stop([(r, pids[r.seq]) for r in refs], progress))
        for ref in refs:
            attempt(partial(unmount_all_under, p.host_dir(ref.seq), what="sandbox: down"))
            if mine:
                attempt(partial(_net.remove_host_net, layout, ref.seq))
        with _net.machine_lock():
            if mine:
                for hierarchy in _hosts.cgroup_hierarchies():
                    attempt(partial(_hosts.remove_cgroup, hierarchy / layout.cgroup))
                attempt(lambda: _net.remove_bridge(layout, owner=owner))
            attempt(lambda: _net.release_nspawn_tmpfs(_hosts.any_nspawn_running()))
        if mounts_under(p.state_dir):
            errors.append(f"mounts remain under {p.state_dir}; kept its files")
        else:
            for d in (p.hosts_dir, p.logs_dir):
                if d.exists():
                    attempt(partial(shutil.rmtree, d))
            pub = p.ssh_key.with_name(p.ssh_key.name + ".pub")
            old_known = p.known_hosts.with_name(p.known_hosts.name + ".old")
            for f in (p.inventory, p.ssh_key, pub, p.known_hosts, old_known, p.state_file):
                f.unlink(missing_ok=True)
            attempt(partial(_postgres.remove_admin_files, p.state_dir / "files" / "pki"))
            p.state_file.with_suffix(".tmp").unlink(missing_ok=True)
        (p.state_dir / ".lock").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        p.state_dir.rmdir()  # only when empty: the dir may be the user's
    if errors:
        raise ClusterError(
            f"sandbox: down left something behind: {errors[0]}", details="\n".join(errors)
        )
    if progress:
        progress(f"sandbox in {p.state_dir} removed")
