"""When a PostgreSQL cluster's etcd password may change, so no client is ever stranded.

etcd drops a user's tokens when its password changes; every client then
re-authenticates with the password it holds. So the change is made only when every
client of the cluster (Patroni on each host, vip-manager where pg_vip_enabled) is in
the same run and its config edit succeeded; right after it, Patroni is reloaded (it
re-reads the credentials) and vip-manager restarted, all hosts at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdsop.errors import GuardRefused
from etcdsop.model import Inventory, PgCluster
from etcdsop.ops.rbac import PasswordChange


def client_targets(cluster: PgCluster) -> list[str]:
    """The reload targets that hold a cluster's etcd password."""
    return ["patroni", "vip"] if cluster.vip_enabled else ["patroni"]


def guard(inventory: Inventory, changes: Sequence[PasswordChange], targets: Sequence[str]) -> None:
    """Refuse (before anything changes) a password change some client would miss."""
    by_name = {c.name: c for c in inventory.pg_clusters}
    for account, _ in changes:
        clusters = [by_name[name] for name in account.members]
        need = [t for t in ("patroni", "vip") if any(t in client_targets(c) for c in clusters)]
        missing = [t for t in need if t not in targets]
        if missing:
            who = " and ".join({"patroni": "Patroni", "vip": "vip-manager"}[t] for t in missing)
            names = ", ".join(c.name for c in clusters)
            raise GuardRefused(
                f"pg cluster {names}: pg_etcd_password differs from etcd user "
                f"{account.name}'s password, and {who} would keep the old one (this run does "
                f"not reload them): run them together, etcdsop reload -t {','.join(need)}"
            )
