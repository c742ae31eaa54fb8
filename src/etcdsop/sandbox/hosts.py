"""One container host: cgroup, overlay root, per-host files, boot, readiness, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdsop.errors import ClusterError

from ._proc import (
    Progress,
    child_returncode,
    forget_child,
    mounts,
    pid_alive,
    register_child,
    run,
    signal_pid,
    tail,
    wait_until,
)
from .net import Layout
from .state import SandboxPaths, State, set_pid, ssh_argv

CGROUP_FS = Path("/sys/fs/cgroup")
READY_TIMEOUT = 90.0
MAX_REBOOTS = 3  # nspawn exit 133 = the container rebooted: boot it again (pitfall 7)
CLEAN_STOP_TIMEOUT = 20.0
NSPAWN = "systemd-nspawn"
# Runs in the child: join the host's cgroups (pitfall 2), then become systemd-nspawn.
_LAUNCHER = (
    "import os, sys\n"
    "i = sys.argv.index('--')\n"
    "for p in sys.argv[1:i]:\n"
    "    with open(p, 'w') as f:\n"
    "        f.write(str(os.getpid()))\n"
    "os.execvp(sys.argv[i + 1], sys.argv[i + 1 :])\n"
)


@dataclass(frozen=True)
class HostRef:
    """Where one host's pieces are; all derived from the sandbox layout and number."""

    seq: int
    name: str
    ip: str
    netns: str
    machine: str
    root: Path
    cgroups: tuple[Path, ...]


def cgroup_hierarchies() -> list[Path]:
    """Hybrid: named systemd (v1) + unified; pure v2: the root; legacy: systemd only."""
    systemd, unified = CGROUP_FS / "systemd", CGROUP_FS / "unified"
    if (systemd / "cgroup.procs").exists():
        found = [systemd]
        if (unified / "cgroup.procs").exists():
            found.append(unified)
        return found
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    raise ClusterError("sandbox: no usable cgroup hierarchy under /sys/fs/cgroup")


def host_ref(p: SandboxPaths, layout: Layout, seq: int) -> HostRef:
    cgroups = tuple(h / layout.cgroup / f"h{seq}" for h in cgroup_hierarchies())
    return HostRef(
        seq=seq,
        name=layout.host_name(seq),
        ip=layout.host_ip(seq),
        netns=layout.netns(seq),
        machine=layout.netns(seq),  # unique on the machine (nspawn keys /run files by it)
        root=p.host_root(seq),
        cgroups=cgroups,
    )


def cgroup_seqs(layout: Layout) -> set[int]:
    """Host numbers that have a cgroup of this sandbox."""
    found: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        group = hierarchy / layout.cgroup
        if group.is_dir():
            found |= {int(d.name[1:]) for d in group.iterdir() if d.name[1:].isdigit()}
    return found


def nspawn_pid(host: HostRef, recorded: int | None) -> int | None:
    """The host's running systemd-nspawn: the recorded pid if it still is one, else
    the systemd-nspawn found in the host's cgroup (it moves itself to `supervisor/`),
    which also finds hosts whose `up` was killed before it saved their pid."""
    arg = f"--directory={host.root}"
    if pid_alive(recorded, comm=NSPAWN, arg=arg):
        return recorded
    for cgroup in host.cgroups:
        for pid in sorted(cgroup_pids(cgroup)):
            if pid_alive(pid, comm=NSPAWN, arg=arg):
                return pid
    for entry in Path("/proc").iterdir():  # last resort: its cgroup is gone or unknown
        if entry.name.isdigit() and pid_alive(int(entry.name), comm=NSPAWN, arg=arg):
            return int(entry.name)
    return None


# --- preparing the root --------------------------------------------------------------


def ensure_overlay(p: SandboxPaths, base_rootfs: Path, seq: int) -> None:
    host_dir = p.host_dir(seq)
    upper, work, root = host_dir / "upper", host_dir / "work", host_dir / "root"
    if any(m == str(root) for m, _, _ in mounts()):
        return
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={base_rootfs},upperdir={upper},workdir={work}"
    argv = ["mount", "-t", "overlay", "-o", options, "etcdsop-sandbox", str(root)]
    run(argv, what=f"sandbox: overlay root of h{seq}")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file inside a container root without following a symlink placed there."""
    if path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def hosts_file(layout: Layout, seqs: Sequence[int]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{layout.host_ip(s)}\t{layout.host_name(s)}" for s in sorted(seqs)]
    return "\n".join(lines) + "\n"


def write_host_files(host: HostRef, etc_hosts: str, public_key: str) -> None:
    """Identity of one host in its overlay: machine-id, hostname, hosts, keys."""
    root = host.root
    machine_id = root / "etc/machine-id"
    try:
        current = "" if machine_id.is_symlink() else machine_id.read_text().strip()
    except OSError:
        current = ""
    if len(current) != 32:  # a powered-on host keeps its id; an empty one fails (pitfall 3)
        _write(machine_id, uuid.uuid4().hex + "\n", 0o444)
    _write(root / "etc/hostname", host.name + "\n")
    _write(root / "etc/hosts", etc_hosts)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    _write(ssh_dir / "authorized_keys", public_key + "\n", 0o600)
    run(["ssh-keygen", "-A", "-f", str(root)], what=f"sandbox: host keys of {host.name}")


def write_host_files_running(host: HostRef, etc_hosts: str) -> None:
    """A running host only learns the current host list."""
    _write(host.root / "etc/hosts", etc_hosts)


# --- boot and readiness --------------------------------------------------------------


def _reset_cgroups(host: HostRef) -> list[Path]:
    procs = []
    for cgroup in host.cgroups:
        remove_cgroup(cgroup)
        cgroup.mkdir(parents=True, exist_ok=True)
        procs.append(cgroup / "cgroup.procs")
    return procs


def launch(p: SandboxPaths, host: HostRef) -> int:
    """Start systemd-nspawn detached (new session, stdin /dev/null, console to a log)."""
    procs_files = _reset_cgroups(host)
    nspawn = [
        NSPAWN,
        "--quiet",
        "--boot",
        f"--directory={host.root}",
        f"--machine={host.machine}",
        f"--hostname={host.name}",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{host.netns}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=pipe",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS")}
    if env.get("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1") != "1":
        del env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"]  # =0 hangs at shutdown (pitfall 5)
    p.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-I", "-S", "-c", _LAUNCHER, *map(str, procs_files), "--", *nspawn]
    with p.host_log(host.name).open("ab") as log:
        log.write(f"=== etcdsop: boot {host.name} at {time.ctime()} ===\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
            )
        except OSError as exc:
            raise ClusterError(f"sandbox: cannot start {NSPAWN} for {host.name}: {exc}") from exc
    register_child(proc)
    return proc.pid


def log_tail(p: SandboxPaths, name: str) -> str:
    try:
        return tail(p.host_log(name).read_text(errors="replace"), 20)
    except OSError:
        return ""


# A host whose etcd cannot reach a quorum (booted while its peers are down) stays
# "starting" for good: the unit has no start timeout. It is up for our purposes once
# etcd's start is the one job running: every job waiting then waits on it.
_PROBE = (
    's=$(systemctl is-system-running); echo "$s"; '
    '[ "$s" != starting ] || systemctl list-jobs --no-legend --plain'
)


def _probe(p: SandboxPaths, host: HostRef, timeout: float) -> tuple[int, str]:
    """Return the ssh exit code and systemd's state, "running" for a boot held only by etcd."""
    argv = [*ssh_argv(p, host.ip), _PROBE]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return proc.returncode, proc.stderr.strip()
    if lines[0] == "starting" and only_etcd_starting(lines[1:]):
        return proc.returncode, "running"
    return proc.returncode, lines[0]


def only_etcd_starting(jobs: list[str]) -> bool:
    """True when `systemctl list-jobs` shows etcd's start as the one job running."""
    rows = [line.split() for line in jobs if line.strip()]
    return {row[1] for row in rows if len(row) >= 4 and row[3] == "running"} == {"etcd.service"}


def boot(
    p: SandboxPaths,
    state: State,
    host: HostRef,
    *,
    ready_timeout: float = READY_TIMEOUT,
    progress: Progress | None = None,
) -> float:
    """Boot the host and wait until systemd says running/degraded; return seconds taken."""
    started = time.monotonic()
    deadline = started + ready_timeout
    pid = launch(p, host)
    set_pid(p, state, host.seq, pid)
    reboots = 0
    last = ""
    while True:
        rc = child_returncode(pid)
        if rc is not None or not pid_alive(pid):
            forget_child(pid)
            set_pid(p, state, host.seq, None)
            # 133: the container rebooted. Other early exits (a 255 with an empty log was
            # seen while another sandbox booted at the same moment) get the same bounded
            # retry: a deterministic failure fails again and is reported with its log.
            if reboots < MAX_REBOOTS and time.monotonic() < deadline:
                reboots += 1
                pid = launch(p, host)
                set_pid(p, state, host.seq, pid)
                continue
            raise ClusterError(
                f"sandbox: {host.name}: {NSPAWN} exited with {rc} while booting",
                details=log_tail(p, host.name) or None,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClusterError(
                f"sandbox: {host.name} ({host.ip}) not ready within {ready_timeout:.0f} s"
                + (f"; last answer: {last}" if last else ""),
                details=log_tail(p, host.name) or None,
            )
        code, out = _probe(p, host, min(remaining, 30.0))
        if out in ("running", "degraded"):
            took = time.monotonic() - started
            if progress:
                progress(f"{host.name} {host.ip} is {out} ({took:.1f} s)")
            return took
        last = out.splitlines()[-1] if out else f"ssh exit {code}"
        time.sleep(0.25 if code == 255 else 0.5)


# --- stopping ------------------------------------------------------------------------


def cgroup_pids(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    if not cgroup.is_dir():
        return pids
    for dirpath, _dirs, _files in os.walk(cgroup):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split())
    pids.discard(os.getpid())
    return pids


def remove_cgroup(cgroup: Path, timeout: float = 5.0) -> None:
    """rmdir the cgroup subtree bottom-up (its processes must have ended)."""

    def attempt() -> bool:
        for dirpath, _dirs, _files in os.walk(cgroup, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        return not cgroup.exists()

    if cgroup.exists() and not wait_until(attempt, timeout, interval=0.1):
        raise ClusterError(f"sandbox: cannot remove cgroup {cgroup} (processes left?)")


def stop(hosts: Sequence[tuple[HostRef, int | None]], progress: Progress | None = None) -> None:
    """Power hosts off together: SIGTERM (clean poweroff), a second SIGTERM, then
    SIGKILL whatever is left in their cgroups (pitfall 6). Tolerates dead hosts."""
    running = {h.seq: pid for h, pid in hosts if pid is not None and pid_alive(pid)}
    by_seq = {h.seq: h for h, _ in hosts}

    def all_down() -> bool:
        return not any(pid_alive(pid) for pid in running.values())

    for pid in running.values():
        signal_pid(pid, signal.SIGTERM)
    if running and not wait_until(all_down, CLEAN_STOP_TIMEOUT, interval=0.2):
        for seq, pid in running.items():
            if pid_alive(pid):
                if progress:
                    progress(f"{by_seq[seq].name}: no clean poweroff; stopping it hard")
                signal_pid(pid, signal.SIGTERM)
        wait_until(all_down, 5.0, interval=0.2)

    def leftovers() -> set[int]:
        return {pid for h, _ in hosts for cg in h.cgroups for pid in cgroup_pids(cg)}

    for pid in leftovers() | {p for p in running.values() if pid_alive(p)}:
        signal_pid(pid, signal.SIGKILL)
    if not wait_until(lambda: not leftovers() and all_down(), 10.0, interval=0.1):
        raise ClusterError(f"sandbox: processes survive SIGKILL: {sorted(leftovers())}")
    for pid in running.values():
        child_returncode(pid)  # reap it when it is our child
        forget_child(pid)
    for host, _ in hosts:
        for cgroup in host.cgroups:
            remove_cgroup(cgroup)


def any_nspawn_running() -> bool:
    """Whether any systemd-nspawn (ours or not) still runs on this machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_alive(int(entry.name), comm=NSPAWN):
            return True
    return False
