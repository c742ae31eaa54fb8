"""The fault-injection harness. Every interruption converges: stop a command right
after each progress line it prints (SIGINT, then SIGKILL), run it again, and check
the cluster is as the inventory says: the member list, every member started, no
learner, every key written before readable, every etcd.conf whole, the lock free. A
writer puts a key every 50 ms throughout: every write it saw acknowledged must be
readable afterwards, and the longest gap between acknowledged writes is recorded.

Lines printed in one burst (stamped with the same elapsed time, to the hundredth of a
second: no remote step between them) are one fault point, after the burst's last line:
stopped after any of them the command is at the same place, past the burst. Figures
says how many lines and how many points there were: nothing is sampled silently.

The figures of the last run go to $ETCDSOP_FAULTS_REPORT/<command>.json for README.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import yaml
from tests.e2e.conftest import Bed, run_cli, spawn
from tests.e2e.test_create import client

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdClient

KEYS = {f"/app/fault/{i:03d}": f"v{i}" for i in range(100)}
SIGNALS = (("SIGINT", signal.SIGINT), ("SIGKILL", signal.SIGKILL))
LINE = re.compile(r"^\s*\d+\.\d\ds ")  # a progress line: elapsed seconds first
REPORT_DIR = Path(os.environ.get("ETCDSOP_FAULTS_REPORT", "/tmp/etcdsop-faults"))


@dataclass
class Figures:
    command: str
    fault_points: int = 0
    progress_lines: int = 0  # sweeps: lines printed; one point per burst and signal
    converged: int = 0
    keys_lost: int = 0
    longest_outage_s: float = 0.0
    longest_outage_began: str = ""  # host and network faults: in which step of the case
    failures: list[str] = field(default_factory=list)
    first_run: str = ""  # host and network faults: how the faulted run ended


class Writer:
    """A key every 50 ms through the voters. The outage is the longest time between two
    acknowledged writes beyond the 50 ms cadence: refused writes and writes that hung
    both count.

    Like an HA client (Patroni), a put gets a short deadline and the next put goes on:
    a put that reached a follower just as the leader died waits out etcd's whole
    request timeout (7 s) while the rest elect a leader in one or two seconds. That
    put says nothing about quorum; the gap until the next acknowledged one does."""

    CADENCE = 0.05
    PUT_DEADLINE = 1.0

    def __init__(self, make_client: Callable[[], EtcdClient]) -> None:
        self.make_client = make_client
        self.acked: list[str] = []
        self.refused = 0
        self.longest = 0.0
        self.longest_began = 0.0  # time.monotonic() when the longest gap began
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c = self.make_client().with_timeout(self.PUT_DEADLINE)
        last_ok = time.monotonic()
        i = 0
        while not self._stop.is_set():
            try:
                key = f"/app/writer/{i:06d}"
                c.put(key, "x")
                self.acked.append(key)
                now = time.monotonic()
                self._gap(last_ok, now)
                last_ok = now
            except ClusterError:
                self.refused += 1
                self._gap(last_ok, time.monotonic())
            i += 1
            self._stop.wait(self.CADENCE)

    def _gap(self, last_ok: float, now: float) -> None:
        if now - last_ok - self.CADENCE > self.longest:
            self.longest = now - last_ok - self.CADENCE
            self.longest_began = last_ok

    def when_longest_began(self, marks: dict[str, float]) -> str:
        """Where the longest gap lies against the named moments of a case, to tell
        which step a stall belongs to: the fault, the command, the heal, the re-run."""
        ended = self.longest_began + self.longest + self.CADENCE
        within = [name for name, at in marks.items() if self.longest_began <= at <= ended]
        if within:
            at = marks[within[0]]
            return f"across {within[0]} (began {at - self.longest_began:.1f}s before it)"
        before = [(at, name) for name, at in marks.items() if at <= self.longest_began]
        if not before:
            return "before the fault"
        at, name = max(before)
        return f"{self.longest_began - at:.1f}s after {name}"

    def stop_now(self) -> None:
        self._stop.set()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def follow(
    args: list[str], act: Callable[[subprocess.Popen[str], str, int], bool]
) -> tuple[int, str]:
    """Run etcdsop; after each progress line (and its index) ask act(proc, line, index);
    once it says True stop reading and let the command end (every wait is bounded)."""
    proc = spawn(*args)
    assert proc.stderr is not None
    seen: list[str] = []
    count = 0
    for line in proc.stderr:
        seen.append(line)
        if LINE.match(line):
            if act(proc, line, count):
                break
            count += 1
    seen.append(proc.stderr.read())
    return proc.wait(timeout=600), "".join(seen)


def interrupt_after(args: list[str], index: int, sig: int) -> tuple[int, str]:
    """Run etcdsop; send sig right after its index-th progress line (or let it end)."""

    def act(proc: subprocess.Popen[str], _line: str, count: int) -> bool:
        if count == index:
            proc.send_signal(sig)
        return count == index

    return follow(args, act)


def fault_after(args: list[str], pattern: str, fault: Callable[[], None]) -> tuple[int, str]:
    """Run etcdsop; call fault() right after the first progress line matching pattern
    (a regular expression), then let the command end on its own."""
    injected: list[bool] = []

    def act(_proc: subprocess.Popen[str], line: str, _count: int) -> bool:
        if re.search(pattern, line):
            fault()
            injected.append(True)
        return bool(injected)

    code, output = follow(args, act)
    assert injected, f"no progress line matched {pattern!r}:\n{output}"
    return code, output


def bursts(lines: list[str]) -> list[int]:
    """The index of each burst's last line: lines stamped with the same elapsed time."""
    stamps = [line.split()[0] for line in lines]
    return [i for i, s in enumerate(stamps) if i + 1 == len(stamps) or stamps[i + 1] != s]


def progress_lines(args: list[str]) -> list[str]:
    proc = run_cli(*args)
    return [line for line in proc.stderr.splitlines() if LINE.match(line)]


class Harness:
    def __init__(self, bed: Bed, inventory: Path, ips: list[str]) -> None:
        self.bed, self.inventory, self.ips = bed, inventory, ips

    def client(self, ips: list[str]) -> EtcdClient:
        return client(self.inventory, ips)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "-i", str(self.inventory), check=check)

    def converged(self, voters: list[str], absent: list[str], keys: bool = True) -> list[str]:
        """What differs from: exactly `voters` as started voters, `absent` cleaned."""
        problems = []
        try:
            members = self.client(voters).member_list()
        except ClusterError as exc:
            return [f"no member list: {exc.message}"]
        peers = sorted(m.peer_urls[0] for m in members)
        if peers != sorted(f"https://{ip}:2380" for ip in voters):
            problems.append(f"members {peers}")
        if any(not m.started or m.is_learner for m in members):
            problems.append("a member unstarted or a learner")
        if keys:
            got = self.client(voters).get_prefix("/app/fault/")
            lost = [k for k, v in KEYS.items() if got.get(k) != v.encode()]
            if lost:
                problems.append(f"keys lost: {len(lost)}")
        if self.client(voters).get("/etcdsop/lock/etcd") is not None:
            problems.append("the cluster lock is still held")
        for ip, text in self.bed.each(voters, "cat /etc/etcd/etcd.conf").items():
            conf = yaml.safe_load(text)
            if not isinstance(conf, dict) or conf.get("data-dir") != "/data/etcd":
                problems.append(f"{ip}: etcd.conf not whole")
        for ip in absent:
            if self.bed.ssh(ip, "test -e /data/etcd/member", check=False).returncode == 0:
                problems.append(f"{ip}: data dir left")
        return problems

    def writes_lost(self, voters: list[str], acked: list[str]) -> int:
        got = self.client(voters).get_prefix("/app/writer/")
        return sum(1 for key in acked if key not in got)

    def keys_lost(self, voters: list[str]) -> int:
        got = self.client(voters).get_prefix("/app/fault/")
        return sum(1 for k, v in KEYS.items() if got.get(k) != v.encode())


def record(figures: Figures) -> None:
    """One JSON file per command (parallel workers never write the same file)."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", figures.command).strip("-")
    (REPORT_DIR / f"{slug}.json").write_text(json.dumps(asdict(figures), indent=2))


def sweep(
    harness: Harness,
    name: str,
    args: list[str],
    *,
    voters_after: list[str],
    absent_after: list[str],
    writer_ips: list[str] | None,
    reset: Callable[[], None],
    keys: bool = True,
    check: Callable[[], list[str]] | None = None,
) -> Figures:
    """Each burst of progress lines x each signal: interrupt, re-run, check, reset.
    `check` says what differs from the expected end state (default: the cluster as the
    inventory says, `voters_after` started, `absent_after` cleaned)."""
    figures = Figures(name)
    lines = progress_lines([*args, "-i", str(harness.inventory)])
    figures.progress_lines = len(lines)
    reset()
    for signame, sig in SIGNALS:
        for index in bursts(lines):
            where = f"{signame} after line {index + 1}/{len(lines)} ({lines[index].strip()[:60]})"
            with Writer(lambda: harness.client(writer_ips or voters_after)) as writer:
                if writer_ips is None:
                    writer.stop_now()  # no cluster yet to write to
                _code, output = interrupt_after([*args, "-i", str(harness.inventory)], index, sig)
                rerun = harness.cli(*args, "--wait", "60", check=False)
            figures.fault_points += 1
            figures.longest_outage_s = max(figures.longest_outage_s, round(writer.longest, 2))
            problems = []
            if rerun.returncode != 0:
                problems.append(
                    f"re-run exited {rerun.returncode}: {rerun.stderr[-600:]}\n"
                    f"--- interrupted run:\n{output[-800:]}"
                )
            elif check is not None:
                problems += check()
            else:
                problems += harness.converged(voters_after, absent_after, keys=keys)
            if writer_ips is not None:
                lost_writes = harness.writes_lost(voters_after, writer.acked)
                figures.keys_lost = max(figures.keys_lost, lost_writes)
                if not writer.acked or lost_writes:
                    problems.append(f"writer: {len(writer.acked)} acked, {lost_writes} lost")
            if keys:
                figures.keys_lost = max(figures.keys_lost, harness.keys_lost(voters_after))
            if problems:
                figures.failures.append(f"{where}: {'; '.join(problems)}")
            else:
                figures.converged += 1
            reset()
    record(figures)
    return figures


@pytest.fixture
def harness(clean: Bed, tmp_path: Path) -> Iterator[Harness]:
    ips = clean.ips[:4]
    inventory = clean.inventory(tmp_path, ips)
    yield Harness(clean, inventory, ips)


def write_keys(h: Harness, ips: list[str]) -> None:
    c = h.client(ips)
    for key, value in KEYS.items():
        c.put(key, value)
