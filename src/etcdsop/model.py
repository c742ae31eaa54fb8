"""Frozen data the rest of etcdsop works from: the resolved inventory.

`inventory.py` parses YAML into these; nothing else builds them from user input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Role defaults of Pigsty's etcd role (the reference table) plus the few knobs we add.
ETCD_DEFAULTS: Mapping[str, Any] = {
    "etcd_cluster": "etcd",
    "etcd_data": "/data/etcd",
    "etcd_port": 2379,
    "etcd_peer_port": 2380,
    "etcd_init": "new",
    "etcd_learner": False,
    "etcd_election_timeout": 1000,
    "etcd_heartbeat_interval": 100,
    "etcd_root_password": "Etcd.Root",
    "etcd_safeguard": False,
    "etcd_rm_data": True,
    "etcd_rm_pkg": False,
    "etcd_client_cert_auth": False,
    "etcd_quota_backend_bytes": 8 * 1024**3,  # Pigsty's etcd.conf: 8 GiB
    "etcd_api": "v3",
    "cert_validity": "7300d",
    "ca_create": True,
    "admin_username": "dba",
}

DEFAULT_ROOT_PASSWORD = "Etcd.Root"

# Variables whose values are masked wherever they are shown.
SECRET_KEYS = frozenset(
    {
        "etcd_root_password",
        "pg_etcd_password",
        "ansible_password",
        "ansible_become_password",
        "ansible_ssh_pass",
        "ansible_become_pass",
    }
)


@dataclass(frozen=True)
class SshTarget:
    """How to reach one host; None means 'ask ~/.ssh/config, then the default'."""

    address: str  # ansible_host, else the inventory IP
    port: int | None = None  # ansible_port
    user: str | None = None  # ansible_user
    key_file: str | None = None  # ansible_ssh_private_key_file
    # From -o options in ansible_ssh_common_args / ansible_ssh_extra_args.
    known_hosts_file: str | None = None
    strict_host_key_checking: str | None = None  # "yes" | "accept-new" | "no"


@dataclass(frozen=True)
class Member:
    """One host of the etcd group with every variable resolved for it."""

    ip: str  # the inventory key, a validated IP address
    seq: int
    cluster: str
    data_dir: str
    port: int
    peer_port: int
    init: str  # "new" | "existing"
    learner: bool
    election_timeout: int
    heartbeat_interval: int
    root_password: str
    safeguard: bool
    rm_data: bool
    rm_pkg: bool
    cert_validity_days: int
    ssh: SshTarget
    client_cert_auth: bool = False  # etcd_client_cert_auth: clients must present a cert
    quota_backend_bytes: int = 8 * 1024**3  # etcd_quota_backend_bytes: NOSPACE above it
    # Every variable that applies to this host, after precedence (for `inventory`).
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.cluster}-{self.seq}"

    @property
    def peer_url(self) -> str:
        return f"https://{_url_host(self.ip)}:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"https://{_url_host(self.ip)}:{self.port}"


@dataclass(frozen=True)
class PgCluster:
    """A PostgreSQL cluster of the inventory: a group whose vars carry `pg_cluster`."""

    name: str  # pg_cluster
    group: str  # the inventory group it came from
    hosts: tuple[str, ...]
    namespace: str  # pg_namespace, default /pg
    etcd_password: str  # pg_etcd_password, empty means "the cluster name" (weak)
    vip_enabled: bool
    host_vars: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)
    ssh: Mapping[str, SshTarget] = field(default_factory=dict, compare=False)
    # pg_mode citus: pg_shard names Patroni's scope and the etcd user of every group of
    # the shard, whose keys live under <pg_namespace>/<pg_shard>/<pg_group>/.
    shard: str | None = None
    citus_group: int | None = None

    @property
    def scope(self) -> str:
        """Patroni's scope, also the etcd user's name (Pigsty's templates)."""
        return self.shard or self.name

    @property
    def leader_key(self) -> str:
        """The key vip-manager triggers on."""
        base = f"{self.namespace.rstrip('/')}/{self.scope}"
        return f"{base}/{self.citus_group}/leader" if self.shard else f"{base}/leader"


@dataclass(frozen=True)
class InfraHost:
    """A host of the `infra` group: Pigsty's monitoring reads etcd targets there."""

    name: str  # the inventory key
    ssh: SshTarget


@dataclass(frozen=True)
class Inventory:
    path: Path
    members: tuple[Member, ...]  # every host of the etcd group, sorted by IP
    pg_clusters: tuple[PgCluster, ...] = ()
    infra_hosts: tuple[InfraHost, ...] = ()
    extra_vars: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def cluster(self) -> str:
        return self.members[0].cluster

    @property
    def root_password(self) -> str:
        return self.members[0].root_password

    def member(self, ip: str) -> Member | None:
        return next((m for m in self.members if m.ip == ip), None)

    @property
    def files_dir(self) -> Path:
        """`files/` beside the inventory, as in Pigsty (pki/, backup/)."""
        return self.path.resolve().parent / "files"


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
