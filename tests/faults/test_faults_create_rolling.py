"""create as a rolling restart (a changed etcd.conf), interrupted after each progress
line, then re-run."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml
from tests.faults.harness import Harness, sweep, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_create_rolling_restart_converges_after_an_interruption_at_every_step(
    harness: Harness,
) -> None:
    ips = harness.ips[:3]
    harness.cli("create", "-l", ",".join(ips))
    write_keys(harness, ips)
    beat = itertools.cycle((150, 100))  # each case changes the heartbeat anew

    def reset() -> None:
        harness.inventory.write_text(
            re.sub(
                r"etcd_heartbeat_interval: \d+",
                f"etcd_heartbeat_interval: {next(beat)}",
                harness.inventory.read_text(),
            )
        )

    doc = yaml.safe_load(harness.inventory.read_text())
    doc["all"]["children"]["etcd"]["vars"]["etcd_heartbeat_interval"] = 100
    harness.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    reset()
    figures = sweep(
        harness,
        "create (rolling restart)",
        ["create", "-l", ",".join(ips)],
        voters_after=ips,
        absent_after=[],
        writer_ips=ips,
        reset=reset,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.keys_lost == 0 and figures.fault_points >= 8
