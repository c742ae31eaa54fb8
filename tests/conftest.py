"""Keep the developer's own SSH config and known_hosts out of every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_user_ssh_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETCDSOP_SSH_CONFIG", "none")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
