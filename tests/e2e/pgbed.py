"""A real 2-node Patroni cluster (PostgreSQL 15, Debian's patroni 3.0.2) and vip-manager
on sandbox hosts, set up the way Pigsty leaves them, for the reload tests.

The layout, units and templates are the product's (etcdsop.sandbox.postgres, also
behind `etcdsop sandbox postgres`); this module adds the tests' inventories, an old
(Pigsty 3.x) cluster beside pg-test, and their passwords.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.conftest import PASSWORD, Bed

from etcdsop.etcd import EtcdClient, TlsFiles
from etcdsop.sandbox import postgres
from etcdsop.sandbox.postgres import (
    CLUSTER,
    PATRONI_CONF,
    VIP_CONF,
    instance_conf,
    lay_out,
    members,
    patroni_log,
    wait_members,
)

__all__ = [
    "CLUSTER",
    "PATRONI_CONF",
    "VIP_CONF",
    "instance_conf",
    "lay_out",
    "members",
    "patroni_log",
    "wait_members",
]

OLD_CLUSTER = "pg-old"  # one host laid out as Pigsty 3.0-3.4 did
PG_PASSWORD = "Pg.Etcd-e2e.1"
OLD_PASSWORD = "Pg.Old-e2e.1"
VIP_ADDRESS = "198.18.{subnet}.99/24"
OLD_VIP_ADDRESS = "198.18.{subnet}.98/24"


def wipe(bed: Bed, ips: Sequence[str]) -> None:
    bed.each(list(ips), postgres.WIPE)


def _pg_group(
    name: str, hosts: Sequence[str], password: str, vip: str, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "hosts": {
            ip: {"pg_seq": n, "pg_role": "primary" if n == 1 else "replica"}
            for n, ip in enumerate(hosts, start=1)
        },
        "vars": {
            "pg_cluster": name,
            "pg_etcd_password": password,
            "pg_vip_enabled": True,
            "pg_vip_address": vip,
            "pg_vip_interface": "eth0",
            **extra,
        },
    }


def inventory(
    bed: Bed,
    where: Path,
    etcd: dict[str, int],
    pg: Sequence[str],
    *,
    root_password: str = PASSWORD,
    pg_vars: dict[str, Any] | None = None,
    old: str | None = None,
    old_vars: dict[str, Any] | None = None,
) -> Path:
    """Pigsty-shaped: the etcd group (ip -> etcd_seq), pg-test and (with old) pg-old."""
    children: dict[str, Any] = {
        "etcd": {
            "hosts": {ip: {"etcd_seq": seq} for ip, seq in etcd.items()},
            "vars": {"etcd_cluster": "etcd", "etcd_root_password": root_password},
        },
    }
    if pg:
        children[CLUSTER] = _pg_group(
            CLUSTER, pg, PG_PASSWORD, vip_address(bed), dict(pg_vars or {})
        )
    if old:
        address = OLD_VIP_ADDRESS.format(subnet=bed.ips[0].split(".")[2])
        children[OLD_CLUSTER] = _pg_group(
            OLD_CLUSTER, [old], OLD_PASSWORD, address, dict(old_vars or {})
        )
    doc = {
        "all": {
            "children": children,
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(bed.paths.ssh_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={bed.paths.known_hosts}"
                " -o StrictHostKeyChecking=accept-new",
            },
        }
    }
    path = where / "pigsty.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def vip_address(bed: Bed) -> str:
    return VIP_ADDRESS.format(subnet=bed.ips[0].split(".")[2])


def patroni_yml(
    ip: str, seq: int, etcd_ips: Sequence[str], *, password: str = PG_PASSWORD, **kw: Any
) -> str:
    """The product's rendering of Pigsty's oltp.yml, with the tests' etcd password."""
    return postgres.patroni_yml(ip, seq, etcd_ips, password=password, **kw)


def vip_yml(
    bed: Bed,
    seq: int,
    etcd_ips: Sequence[str],
    *,
    password: str = PG_PASSWORD,
    v4: bool = True,
    address: str = "",
    **kw: Any,
) -> str:
    """The product's vip-manager.yml; pg-test's VIP, or pg-old's before v4."""
    subnet = bed.ips[0].split(".")[2]
    default = vip_address(bed) if v4 else OLD_VIP_ADDRESS.format(subnet=subnet)
    return postgres.vip_yml(
        seq, etcd_ips, address=address or default, password=password, v4=v4, **kw
    )


def put(bed: Bed, ip: str, path: str, content: str | bytes, mode: str, owner: str) -> None:
    bed.put(ip, path, content, mode, owner)


def provision(
    bed: Bed, inv: Path, pg: Sequence[str], etcd_ips: Sequence[str], old: str | None = None
) -> None:
    """What Pigsty's pgsql.yml would have left: configs, TLS files, running clusters."""
    pki = inv.parent / "files" / "pki"
    for seq, ip in enumerate(pg, start=1):
        conf = patroni_yml(ip, seq, etcd_ips, members=pg)
        lay_out(bed, pki, ip, CLUSTER, seq, conf, vip_yml(bed, seq, etcd_ips), True)
    if old:
        conf = patroni_yml(old, 1, etcd_ips, cluster=OLD_CLUSTER, password=OLD_PASSWORD, v4=False)
        vip = vip_yml(bed, 1, etcd_ips, cluster=OLD_CLUSTER, v4=False)
        lay_out(bed, pki, old, OLD_CLUSTER, 1, conf, vip, False)
        bed.ssh(old, "systemctl start patroni")
    postgres.start(bed, pg)
    if old:
        wait_members(bed, old, {f"{OLD_CLUSTER}-1": ("Leader", "running")})
        # No etcd user in its file yet: it fails to read its key until reload gives it one.
        bed.ssh(old, "systemctl start vip-manager")


def pg_client(
    inv: Path, etcd_ips: Sequence[str], password: str = PG_PASSWORD, user: str = CLUSTER
) -> EtcdClient:
    """A PostgreSQL cluster's etcd user, through etcdsop's CN-less admin certificate."""
    pki = inv.parent / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )
    return EtcdClient([f"https://{ip}:2379" for ip in etcd_ips], tls, user=user, password=password)
