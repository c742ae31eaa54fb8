"""create of a new cluster, interrupted after each progress line, then re-run."""

from __future__ import annotations

import pytest
from tests.faults.harness import Harness, sweep

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_create_of_a_new_cluster_converges_after_an_interruption_at_every_step(
    harness: Harness,
) -> None:
    ips = harness.ips[:3]

    def reset() -> None:
        harness.bed.wipe(ips)

    figures = sweep(
        harness,
        "create (new cluster)",
        ["create", "-l", ",".join(ips)],
        voters_after=ips,
        absent_after=[],
        writer_ips=None,
        reset=reset,
        keys=False,
    )
    assert figures.failures == [], "\n\n".join(figures.failures)
    assert figures.fault_points >= 10
