"""Subprocess and process helpers for the sandbox: argv lists, bounded time, clear errors."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from etcdsop.errors import ClusterError

Progress = Callable[[str], None]

# Popen objects of the nspawn processes this process started, so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float = 60.0,
    check: bool = True,
    input_text: str | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell); translate every failure into ClusterError."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input_text is not None else subprocess.DEVNULL,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise ClusterError(f"{what}: command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{what}: `{argv[0]}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        out = tail(proc.stderr or proc.stdout or "")
        raise ClusterError(
            f"{what}: `{' '.join(argv[:3])}` exited with {proc.returncode}",
            details=out or None,
        )
    return proc


def register_child(proc: subprocess.Popen[bytes]) -> None:
    with _children_lock:
        _children[proc.pid] = proc


def child_returncode(pid: int) -> int | None:
    """Exit code of a child this process started and that has ended, else None."""
    with _children_lock:
        proc = _children.get(pid)
    return None if proc is None else proc.poll()


def forget_child(pid: int) -> None:
    with _children_lock:
        _children.pop(pid, None)


def pid_alive(pid: int | None, *, comm: str | None = None, arg: str | None = None) -> bool:
    """True when pid runs (not a zombie) and, if given, has this comm and argv element."""
    if pid is None or pid <= 0:
        return False
    rc = child_returncode(pid)
    if rc is not None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if comm is not None and Path(f"/proc/{pid}/comm").read_text().strip() != comm:
            return False
        if arg is not None:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if arg.encode() not in argv:
                return False
    except OSError:
        return False
    # Field 3 is the state; the comm in field 2 may contain spaces, so split after ')'.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll predicate until true or the deadline passes; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(interval)


def _unescape_mount_path(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, source) of every mount in this mount namespace."""
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 2:
            continue
        result.append((_unescape_mount_path(fields[4]), rfields[0], rfields[1]))
    return result


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    base = str(path.resolve()) if path.exists() else str(path)
    found = {m for m, _, _ in mounts() if m == base or m.startswith(base.rstrip("/") + "/")}
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def unmount(mount_point: str, *, what: str) -> None:
    """Unmount; fall back to a lazy unmount when it is still busy."""
    proc = run(["umount", mount_point], what=what, timeout=30, check=False)
    if proc.returncode != 0 and mount_point in {m for m, _, _ in mounts()}:
        run(["umount", "--lazy", mount_point], what=what, timeout=30)


def unmount_all_under(path: Path, *, what: str) -> None:
    for mount_point in mounts_under(path):
        unmount(mount_point, what=what)
    if mounts_under(path):
        raise ClusterError(f"{what}: mounts remain under {path}; not deleting it")


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float, interval: float, busy: str) -> Iterator[int]:
    """Hold an exclusive flock on path (bounded wait); yields its fd.

    busy: the error message when the lock stays taken past the timeout.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise ClusterError(busy) from exc
                time.sleep(interval)
        try:
            yield fh.fileno()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
