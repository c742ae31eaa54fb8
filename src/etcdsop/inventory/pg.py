"""PostgreSQL clusters whose Patroni uses this etcd: hosts, namespace and password."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etcdsop.inventory.checks import _check_same, _Checker, _HostReader
from etcdsop.inventory.groups import _Tree
from etcdsop.inventory.ssh import _ssh_target
from etcdsop.inventory.values import (
    _in_range,
    _ip_order,
    _normal_ip,
    _to_bool,
    _to_line,
    _to_namespace,
    _to_pg_name,
)
from etcdsop.model import PgCluster

_to_group = _in_range(0, None)


def _pg_clusters(
    tree: _Tree, extra: Mapping[str, Any], check: _Checker, base: Path
) -> tuple[PgCluster, ...]:
    """Hosts grouped by their resolved pg_cluster, sorted by name.

    Grouping by host, not by group vars: Pigsty's citus layout sets pg_cluster per host.
    """
    by_name: dict[str, list[_HostReader]] = {}
    for host in tree.host_vars:
        values = tree.resolve(host, extra)
        if values.get("pg_cluster") is None:
            continue
        reader = _HostReader(check, host, values)
        name = reader.get("pg_cluster", _to_pg_name, "")
        if _normal_ip(host) is None:
            check.fail_host(host, f"not an IP address (a host of pg cluster {name or '?'})")
        elif "pg_cluster" not in reader.failed:
            by_name.setdefault(name, []).append(reader)
    return tuple(_pg_cluster(tree, name, by_name[name], base) for name in sorted(by_name))


def _pg_cluster(tree: _Tree, name: str, readers: list[_HostReader], base: Path) -> PgCluster:
    readers.sort(key=lambda r: _ip_order(r.host))
    settings = [
        (
            r.optional("pg_namespace", _to_namespace) or "/pg",
            r.optional("pg_etcd_password", _to_line) or "",
            r.optional("pg_vip_enabled", _to_bool) or False,
            *_citus(r),
        )
        for r in readers
    ]
    keys = ("pg_namespace", "pg_etcd_password", "pg_vip_enabled", "pg_shard", "pg_group")
    for reader, setting in zip(readers[1:], settings[1:], strict=True):
        for key, mine, theirs in zip(keys, setting, settings[0], strict=True):
            if key not in reader.failed:
                rule = f"the same on every host of pg cluster {name}"
                _check_same(reader, key, mine, theirs, readers[0].host, rule)
    hosts = tuple(r.host for r in readers)
    return PgCluster(
        name=name,
        group=_cluster_group(tree, name, hosts),
        hosts=hosts,
        namespace=settings[0][0],
        etcd_password=settings[0][1],
        vip_enabled=settings[0][2],
        host_vars={r.host: dict(r.values) for r in readers},
        ssh={r.host: _ssh_target(r, base) for r in readers},
        shard=settings[0][3],
        citus_group=settings[0][4],
    )


def _citus(reader: _HostReader) -> tuple[str | None, int | None]:
    """pg_shard and pg_group when pg_mode is citus (both required then), else None."""
    mode = reader.optional("pg_mode", _to_line) or "pgsql"
    if mode != "citus":
        return None, None
    return reader.get("pg_shard", _to_pg_name, ""), reader.get("pg_group", _to_group, 0)


def _cluster_group(tree: _Tree, name: str, hosts: Sequence[str]) -> str:
    """The group named after the cluster, else the smallest group holding all its hosts."""
    wanted = set(hosts)
    sizes = {
        group: len(members)
        for group in tree.groups_of(hosts[0])
        if group != "all" and wanted <= set(members := tree.members_of(group))
    }
    if name in sizes:
        return name
    return min(sizes, key=lambda group: (sizes[group], group)) if sizes else "all"
