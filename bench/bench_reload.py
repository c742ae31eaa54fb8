"""Benchmark: `etcdsop reload --target all` with one real Patroni cluster, median of N runs.

Run as root: `python3 bench/bench_reload.py` boots its own sandbox (subnet 198.18.5.0/24,
state dir /var/lib/etcdsop/bench-reload, base with PostgreSQL/Patroni/vip-manager),
creates etcd on 3 hosts and Patroni pg-test on 2, and tears it down (--keep keeps it).
Two cases, no etcd restart in either: nothing to change (target, issue 4: <= 3 s when
nothing restarts), and stale client configs pointing at one member (every Patroni and
vip-manager config rewritten, Patroni restarted under pause, vip-manager restarted).
Set-up between runs is not timed.
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

from bench.run import etcdsop  # noqa: E402
from tests.e2e import pgbed  # noqa: E402
from tests.e2e.conftest import PG_PACKAGES, WIPE, Bed  # noqa: E402

from etcdsop import sandbox  # noqa: E402

TARGET_SECONDS = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path("/var/lib/etcdsop/bench-reload"))
    parser.add_argument("--subnet", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the sandbox running")
    args = parser.parse_args()
    # The e2e tests' base image: built once for both.
    hosts = sandbox.up(
        6, state_dir=args.state_dir, subnet_index=args.subnet, extra_packages=PG_PACKAGES
    )
    bed = Bed(sandbox.paths(args.state_dir), [h.ip for h in hosts])
    ips = bed.ips
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bed.each(ips, WIPE)
            pgbed.wipe(bed, ips)
            inv = pgbed.inventory(bed, Path(tmp), {ips[0]: 1, ips[1]: 2, ips[2]: 3}, ips[4:6])
            etcdsop("create", "-i", str(inv))
            etcdsop("rbac", "sync", "-i", str(inv))
            pgbed.provision(bed, inv, ips[4:6], ips[:3])
            results = {}
            results["reload all, nothing to change"] = [
                etcdsop("reload", "-t", "all", "-i", str(inv)) for _ in range(args.runs)
            ]
            stale = []
            for _ in range(args.runs):
                # Untimed: point both hosts' configs at one member only, as before a change.
                for n, ip in enumerate(ips[4:6], start=1):
                    pgbed.put(
                        bed,
                        ip,
                        pgbed.PATRONI_CONF,
                        pgbed.patroni_yml(ip, n, ips[:1]),
                        "600",
                        "postgres:postgres",
                    )
                    pgbed.put(
                        bed, ip, pgbed.VIP_CONF, pgbed.vip_yml(bed, n, ips[:1]), "600", "root:root"
                    )
                stale.append(etcdsop("reload", "-t", "all", "-i", str(inv)))
            # Not under the target: etcd3.hosts changed, so Patroni is restarted under
            # pause, one host at a time (it never re-reads its hosts on reload).
            results["reload all, stale configs (Patroni restarted under pause)"] = stale
            leader = [m["Member"] for m in pgbed.members(bed, ips[4]) if m["Role"] == "Leader"]
            report = {
                name: {"median_s": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
                for name, v in results.items()
            }
            report["patroni leader after the runs"] = leader  # type: ignore[assignment]
            print(json.dumps(report, indent=2))
            idle = statistics.median(results["reload all, nothing to change"])
            verdict = "met" if idle <= TARGET_SECONDS else "MISSED"
            print(f"nothing restarts: target <= {TARGET_SECONDS} s: {verdict}")
            pgbed.wipe(bed, ips)
    finally:
        if not args.keep:
            sandbox.down(state_dir=args.state_dir)


if __name__ == "__main__":
    main()
