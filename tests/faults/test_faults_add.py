"""add, interrupted after each progress line (SIGINT, SIGKILL), then re-run."""

from __future__ import annotations

import pytest
from tests.faults.harness import Harness, sweep, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_add_converges_after_an_interruption_at_every_step(harness: Harness) -> None:
    ips = harness.ips
    harness.cli("create", "-l", ",".join(ips[:3]))
    write_keys(harness, ips[:3])

    def reset() -> None:
        harness.cli("rm", ips[3], "-y", "--no-backup", "--wait", "60")
        harness.bed.wipe([ips[3]])

    figures = sweep(
        harness,
        "add",
        ["add", ips[3], "-y"],
        voters_after=ips,
        absent_after=[],
        writer_ips=ips[:3],
        reset=reset,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.keys_lost == 0 and figures.fault_points >= 10
