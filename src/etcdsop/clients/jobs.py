"""What reload does on each PostgreSQL host, resolved from the inventory before any change.

A bad path or user name in a host's variables stops the run before any host is touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from etcdsop.errors import InputError
from etcdsop.model import Inventory, PgCluster, SshTarget

DEFAULT_VIP_CONF = "/etc/default/vip-manager.yml"
CLIENT_DIR = "/etc/etcd-client"
TLS_VARS = ("pg_etcd_cacert", "pg_etcd_cert", "pg_etcd_key")
TLS_DEFAULTS = (f"{CLIENT_DIR}/ca.crt", f"{CLIENT_DIR}/client.crt", f"{CLIENT_DIR}/client.key")
_PATH_RE = re.compile(r"/[A-Za-z0-9._@+/-]+")
_WORD_RE = re.compile(r"[a-z_][a-z0-9_-]*")


@dataclass(frozen=True)
class PgHostJob:
    """What reload does on one PostgreSQL host (paths resolved from its variables)."""

    ip: str
    ssh: SshTarget
    cluster: PgCluster
    patroni: bool  # Patroni is a target here
    patroni_conf: str | None  # the inventory's patroni_conf (None: found on the host)
    vip_conf: str | None  # None: not a target, or pg_vip_enabled is false
    tls_paths: tuple[str, str, str]  # cacert, cert, key as the configs name them
    ship_tls: bool  # False: the inventory names files someone else manages
    group: str  # pg_dbsu: the group that may read the client key


def _path(values: Mapping[str, Any], key: str, default: str, ip: str) -> str:
    value = str(values.get(key) or default)
    if not _PATH_RE.fullmatch(value) or "/../" in value + "/":
        raise InputError(f"host {ip}: {key} {value!r} must be an absolute path")
    return value


def plan_jobs(inventory: Inventory, targets: Sequence[str]) -> list[PgHostJob]:
    """Resolve every host's paths up front: a bad variable stops the run before any change."""
    jobs = []
    for cluster in inventory.pg_clusters:
        for ip in cluster.hosts:
            values = cluster.host_vars.get(ip, {})
            given = [values.get(k) for k in TLS_VARS]
            if any(given) and not all(given):
                raise InputError(
                    f"host {ip}: set all of {', '.join(TLS_VARS)} or none (etcdsop then ships "
                    f"its own files to {CLIENT_DIR})"
                )
            ship = not any(given)
            tls = tuple(
                _path(values, k, d, ip) for k, d in zip(TLS_VARS, TLS_DEFAULTS, strict=True)
            )
            group = str(values.get("pg_dbsu") or "postgres")
            if not _WORD_RE.fullmatch(group):
                raise InputError(f"host {ip}: pg_dbsu {group!r} is not a user name")
            jobs.append(
                PgHostJob(
                    ip=ip,
                    ssh=cluster.ssh[ip],
                    cluster=cluster,
                    patroni="patroni" in targets,
                    patroni_conf=_path(values, "patroni_conf", "", ip)
                    if values.get("patroni_conf")
                    else None,
                    vip_conf=_path(values, "vip_manager_conf", DEFAULT_VIP_CONF, ip)
                    if "vip" in targets and cluster.vip_enabled
                    else None,
                    tls_paths=(tls[0], tls[1], tls[2]),
                    ship_tls=ship,
                    group=group,
                )
            )
    return jobs


def host_port(url: str) -> str:
    """https://10.0.0.1:2379 -> 10.0.0.1:2379, as Patroni's etcd3.hosts wants it."""
    return urlsplit(url).netloc
