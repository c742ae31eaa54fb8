"""Keep the developer's own SSH config and known_hosts out of every test; let the
commands the tests interrupt see Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_user_ssh_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETCDSOP_SSH_CONFIG", "none")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    # Started in the background by a shell without job control (`make test &`), pytest
    # inherits SIGINT ignored, and so would every etcdsop it starts: Python then never
    # raises KeyboardInterrupt, and the tests that interrupt a command with SIGINT saw
    # it run to the end. A handled signal is reset to the default in a child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# `make test` runs two workers with --dist loadfile: xdist hands out files in collection
# order, so the longest files go first and the short ones fill in at the end (a long
# file started last kept one worker busy minutes after the other had finished). The
# order is from `--durations` of full runs on this 2-core machine, longest first.
LONGEST_FIRST = (
    "tests/faults/test_faults_create_new.py",
    "tests/faults/test_faults_reload.py",
    "tests/faults/test_faults_add.py",
    "tests/faults/test_faults_create_rolling.py",
    "tests/faults/test_faults_rm.py",
    "tests/e2e/test_reload.py",
    "tests/faults/test_faults_host.py",
    "tests/e2e/test_membership.py",
    "tests/faults/test_faults_destroy.py",
    "tests/e2e/test_patroni_failures.py",
    "tests/e2e/test_slow_join.py",
    "tests/e2e/test_disaster.py",
    "tests/e2e/test_recover_safety.py",
    "tests/e2e/test_upgrade.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def weight(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=weight)  # stable: a file's own order is kept
