"""The README table from the last fault-suite run: python3 -m tests.faults.report [DIR]

DIR defaults to $ETCDSOP_FAULTS_REPORT or /tmp/etcdsop-faults (one JSON per sweep)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults.harness import REPORT_DIR


def table(where: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(where.glob("*.json"))]
    sweeps = [r for r in rows if r["fault_points"] > 1]  # every burst of lines x 2 signals
    faults = [r for r in rows if r["fault_points"] == 1]  # one host or network fault
    lines = [
        "| command | progress lines | bursts | fault points | converged | keys lost "
        "| longest write outage | where |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sweeps + faults:
        outage = f"{r['longest_outage_s']:.2f} s" if r["command"] not in NO_WRITER else "n/a"
        lines.append(
            f"| {r['command']} | {r.get('progress_lines') or ''} "
            f"| {r['fault_points'] // 2 if r.get('progress_lines') else ''} | {r['fault_points']} "
            f"| {r['converged']} | {r['keys_lost']} "
            f"| {outage} | {r.get('longest_outage_began', '')} |"
        )
    return "\n".join(lines)


# No writer runs where there is no cluster yet (create) or none is left (destroy).
NO_WRITER = {"create (new cluster)", "destroy"}


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else REPORT_DIR))
