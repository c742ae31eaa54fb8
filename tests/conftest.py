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
