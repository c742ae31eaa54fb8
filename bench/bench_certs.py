"""Benchmark: `certs renew` and `certs rotate-ca` on 3 sandbox members, median of N runs.

Run as root: `python3 bench/bench_certs.py` boots its own sandbox (subnet
198.18.27.0/24, state dir /var/lib/etcdsop/bench-certs) and tears it down (--keep
keeps it). One cluster with 300 keys; timed: `certs` (the list), `certs renew
--within 100000 -y` (every node and admin certificate re-signed, no restart) and
`certs rotate-ca -y` (two rolling restarts, leader last). Each rotation starts from the
CA the previous one left.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as common  # noqa: E402
from bench.bench_dr import admin_client, timed  # noqa: E402
from bench.run import ssh_all, write_inventory  # noqa: E402
from tests.e2e.conftest import PG_PACKAGES  # noqa: E402

from etcdsop import sandbox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/etcdsop/bench-certs"))
    parser.add_argument("--subnet", type=int, default=27)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args()
    common.STATE_DIR = args.state_dir
    # The e2e tests' base image: cached already where the tests ran.
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
            commands = {
                "certs (list)": ("certs", "-i", i),
                "certs renew --within 100000": (
                    "certs",
                    "renew",
                    "--within",
                    "100000",
                    "-y",
                    "-i",
                    i,
                ),
                "certs rotate-ca": ("certs", "rotate-ca", "-y", "-i", i),
            }
            for name, argv in commands.items():
                results[name] = [timed(*argv)[0] for _ in range(args.runs)]
            kept = admin_client(inv, ips).get_prefix("/bench/key/")
            if len(kept) != 300:
                raise SystemExit(f"keys lost: {300 - len(kept)}")
    finally:
        if not args.keep:
            sandbox.down(state_dir=args.state_dir)
    for name, times in results.items():
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<32} median {statistics.median(times):6.2f} s  ({runs})")


if __name__ == "__main__":
    main()
