"""`etcdsop rbac sync`: one etcd role and user per PostgreSQL cluster, as Pigsty makes them.

For each cluster: role `<pg_cluster>` with readwrite on `<pg_namespace>/<pg_cluster>/`
and nothing else, user `<pg_cluster>` with `pg_etcd_password`, granted that role.
The plan is a pure function of what etcd holds now, so a re-run changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from etcdsop.errors import InputError
from etcdsop.etcd import EtcdApiError, EtcdClient, Permission
from etcdsop.events import Reporter
from etcdsop.model import Inventory, PgCluster

ActionKind = Literal[
    "role_add", "grant_permission", "revoke_permission", "user_add", "change_password", "grant_role"
]


@dataclass(frozen=True)
class PgAccount:
    """The etcd identity of one PostgreSQL cluster (user and role share its name); of a
    whole Citus shard (pg_shard) for its groups, as Pigsty's pg_etcd task makes it."""

    cluster: str  # the user's name: pg_cluster, or pg_shard with pg_mode citus
    namespace: str
    password: str
    weak: bool  # pg_etcd_password was empty: the password is the cluster name
    clusters: tuple[str, ...] = ()  # the pg_clusters that use it (default: cluster)

    @property
    def members(self) -> tuple[str, ...]:
        return self.clusters or (self.cluster,)

    @property
    def name(self) -> str:
        return self.cluster

    @property
    def prefix(self) -> str:
        # The trailing slash keeps pg-test from reaching pg-test2's keys.
        return f"{self.namespace.rstrip('/')}/{self.cluster}/"

    @property
    def permission(self) -> Permission:
        return Permission.prefix("READWRITE", self.prefix)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    text: str
    permission: Permission | None = None


@dataclass
class AccountResult:
    cluster: str
    prefix: str
    actions: list[str] = field(default_factory=list)
    weak_password: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "user": self.cluster,
            "role": self.cluster,
            "prefix": self.prefix,
            "actions": self.actions,
            "weak_password": self.weak_password,
        }


def accounts(inventory: Inventory) -> list[PgAccount]:
    """One account per PostgreSQL cluster (per shard for Citus); refuses a cluster named
    root and a shard whose groups disagree on the password (InputError)."""
    by_user: dict[str, list[PgCluster]] = {}
    for cluster in inventory.pg_clusters:
        if cluster.scope == "root":
            raise InputError(
                f"pg_cluster 'root' (group {cluster.group}) would take over etcd's root "
                "user: rename the cluster"
                if cluster.shard is None
                else f"pg_shard 'root' (pg cluster {cluster.name}) would take over etcd's "
                "root user: rename the shard"
            )
        by_user.setdefault(cluster.scope, []).append(cluster)
    found = []
    for user, clusters in by_user.items():
        first = clusters[0]
        for other in clusters[1:]:
            for what, mine, theirs in (
                ("pg_etcd_password", other.etcd_password, first.etcd_password),
                ("pg_namespace", other.namespace, first.namespace),
            ):
                if mine != theirs:
                    raise InputError(
                        f"pg clusters {first.name} and {other.name} share the etcd user "
                        f"{user} (pg_shard) but not their {what}: make it the same"
                    )
        found.append(
            PgAccount(
                cluster=user,
                namespace=first.namespace,
                password=first.etcd_password or user,
                weak=not first.etcd_password,
                clusters=tuple(c.name for c in clusters),
            )
        )
    return found


def weak_warning(account: PgAccount) -> str:
    return (
        f"pg cluster {account.cluster}: pg_etcd_password is empty, so its etcd password is "
        "the cluster name (guessable, as in Pigsty): set pg_etcd_password"
    )


def _range(perm: Permission) -> str:
    end = perm.range_end.decode(errors="replace")
    return f"{perm.perm_type} [{perm.key.decode(errors='replace')}, {end})"


def plan_account(
    account: PgAccount,
    permissions: Sequence[Permission] | None,
    user_roles: Sequence[str] | None,
    password_ok: bool,
) -> list[Action]:
    """What to change, from the role's permissions and the user's roles (None: missing)."""
    name, want = account.name, account.permission
    actions: list[Action] = []
    if permissions is None:
        actions.append(Action("role_add", f"create role {name}"))
    if want not in (permissions or ()):
        actions.append(Action("grant_permission", f"grant {_range(want)} to role {name}", want))
    for perm in permissions or ():
        if perm != want:
            text = f"revoke {_range(perm)} from role {name} (not the cluster's prefix)"
            actions.append(Action("revoke_permission", text, perm))
    if user_roles is None:
        actions.append(Action("user_add", f"create user {name}"))
    elif not password_ok:
        actions.append(Action("change_password", f"update the password of user {name}"))
    if name not in (user_roles or ()):
        actions.append(Action("grant_role", f"grant role {name} to user {name}"))
    return actions


def _password_ok(client: EtcdClient, account: PgAccount) -> bool:
    try:
        return client.check_password(account.name, account.password)
    except EtcdApiError as exc:
        if "authentication is not enabled" in exc.etcd_message:
            return False  # cannot tell: set it
        raise


PasswordChange = tuple[PgAccount, Action]


def plan(
    client: EtcdClient, pg_accounts: Sequence[PgAccount]
) -> list[tuple[PgAccount, list[Action]]]:
    """What each account needs, read through the root client; changes nothing."""
    plans = []
    for account in pg_accounts:
        roles = client.user_get(account.name)
        ok = roles is not None and _password_ok(client, account)
        plans.append((account, plan_account(account, client.role_get(account.name), roles, ok)))
    return plans


def password_changes(plans: Sequence[tuple[PgAccount, list[Action]]]) -> list[PasswordChange]:
    return [(a, x) for a, actions in plans for x in actions if x.kind == "change_password"]


def sync(
    client: EtcdClient,
    pg_accounts: Sequence[PgAccount],
    report: Reporter,
    *,
    dry_run: bool,
    deferred: list[PasswordChange] | None = None,
    plans: Sequence[tuple[PgAccount, list[Action]]] | None = None,
) -> list[AccountResult]:
    """Converge every account through the root client; each step is idempotent.

    A password change of an existing user is never applied here: with `deferred` it is
    collected there (reload changes it once every client of the cluster has the new one,
    then reloads them at once); without, the caller must have refused it already.
    """
    results = []
    for account, actions in plans if plans is not None else plan(client, pg_accounts):
        result = AccountResult(account.cluster, account.prefix, weak_password=account.weak)
        if account.weak:
            report.warn(weak_warning(account))
        for action in actions:
            if action.kind == "change_password":
                if deferred is None:
                    raise AssertionError("a password change must be deferred or refused")
                deferred.append((account, action))
            elif not dry_run:
                apply(client, account, action)
            result.actions.append(action.text)
        if actions:
            verb = "would " if dry_run else ""
            report.host(account.cluster, f"{verb}{'; '.join(a.text for a in actions)}", "changed")
        else:
            report.host(account.cluster, f"user and role in sync ({account.prefix})", "ok")
        results.append(result)
    return results


def apply(client: EtcdClient, account: PgAccount, action: Action) -> None:
    name = account.name
    if action.kind == "role_add":
        client.role_add(name)
    elif action.kind == "grant_permission":
        assert action.permission is not None
        client.role_grant_permission(name, action.permission)
    elif action.kind == "revoke_permission":
        assert action.permission is not None
        client.role_revoke_permission(name, action.permission)
    elif action.kind == "user_add":
        if not client.user_add(name, account.password):  # raced with another run
            client.user_change_password(name, account.password)
    elif action.kind == "change_password":
        client.user_change_password(name, account.password)
    else:
        client.user_grant_role(name, name)
