"""Benchmark: disaster recovery and maintenance on 3 sandbox members, median of N runs.

Run as root: `python3 bench/bench_dr.py` boots its own sandbox (subnet 198.18.25.0/24,
state dir /var/lib/etcdsop/bench-dr) and tears it down (--keep keeps it). One cluster
with 300 keys; timed: `backup`, `restore` of that backup onto destroyed hosts, `recover`
with 2 of 3 members stopped and wiped, `defrag` after 2 000 puts and deletes, `check`.
Set-up between runs (destroy, wipe, writes) is not timed.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as common  # noqa: E402
import yaml  # noqa: E402
from bench.run import ssh_all, write_inventory  # noqa: E402
from tests.e2e.conftest import PG_PACKAGES  # noqa: E402

from etcdsop import sandbox  # noqa: E402
from etcdsop.etcd import EtcdClient, TlsFiles  # noqa: E402


def timed(*args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Seconds the real command took, and its stdout; any other exit code stops the bench."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "etcdsop", *args], capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode not in ok:
        raise SystemExit(f"etcdsop {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return took, proc.stdout


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def admin_client(inv: Path, ips: list[str]) -> EtcdClient:
    pki = inv.parent / "files" / "pki"
    admin = pki / "etcdsop"
    tls = TlsFiles(pki / "ca" / "ca.crt", admin / "admin.crt", admin / "admin.key")
    doc = yaml.safe_load(inv.read_text())
    password = doc["all"]["children"]["etcd"]["vars"]["etcd_root_password"]
    return EtcdClient([f"https://{ip}:2379" for ip in ips], tls, user="root", password=password)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/etcdsop/bench-dr"))
    parser.add_argument("--subnet", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args()
    common.STATE_DIR = args.state_dir
    # The e2e tests' base image (PostgreSQL packages, never started): cached already where
    # the tests ran, so no second image is built.
    hosts = sandbox.up(
        3, state_dir=args.state_dir, subnet_index=args.subnet, extra_packages=PG_PACKAGES
    )
    ips = [h.ip for h in hosts]
    results: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ssh_all(ips, common.WIPE)
            inv = write_inventory(Path(tmp), ips)
            i = str(inv)
            timed("create", "-i", i)
            client = admin_client(inv, ips)
            for n in range(300):
                client.put(f"/bench/key/{n:05d}", "x" * 100)

            def run(name: str, setup: Callable[[], None], action: Callable[[], float]) -> None:
                results[name] = []
                for _ in range(args.runs):
                    setup()
                    results[name].append(action())

            last_backup: list[str] = []

            def backup() -> float:
                took, out = timed("backup", "-i", i, "--json")
                last_backup.append(json.loads(out)["path"])
                return took

            run("backup (300 keys)", lambda: None, backup)
            run(
                "restore onto destroyed hosts",
                lambda: timed("rm", "-i", i, "-y"),  # destroy, untimed
                lambda: timed("restore", last_backup[-1], "-i", i, "-y")[0],
            )

            def two_lost() -> None:
                ssh_all(ips[1:], "systemctl stop etcd; rm -rf /data/etcd")

            run("recover (2 of 3 wiped)", two_lost, lambda: timed("recover", "-i", i, "-y")[0])

            def churn() -> None:
                c = admin_client(inv, ips)  # the cluster may be a new one (restore, recover)
                for n in range(1000):
                    c.put(f"/bench/churn/{n:05d}", "y" * 1000)
                churned = {"key": b64("/bench/churn/"), "range_end": b64("/bench/churn0")}
                c.call("/v3/kv/deleterange", churned)

            run("defrag (--compact)", churn, lambda: timed("defrag", "-i", i, "-y", "--compact")[0])
            run("check", lambda: None, lambda: timed("check", "-i", i, ok=(0, 2))[0])
    finally:
        if not args.keep:
            sandbox.down(state_dir=args.state_dir)
    for name, times in results.items():
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<32} median {statistics.median(times):6.2f} s  ({runs})")


if __name__ == "__main__":
    main()
