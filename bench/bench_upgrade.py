"""Benchmark: `etcdsop upgrade` of 3 sandbox members from etcd 3.4 to 3.5, median of N.

Run as root: `python3 bench/bench_upgrade.py` boots its own sandbox (subnet
198.18.26.0/24, state dir /var/lib/etcdsop/bench-upgrade) from the 3.4 base, whose local
apt repository carries the 3.5 packages. An upgrade changes the hosts' packages for
good, so every run starts from fresh hosts: boot, create, 300 keys (untimed), then the
timed `upgrade -y` (checks, verified snapshot, three installs and restarts, leader last,
the cluster version), then the sandbox is removed. --keep keeps the last one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as common  # noqa: E402
from bench.bench_dr import admin_client, timed  # noqa: E402
from bench.run import write_inventory  # noqa: E402
from tests.e2e.conftest import PG_PACKAGES  # noqa: E402

from etcdsop import sandbox  # noqa: E402


def one_run(args: argparse.Namespace, last: bool) -> tuple[float, dict[str, tuple[float, float]]]:
    hosts = sandbox.up(
        3, state_dir=args.state_dir, subnet_index=args.subnet, extra_packages=PG_PACKAGES
    )
    ips = [h.ip for h in hosts]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            inv = write_inventory(Path(tmp), ips)
            timed("create", "-i", str(inv))
            client = admin_client(inv, ips)
            for n in range(300):
                client.put(f"/bench/key/{n:05d}", "x" * 100)
            took, out = timed("upgrade", "-y", "--json", "-i", str(inv))
            result = json.loads(out)
            per_member = {
                m["name"]: (m["install_seconds"], m["seconds"]) for m in result["members"]
            }
            print(
                f"  {took:.2f} s to {result['target']} (cluster {result['cluster_version_after']});"
                f" per member {per_member}",
                flush=True,
            )
            return took, per_member
    finally:
        if not (last and args.keep):
            sandbox.down(state_dir=args.state_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/etcdsop/bench-upgrade"))
    parser.add_argument("--subnet", type=int, default=26)
    parser.add_argument("--keep", action="store_true", help="leave the last sandbox running")
    args = parser.parse_args()
    common.STATE_DIR = args.state_dir
    totals: list[float] = []
    installs: list[float] = []
    restarts: list[float] = []
    for n in range(args.runs):
        took, per_member = one_run(args, last=n == args.runs - 1)
        totals.append(took)
        installs += [i for i, _ in per_member.values()]
        restarts += [r for _, r in per_member.values()]
    runs = ", ".join(f"{t:.2f}" for t in totals)
    median = statistics.median(totals)
    print(f"{'upgrade 3.4 -> 3.5 (3 members)':<34} median {median:6.2f} s  ({runs})")
    for label, values in (
        ("  install on one host (all at once)", installs),
        ("  one member: restart to caught up", restarts),
    ):
        each = ", ".join(f"{t:.1f}" for t in values)
        print(f"{label:<34} median {statistics.median(values):6.2f} s  ({each})")


if __name__ == "__main__":
    main()
