"""One operator at a time: a lock per cluster, in etcd and on the admin node.

- In etcd: key `/etcdsop/lock/<cluster>`, created in a transaction only when absent,
  bound to a lease the holder renews (TTL 15 s), so a holder that crashed frees it by
  itself. The value says who holds it. Two admin nodes (or two copies of `files/`)
  meet here. The per-PostgreSQL-cluster users are granted their own prefix only.
- On the admin node: an flock on `files/.etcdsop.lock`: always taken, and the only
  lock while no cluster answers yet (a new cluster).

Read-only commands take neither.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import json
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from etcdsop.errors import ClusterError, GuardRefused, LockLost
from etcdsop.etcd import EtcdApiError, EtcdClient, EtcdOutcomeUnknown

LOCK_PREFIX = "/etcdsop/lock/"
LEASE_TTL = 15  # seconds: a crashed holder frees the lock within this
STALE_TTL = 9  # a holder's lease below this is not being renewed
# The holder renews every RENEW_EVERY, trying the members in turn (each try's connect
# and read bounded by TRY_TIMEOUT) until one answers. A watch declares the lock lost
# LOST_AFTER seconds after the last answered renewal was sent, by the clock: the lease
# lives LEASE_TTL from then, so the command is being stopped 5 s before another
# operator could take the lock.
RENEW_EVERY = 2.0
TRY_TIMEOUT = 2.0
LOST_AFTER = 10.0
WATCH_EVERY = 0.25
# Sent to the main thread when the lock is lost; its handler raises KeyboardInterrupt
# whatever SIGINT's disposition (a command started with `&` by a script ignores it).
LOST_SIGNAL = signal.SIGUSR1
POLL = 0.5
NOSPACE = "database space exceeded"  # etcd's answer to writes under a NOSPACE alarm


@dataclass(frozen=True)
class Holder:
    host: str
    user: str
    pid: int
    command: str
    started: str  # UTC, ISO 8601
    token: str  # tells our own lock from another holder's after a lost answer
    pid_space: str = ""  # kernel boot + pid namespace: where `pid` means this process

    @classmethod
    def me(cls, command: str) -> Holder:
        return cls(
            host=socket.gethostname(),
            user=_user(),
            pid=os.getpid(),
            command=command,
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            token=secrets.token_hex(8),
            pid_space=_pid_space(),
        )

    def gone(self) -> bool:
        """True only when provably dead: its pid names no process in the very pid
        namespace it ran in (ours). Anything else (another admin node, a pid now
        reused) is alive as far as we know: its lease decides."""
        if not self.pid_space or self.pid_space != _pid_space() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # EPERM: a process of another user holds the pid
        return False

    def describe(self) -> str:
        try:
            since = datetime.fromisoformat(self.started)
            age = f", for {(datetime.now(timezone.utc) - since).total_seconds():.0f}s"
        except ValueError:
            age = ""
        return f"{self.user}@{self.host} (pid {self.pid}) running `{self.command}`{age}"

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Holder | None:
        try:
            data = json.loads(raw)
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "pid_space"}
            return cls(**fields, pid_space=str(data.get("pid_space", "")))
        except (ValueError, KeyError, TypeError):
            return None


def _pid_space() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""  # no /proc: never call a holder gone


def _user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return str(os.getuid())


def lock_key(cluster: str) -> str:
    return f"{LOCK_PREFIX}{cluster}"


def lock_lost(cluster: str) -> LockLost:
    return LockLost(
        f"stopped: the cluster lock {lock_key(cluster)} was lost (no renewal answered "
        f"for {LOST_AFTER:.0f}s: no member's client port answers from here); another "
        "operator may hold it now. Once etcd answers, run the same command again: it "
        "completes what this one began"
    )


def _b64(raw: bytes | str) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


class FileLock:
    """flock on the admin node; the holder is written into the file for the next one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, me: Holder, *, wait: float, say: Callable[[str], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = Holder.parse(os.pread(fd, 4096, 0))
                who = holder.describe() if holder else "another etcdsop"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise GuardRefused(
                        f"{self.path} is locked by {who}: one command at a time "
                        "(--wait SECONDS waits for it)"
                    ) from None
                if not told:
                    say(f"waiting for the admin-node lock held by {who}")
                    told = True
                time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.to_bytes(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class EtcdLock:
    """The cluster's lock key on a lease kept alive by a thread while held."""

    def __init__(self, client: EtcdClient, cluster: str) -> None:
        self.client = client
        self.key = lock_key(cluster)
        self.lease: int | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()  # "lost" and "released" never both
        self._threads: list[threading.Thread] = []
        self._granted = 0.0  # time.monotonic() when the lease grant was sent
        self._renewed = 0.0  # ... when the last answered renewal was sent
        self._expired = False
        self.lost = False
        self.signal_main = False  # LOST_SIGNAL to the main thread on loss (its handler set)

    def acquire(
        self,
        me: Holder,
        *,
        wait: float,
        say: Callable[[str], None],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + wait
        last: tuple[Holder | None, int, int] | None = None  # holder, lease TTL, lease
        vacant_tries = 0
        while True:
            other = self._try(me)
            if other is None:
                self._keep_alive(say, on_lost)
                if last is not None and last[1] < STALE_TTL:
                    who = last[0].describe() if last[0] else "another etcdsop"
                    say(
                        f"lock taken: the one held by {who} expired (its holder stopped "
                        "renewing it: it crashed or lost etcd)"
                    )
                return
            holder, ttl, lease = other
            if holder is None and not lease and vacant_tries < 3:
                vacant_tries += 1  # nobody holds it now (our answer was lost): try again
                continue
            who = holder.describe() if holder else "another etcdsop"
            if holder is not None and lease and holder.gone():
                # Its lease would expire within LEASE_TTL anyway; nobody renews it.
                with contextlib.suppress(ClusterError):
                    self.client.call("/v3/lease/revoke", {"ID": str(lease)})
                say(f"lock released: its holder {who} is gone (no such process here)")
                continue
            stale = (
                ""
                if ttl >= STALE_TTL
                else (f"; its lease is not renewed (crashed?) and expires in {ttl}s")
            )
            if time.monotonic() >= deadline:
                raise GuardRefused(
                    f"cluster is locked by {who}{stale}: one command at a time "
                    "(--wait SECONDS waits for it)"
                )
            if last is None:
                say(f"waiting for the cluster lock held by {who}{stale}")
            last = other
            time.sleep(POLL)

    def _try(self, me: Holder) -> tuple[Holder | None, int, int] | None:
        """None when we hold the lock now; else the holder, its lease's TTL and ID."""
        current, lease = self._read()
        if current is not None or lease:
            return current, self._ttl(lease), lease
        # A lease nobody uses is harmless (it expires): granting is safe to repeat.
        self._granted = time.monotonic()
        self.lease = int(self.client.call("/v3/lease/grant", {"TTL": LEASE_TTL})["ID"])
        body = {
            "compare": [
                {
                    "key": _b64(self.key),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0",
                }
            ],
            "success": [
                {
                    "request_put": {
                        "key": _b64(self.key),
                        "value": _b64(me.to_bytes()),
                        "lease": str(self.lease),
                    }
                }
            ],
            "failure": [],
        }
        try:
            succeeded = bool(
                self.client.call("/v3/kv/txn", body, idempotent=False).get("succeeded")
            )
        except EtcdOutcomeUnknown:
            current, _lease = self._read()  # our token there: the put went through
            succeeded = current is not None and current.token == me.token
        if succeeded:
            return None
        self._revoke()
        current, lease = self._read()
        return current, self._ttl(lease), lease

    def _read(self) -> tuple[Holder | None, int]:
        data = self.client.call("/v3/kv/range", {"key": _b64(self.key)})
        kvs = data.get("kvs", [])
        if not kvs:
            return None, 0
        raw = base64.b64decode(kvs[0].get("value", ""))
        return Holder.parse(raw), int(kvs[0].get("lease", 0) or 0)

    def _ttl(self, lease: int) -> int:
        if not lease:
            return LEASE_TTL
        with contextlib.suppress(ClusterError):
            data = self.client.call("/v3/lease/timetolive", {"ID": str(lease)})
            return int(data.get("TTL", 0) or 0)
        return LEASE_TTL

    def _keep_alive(self, say: Callable[[str], None], on_lost: Callable[[], None] | None) -> None:
        """Two threads: one renews the lease, one declares the loss by the clock (so a
        try that hangs, a login included, never delays the verdict)."""
        self._renewed = self._granted
        client = self.client.with_timeout(TRY_TIMEOUT)
        self._threads = [
            threading.Thread(target=self._renew, args=(client,), name="etcdsop-lock", daemon=True),
            threading.Thread(
                target=self._watch, args=(say, on_lost), name="etcdsop-lock-watch", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def _renew(self, client: EtcdClient) -> None:
        """Every RENEW_EVERY; after a failed try, the next member at once (the one that
        answered last is asked first)."""
        endpoints = list(client.endpoints)
        good = 0
        while not self._stop.wait(RENEW_EVERY):
            for step in range(len(endpoints)):
                if self._stop.is_set() or self.lost:
                    return
                index = (good + step) % len(endpoints)
                sent = time.monotonic()
                try:
                    data = client.call(
                        "/v3/lease/keepalive", {"ID": str(self.lease)}, endpoint=endpoints[index]
                    )
                except ClusterError:
                    continue
                if int(data.get("result", {}).get("TTL", 0) or 0) <= 0:
                    self._expired = True  # etcd says the lease is gone
                    return
                self._renewed, good = sent, index
                break

    def _watch(self, say: Callable[[str], None], on_lost: Callable[[], None] | None) -> None:
        main = threading.main_thread().ident
        while not self._stop.wait(WATCH_EVERY):
            if not self._expired and time.monotonic() - self._renewed < LOST_AFTER:
                continue
            with self._guard:
                if self._stop.is_set():
                    return  # released meanwhile: the command is ending anyway
                self.lost = True
            # Another operator may take the lock soon: stop the command now, its SSH
            # sessions ended (Ctrl-C alone does not end a blocking read) and the main
            # thread interrupted; a re-run converges from there.
            say(f"LOST the cluster lock (no renewal answered for {LOST_AFTER:.0f}s): stopping now")
            if on_lost is not None:
                with contextlib.suppress(Exception):
                    on_lost()
            if self.signal_main and main is not None:
                signal.pthread_kill(main, LOST_SIGNAL)
            return

    def release(self) -> None:
        with self._guard:  # after this, the watch never signals
            self._stop.set()
        for thread in self._threads:
            thread.join(timeout=RENEW_EVERY + 2 * TRY_TIMEOUT)
        if self.lost:
            self.lease = None  # no member answered for 10 s: it expires by itself
        self._revoke()

    def _revoke(self) -> None:
        if self.lease is not None:
            # Revoking deletes the key; if it fails the lease expires within LEASE_TTL.
            # Short tries: a stopping command must not hang on members that are gone.
            with contextlib.suppress(ClusterError):
                self.client.with_timeout(TRY_TIMEOUT).call(
                    "/v3/lease/revoke", {"ID": str(self.lease)}
                )
            self.lease = None


@contextlib.contextmanager
def cluster_lock(
    lock_file: Path,
    cluster_client: Callable[[], EtcdClient | None],
    cluster: str,
    command: str,
    *,
    wait: float,
    say: Callable[[str], None],
    nospace_ok: bool = False,
    on_remote: Callable[[Callable[[], None]], None] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> Iterator[Holder]:
    """Hold the admin-node lock and, when the cluster answers, its etcd lock.

    Under a NOSPACE alarm etcd grants no lease: only the command that lifts the alarm
    (`nospace_ok`, defrag) goes on, under the admin-node lock alone; any other command
    is refused, naming the way out. on_remote receives the etcd lock's release
    (idempotent), for a command that replaces the very cluster the lock lives in
    (restore --force). on_lost is called from the renewing thread when the lock is
    lost (to end the command's remote work); the command then ends with LockLost."""
    me = Holder.me(command)
    # While held, LOST_SIGNAL raises KeyboardInterrupt in the main thread. Off the main
    # thread no handler can be set, and the lock's watch sends no signal.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(LOST_SIGNAL, _interrupted) if in_main else None
    local = FileLock(lock_file)
    local.acquire(me, wait=wait, say=say)
    remote: EtcdLock | None = None
    try:
        client = cluster_client()
        if client is not None:
            remote = EtcdLock(client, cluster)
            remote.signal_main = in_main
            try:
                remote.acquire(me, wait=wait, say=say, on_lost=on_lost)
            except EtcdApiError as exc:
                if NOSPACE not in exc.etcd_message:
                    raise
                remote.release()
                remote = None
                if not nospace_ok:
                    raise GuardRefused(
                        "etcd takes no writes (NOSPACE alarm: the db is over its quota), "
                        "so no cluster lock either: run `etcdsop defrag` first"
                    ) from exc
                say("cluster lock not taken: etcd takes no writes (NOSPACE alarm)")
            if remote is not None and on_remote is not None:
                on_remote(remote.release)
        # Why there is no etcd lock was said already (no cluster, no quorum, NOSPACE).
        say(f"lock held: {lock_key(cluster) if remote else 'admin node only'}")
        try:
            yield me
        except BaseException as exc:
            if remote is not None and remote.lost:
                raise lock_lost(cluster) from exc
            raise
    finally:
        try:
            if remote is not None:
                remote.release()
            local.release()
        finally:
            if in_main:
                signal.signal(LOST_SIGNAL, signal.SIG_DFL if previous is None else previous)


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
