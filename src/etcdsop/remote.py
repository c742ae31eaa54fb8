"""SSH transport (paramiko): connect, run argv commands, write files atomically.

Commands are argv lists joined with shlex; secrets travel on stdin, never on a
command line. Host keys are checked against known_hosts: unknown keys are
recorded (like StrictHostKeyChecking=accept-new) unless strict, changed keys are
always refused with the `ssh-keygen -R` fix.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from etcdsop.errors import ClusterError, EtcdsopError
from etcdsop.model import SshTarget

if TYPE_CHECKING:
    import paramiko

T = TypeVar("T")
CommandLog = Callable[[str, str], None]  # (host label, command text)

CONNECT_TIMEOUT = 10.0
_known_hosts_lock = threading.Lock()


class RemoteError(ClusterError):
    """A host could not be reached or a command on it failed."""

    def __init__(self, host: str, message: str, *, details: str | None = None) -> None:
        super().__init__(f"{host}: {message}", details=details)
        self.host = host


@dataclass(frozen=True)
class CommandResult:
    host: str
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class SshOptions:
    """Run-wide SSH choices from the command line."""

    strict_host_keys: bool = False
    ssh_config: Path | None = None  # None: ~/.ssh/config (or $ETCDSOP_SSH_CONFIG)
    connect_timeout: float = CONNECT_TIMEOUT
    log: CommandLog | None = None


@dataclass(frozen=True)
class _Resolved:
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    known_hosts: Path
    strict: bool


def _ssh_config_path(options: SshOptions) -> Path | None:
    if options.ssh_config is not None:
        return options.ssh_config
    env = os.environ.get("ETCDSOP_SSH_CONFIG")
    if env is not None:
        return None if env in ("", "none") else Path(env)
    return Path.home() / ".ssh" / "config"


def resolve(target: SshTarget, options: SshOptions) -> _Resolved:
    """Inventory vars win over ~/.ssh/config, which wins over defaults (as Ansible)."""
    cfg: dict[str, Any] = {}
    path = _ssh_config_path(options)
    if path is not None and path.is_file():
        import paramiko

        cfg = dict(paramiko.SSHConfig.from_path(str(path)).lookup(target.address))
    hostname = str(cfg.get("hostname", target.address))
    port = target.port or int(cfg.get("port", 22))
    user = target.user or str(cfg.get("user", "root"))
    keys = (target.key_file,) if target.key_file else tuple(cfg.get("identityfile", ()))
    known = target.known_hosts_file or str(
        (cfg.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
    )
    strict_value = target.strict_host_key_checking or cfg.get("stricthostkeychecking") or ""
    strict = options.strict_host_keys or str(strict_value).lower() == "yes"
    return _Resolved(
        hostname=hostname,
        port=port,
        user=user,
        key_files=tuple(os.path.expanduser(k) for k in keys),
        known_hosts=Path(os.path.expanduser(known)),
        strict=strict,
    )


def _host_key_policy(known_hosts: Path, strict: bool) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """Record a key never seen before; paramiko itself refuses changed keys."""

        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            if strict:
                raise RemoteError(
                    hostname,
                    f"host key unknown and --strict-host-keys is set; add it to {known_hosts}"
                    f" (ssh-keyscan -p PORT HOST >> {known_hosts}) after checking it",
                )
            with _known_hosts_lock:
                known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")

    return AcceptNew()


ABORTED = "stopped: the cluster lock was lost, no further command runs here"


class RemoteHost:
    """One SSH connection to one inventory host; commands run as root (or via sudo -n)."""

    def __init__(self, label: str, target: SshTarget, options: SshOptions) -> None:
        self.label = label
        self.target = target
        self.options = options
        self._client: paramiko.SSHClient | None = None
        self._resolved: _Resolved | None = None
        self._aborted = False
        self._abort_lock = threading.Lock()  # abort() never misses a client being set

    # -- connection ----------------------------------------------------------------
    def connect(self) -> None:
        if self._aborted:
            raise RemoteError(self.label, ABORTED)
        if self._client is not None:
            return
        import paramiko

        r = resolve(self.target, self.options)
        self._resolved = r
        client = paramiko.SSHClient()
        if r.known_hosts.is_file():
            try:
                client.load_host_keys(str(r.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise RemoteError(self.label, f"cannot read {r.known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_host_key_policy(r.known_hosts, r.strict))
        where = f"{r.user}@{r.hostname}:{r.port}"
        try:
            client.connect(
                r.hostname,
                port=r.port,
                username=r.user,
                key_filename=cast(Any, list(r.key_files) or None),  # paramiko takes a list
                timeout=self.options.connect_timeout,
                banner_timeout=self.options.connect_timeout,
                auth_timeout=self.options.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            host = r.hostname if r.port == 22 else f"[{r.hostname}]:{r.port}"
            raise RemoteError(
                self.label,
                f"host key of {where} has CHANGED (possible man-in-the-middle); if the host was"
                f" rebuilt, run: ssh-keygen -f {r.known_hosts} -R '{host}'",
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise RemoteError(self.label, f"authentication failed for {where}") from exc
        except paramiko.SSHException as exc:
            if "No authentication methods available" in str(exc):
                raise RemoteError(
                    self.label,
                    f"no SSH key to log in to {where} with: set ansible_ssh_private_key_file,"
                    " an IdentityFile in ~/.ssh/config, or add the key to ssh-agent",
                ) from exc
            raise RemoteError(self.label, f"cannot connect to {where}: {_reason(exc)}") from exc
        except RemoteError:
            raise
        except (OSError, EOFError) as exc:
            raise RemoteError(self.label, f"cannot connect to {where}: {_reason(exc)}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        with self._abort_lock:
            if self.aborted:  # abort() came while connecting
                client.close()
                raise RemoteError(self.label, ABORTED)
            self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def aborted(self) -> bool:
        return self._aborted

    def abort(self) -> None:
        """From another thread: end every session to this host now (a read blocked in
        one returns) and refuse any command from here on."""
        with self._abort_lock:
            self._aborted = True
            client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    @property
    def is_root(self) -> bool:
        return self._resolved is None or self._resolved.user == "root"

    # -- commands ------------------------------------------------------------------
    def command_text(self, argv: Sequence[str]) -> str:
        text = shlex.join(argv)
        return text if self.is_root else "sudo -n -- " + text

    def _transport(self, argv: Sequence[str]) -> tuple[paramiko.Transport, str]:
        """The live transport and the command text (logged) for argv; refused once
        aborted."""
        self.connect()
        assert self._client is not None
        command = self.command_text(argv)
        if self.options.log:
            self.options.log(self.label, command)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(self.label, "SSH connection lost")
        if self._aborted:
            raise RemoteError(self.label, ABORTED)
        return transport, command

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 120.0,
        check: bool = True,
    ) -> CommandResult:
        """Run argv; stdin (e.g. a secret or a file's content) is sent, then closed."""
        import paramiko  # loaded by connect() already

        transport, command = self._transport(argv)
        deadline = time.monotonic() + timeout
        try:
            chan = transport.open_session(timeout=self.options.connect_timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out = _read_all(chan.recv, deadline)
            err = _read_all(chan.recv_stderr, deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError()
            rc = chan.recv_exit_status()
            chan.close()
        except TimeoutError as exc:
            if self._aborted:
                raise RemoteError(self.label, ABORTED) from exc
            raise RemoteError(self.label, f"timed out after {timeout:.0f}s: {command}") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if self._aborted:
                raise RemoteError(self.label, ABORTED) from exc
            raise RemoteError(self.label, f"SSH failure running {command}: {_reason(exc)}") from exc
        if self._aborted:  # the session was cut under it: whatever it read is partial
            raise RemoteError(self.label, ABORTED)
        result = CommandResult(
            self.label, command, rc, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if rc != 0 and not self.is_root and _sudo_refused(result.stderr):
            # Never a command's own result: nothing ran. Say what to fix instead.
            assert self._resolved is not None
            raise RemoteError(
                self.label,
                f"{self._resolved.user} may not run commands as root without a password"
                " (sudo -n refused); grant it passwordless sudo or set ansible_user: root",
                details=result.stderr.strip()[-500:],
            )
        if check and rc != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise RemoteError(self.label, f"command failed (exit {rc}): {command}", details=detail)
        return result

    def put_file(self, path: str, content: bytes, *, owner: str, group: str, mode: int) -> None:
        """Atomic write: temp file beside the target (0600 from birth), chown, chmod, rename."""
        self.put_files([RemoteFileSpec(path, content, owner, group, mode)])

    def put_files(
        self,
        files: Sequence[RemoteFileSpec],
        *,
        before: Sequence[Sequence[str]] = (),
        after: Sequence[Sequence[str]] = (),
    ) -> None:
        """Write several files in one round trip, each atomically (see put_file).

        stdin carries, per file, a header line "path owner:group mode size" and then
        exactly size bytes; GNU head -c never reads past them on a pipe. The argv
        commands `before` and `after` run in the same round trip (set -e: the first
        failure stops everything).
        """
        if not files and not before and not after:
            return
        for f in files:
            if any(c.isspace() for c in f.path):
                raise RemoteError(self.label, f"refusing a path with white space: {f.path!r}")
        stream = b"".join(
            f"{f.path} {f.owner}:{f.group} {f.mode:04o} {len(f.content)}\n".encode() + f.content
            for f in files
        )
        script = "\n".join(
            [
                "set -e",
                *(shlex.join(c) for c in before),
                _PUT_FILES,
                *(shlex.join(c) for c in after),
            ]
        )
        self.run(["sh", "-c", script], stdin=stream)

    def stream_file(
        self, source: Path, argv: Sequence[str], *, chunk_timeout: float, deadline: float
    ) -> CommandResult:
        """Run argv with source's bytes on stdin, read and sent in 1 MiB chunks (never
        whole in memory): each chunk waits at most chunk_timeout for the channel, the
        whole run ends by deadline (time.monotonic()). check as in run()."""
        import paramiko  # loaded by connect() already

        transport, command = self._transport(argv)
        total = deadline - time.monotonic()
        try:
            chan = transport.open_session(timeout=self.options.connect_timeout)
            chan.exec_command(command)
            with source.open("rb") as f:
                while chunk := f.read(1 << 20):
                    if time.monotonic() > deadline:
                        raise TimeoutError()
                    chan.settimeout(min(chunk_timeout, max(0.1, deadline - time.monotonic())))
                    chan.sendall(chunk)
            chan.shutdown_write()
            chan.settimeout(max(0.1, deadline - time.monotonic()))
            out = _read_all(chan.recv, deadline)
            err = _read_all(chan.recv_stderr, deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError()
            rc = chan.recv_exit_status()
            chan.close()
        except TimeoutError as exc:
            raise RemoteError(
                self.label, f"sending {source} timed out ({total:.0f}s allowed): {command}"
            ) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if self._aborted:
                raise RemoteError(self.label, ABORTED) from exc
            raise RemoteError(self.label, f"SSH failure sending {source}: {_reason(exc)}") from exc
        if self._aborted:
            raise RemoteError(self.label, ABORTED)
        result = CommandResult(
            self.label, command, rc, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if rc != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
            raise RemoteError(self.label, f"command failed (exit {rc}): {command}", details=detail)
        return result

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        result = self.run(
            ["journalctl", "-u", unit, "-n", str(lines * 10), "--no-pager", "-o", "cat"],
            check=False,
            timeout=20,
        )
        return "\n".join(without_stack_traces(result.stdout.splitlines())[-lines:]).strip()


def without_stack_traces(lines: list[str]) -> list[str]:
    """A Go panic's goroutine dump buries the one line that says why (`panic: create
    wal error: no space left on device`): drop the frames, keep the words."""
    kept = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        is_frame = line[:1].isspace() or (following[:1].isspace() and ".go:" in following)
        if is_frame or line.startswith("goroutine ") or not line.strip():
            continue
        kept.append(line)
    return kept


_PUT_FILES = r"""
t=
trap 'rm -f "$t"' EXIT
while read -r path owner mode size; do
  t=$(mktemp "$path.etcdsop.XXXXXX")
  head -c "$size" > "$t"
  [ "$(wc -c < "$t")" -eq "$size" ] || { echo "short write for $path" >&2; exit 1; }
  chown "$owner" "$t"; chmod "$mode" "$t"; mv -f "$t" "$path"; t=
done
"""


@dataclass(frozen=True)
class RemoteFileSpec:
    path: str
    content: bytes
    owner: str
    group: str
    mode: int


def _read_all(recv: Callable[[int], bytes], deadline: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError()
        data = recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _sudo_refused(stderr: str) -> bool:
    first = stderr.lstrip().splitlines()[0] if stderr.strip() else ""
    return first.startswith("sudo: ") and (
        "password is required" in first or "not in the sudoers" in first or "not allowed" in first
    )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def run_parallel(
    items: Iterable[T], action: Callable[[T], Any], *, forks: int, key: Callable[[T], str]
) -> dict[str, Any]:
    """Run action on every item concurrently; each item's result or exception is kept."""
    items = list(items)
    results: dict[str, Any] = {}
    if not items:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(items)))) as pool:
        futures = {key(item): pool.submit(action, item) for item in items}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except EtcdsopError as exc:
                results[name] = exc
    return results


def first_failure(results: Mapping[str, Any]) -> EtcdsopError | None:
    for value in results.values():
        if isinstance(value, EtcdsopError):
            return value
    return None
