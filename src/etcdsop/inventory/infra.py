"""Hosts of the `infra` group, where Pigsty's VictoriaMetrics finds its etcd targets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etcdsop.inventory.checks import _Checker, _HostReader
from etcdsop.inventory.groups import _Tree
from etcdsop.inventory.ssh import _ssh_target
from etcdsop.model import InfraHost

INFRA_GROUP = "infra"


def _infra_hosts(
    tree: _Tree, extra: Mapping[str, Any], check: _Checker, base: Path
) -> tuple[InfraHost, ...]:
    """In file order; only their connection vars are read (they need not be IPs)."""
    return tuple(
        InfraHost(
            name=host, ssh=_ssh_target(_HostReader(check, host, tree.resolve(host, extra)), base)
        )
        for host in tree.members_of(INFRA_GROUP)
    )
