"""Benchmarks on sandbox hosts: medians of N runs of the real `etcdsop` command.

Run as root: `make bench` (or `python3 bench/run.py --runs 3`). It boots its own
sandbox (subnet 198.18.4.0/24, state dir /var/lib/etcdsop/bench; --subnet and --state-dir
pick others) and tears it down. Setup between runs (wiping hosts) is not timed. The
machine is shared and noisy: read medians and ratios, not single timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from etcdsop import sandbox

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path("/var/lib/etcdsop/bench")  # --state-dir changes it
SUBNET = 4
WIPE = (
    "systemctl disable --now etcd >/dev/null 2>&1; rm -rf /etc/etcd /data/etcd /var/lib/etcd/*"
    " /etc/systemd/system/etcd.service /etc/profile.d/etcdctl.sh; systemctl daemon-reload"
)
TARGETS = {  # seconds, from the issues
    "create 3": 4.0,
    "re-run (no change)": 1.5,
    "--help": 0.3,
    "add 1 (learner -> voter)": 5.0,
    "rm 1 (with snapshot)": 3.0,
}
# Relative targets: (numerator, denominator, at most this ratio).
RATIOS = [
    ("create 5", "create 3", 1.30),
    ("destroy 3 (with snapshot)", "create 3", 1.0),
    ("destroy 5 (with snapshot)", "create 5", 1.0),
]


def etcdsop(*args: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "etcdsop", *args], capture_output=True, text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"etcdsop {' '.join(args)} failed:\n{proc.stderr}")
    return took


def ssh_all(ips: list[str], command: str) -> None:
    procs = [
        subprocess.Popen([*sandbox.ssh_command(ip, state_dir=STATE_DIR), command]) for ip in ips
    ]
    for p in procs:
        p.wait()


def write_inventory(where: Path, ips: list[str]) -> Path:
    p = sandbox.paths(STATE_DIR)
    doc = {
        "all": {
            "children": {
                "etcd": {
                    "hosts": {ip: {"etcd_seq": i + 1} for i, ip in enumerate(ips)},
                    "vars": {"etcd_cluster": "etcd", "etcd_root_password": "Bench.Pw.1"},
                }
            },
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(p.ssh_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={p.known_hosts}",
            },
        }
    }
    where.mkdir(parents=True, exist_ok=True)
    path = where / "pigsty.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def measure(runs: int, setup: Callable[[], None], action: Callable[[], float]) -> list[float]:
    times = []
    for _ in range(runs):
        setup()
        times.append(action())
    return times


def main() -> None:
    global STATE_DIR
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the bench sandbox up")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--subnet", type=int, default=SUBNET, help="198.18.N.0/24")
    parser.add_argument(
        "--only", default="", help="comma-separated benchmark names (prefixes), e.g. create,destroy"
    )
    parser.add_argument(
        "--e2e-base",
        action="store_true",
        help="boot on the e2e tests' base image (PostgreSQL/Patroni installed, never started) "
        "instead of building the plain one",
    )
    args = parser.parse_args()
    STATE_DIR = args.state_dir
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]

    def chosen(name: str) -> bool:
        return not wanted or any(name.startswith(w) for w in wanted)

    extra: tuple[str, ...] = ()
    if args.e2e_base:
        sys.path.insert(0, str(ROOT))
        from tests.e2e.conftest import PG_PACKAGES

        extra = PG_PACKAGES
    hosts = sandbox.up(6, state_dir=STATE_DIR, subnet_index=args.subnet, extra_packages=extra)
    ips = [h.ip for h in hosts]
    work = Path(tempfile.mkdtemp(prefix="etcdsop-bench-"))
    results: dict[str, list[float]] = {}
    try:
        inv3, inv4, inv5 = (write_inventory(work / f"c{n}", ips[:n]) for n in (3, 4, 5))
        # The CA exists before etcd is set up (as Pigsty's does); node certs are new each run.
        for inv in (inv3, inv5, inv4):
            ssh_all(ips, WIPE)
            etcdsop("create", "-i", str(inv), "-l", ",".join(ips[:3]))

        def blank(inv: Path) -> Callable[[], None]:
            def setup() -> None:
                ssh_all(ips, WIPE)
                shutil.rmtree(inv.parent / "files" / "pki" / "etcd", ignore_errors=True)

            return setup

        def blank_create(inv: Path) -> float:
            blank(inv)()
            return etcdsop("create", "-i", str(inv))

        # create N from nothing, then destroy N (verified snapshot, every member stopped,
        # data deleted) of what it created: each pair runs under the same machine load.
        for n, inv in ((3, inv3), (5, inv5)):
            if chosen(f"create {n}") or chosen(f"destroy {n}"):
                pairs = [
                    (blank_create(inv), etcdsop("rm", "-i", str(inv), "-y"))
                    for _ in range(args.runs)
                ]
                results[f"create {n}"] = [c for c, _ in pairs]
                results[f"destroy {n} (with snapshot)"] = [d for _, d in pairs]

        def created(inv: Path) -> Callable[[], None]:
            def setup() -> None:
                blank_create(inv)

            return setup

        # Data kept: every member stops gracefully, the leader last.
        name = "destroy 3, data kept (etcd_rm_data=false)"
        if chosen(name):
            results[name] = measure(
                args.runs,
                created(inv3),
                lambda: etcdsop("rm", "-i", str(inv3), "-y", "-e", "etcd_rm_data=false"),
            )
        if chosen("re-run (no change)"):
            created(inv5)()
            results["re-run (no change)"] = measure(
                args.runs, lambda: None, lambda: etcdsop("create", "-i", str(inv5))
            )
        if chosen("--help"):
            results["--help"] = measure(max(args.runs, 5), lambda: None, lambda: etcdsop("--help"))

        def three_of_four() -> None:
            ssh_all(ips, WIPE)
            etcdsop("create", "-i", str(inv4), "-l", ",".join(ips[:3]))
            time.sleep(5)  # etcd refuses membership changes in its first 5 s (not ours)

        if chosen("add 1"):
            results["add 1 (learner -> voter)"] = measure(
                args.runs, three_of_four, lambda: etcdsop("add", "-i", str(inv4), ips[3], "-y")
            )

        def four() -> None:
            three_of_four()
            etcdsop("add", "-i", str(inv4), ips[3], "-y")

        if chosen("rm 1"):
            results["rm 1 (with snapshot)"] = measure(
                args.runs, four, lambda: etcdsop("rm", "-i", str(inv4), ips[3], "-y")
            )
    finally:
        ssh_all(ips, WIPE)
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            sandbox.down(state_dir=STATE_DIR)
    report(results)


def report(results: dict[str, list[float]]) -> None:
    print(f"{'benchmark':<28} {'median':>8} {'target':>8}  runs")
    for name, times in results.items():
        median = statistics.median(times)
        target = TARGETS.get(name)
        mark = "" if target is None else (" ok" if median <= target else " OVER")
        shown = f"{target:.1f}s" if target else "-"
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:<28} {median:>7.2f}s {shown:>8}{mark}  [{runs}]")
    for top, bottom, most in RATIOS:
        if top in results and bottom in results:
            ratio = statistics.median(results[top]) / statistics.median(results[bottom])
            mark = "ok" if ratio <= most else "OVER"
            print(f"{top} / {bottom} = {ratio:.2f} (target <= {most:.2f}) {mark}")
    print(json.dumps({k: statistics.median(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
