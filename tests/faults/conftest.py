"""The fault-injection suite runs on the e2e suite's sandbox hosts."""

from tests.e2e.conftest import bed, clean
from tests.faults.harness import harness

__all__ = ["bed", "clean", "harness"]
