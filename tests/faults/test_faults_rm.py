"""rm, interrupted after each progress line (SIGINT, SIGKILL), then re-run."""

from __future__ import annotations

import pytest
from tests.faults.harness import Harness, sweep, write_keys

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_rm_converges_after_an_interruption_at_every_step(harness: Harness) -> None:
    ips = harness.ips
    harness.cli("create", "-l", ",".join(ips))
    write_keys(harness, ips)

    def reset() -> None:
        harness.bed.wipe([ips[3]])
        harness.cli("add", ips[3], "-y", "--wait", "60")

    figures = sweep(
        harness,
        "rm",
        ["rm", ips[3], "-y"],
        voters_after=ips[:3],
        absent_after=[ips[3]],
        writer_ips=ips[:3],
        reset=reset,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.keys_lost == 0 and figures.fault_points >= 8
