"""Load time of a large Pigsty inventory (600 PostgreSQL clusters, 1,800 hosts behind a
`nodes` group): medians of N loads in this process. No sandbox needed.

    python3 bench/bench_inventory.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.unit.test_inventory import large_inventory  # noqa: E402

from etcdsop.inventory import load_inventory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "pigsty.yml"
        path.write_text(yaml.safe_dump(large_inventory(600)))
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            load_inventory(path)
            times.append(time.perf_counter() - started)
    runs = ", ".join(f"{t:.2f}" for t in times)
    libyaml = "with" if yaml.__with_libyaml__ else "without"
    median = statistics.median(times)
    print(f"load 600 pg clusters ({libyaml} libyaml): median {median:.2f}s [{runs}]")


if __name__ == "__main__":
    main()
