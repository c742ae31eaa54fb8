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
from etcdsop.model import Inventory

ActionKind = Literal[
    "role_add", "grant_permission", "revoke_permission", "user_add", "change_password", "grant_role"
]


@dataclass(frozen=True)
class PgAccount:
    """The etcd identity of one PostgreSQL cluster (user and role share its name)."""

    cluster: str
    namespace: str
    password: str
    weak: bool  # pg_etcd_password was empty: the password is the cluster name

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
    """One account per PostgreSQL cluster; refuses a cluster named root (InputError)."""
    found = []
    for cluster in inventory.pg_clusters:
        if cluster.name == "root":
            raise InputError(
                f"pg_cluster 'root' (group {cluster.group}) would take over etcd's root "
                "user: rename the cluster"
            )
        found.append(
            PgAccount(
                cluster=cluster.name,
                namespace=cluster.namespace,
                password=cluster.etcd_password or cluster.name,
                weak=not cluster.etcd_password,
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


def sync(
    client: EtcdClient,
    pg_accounts: Sequence[PgAccount],
    report: Reporter,
    *,
    dry_run: bool,
    deferred: list[tuple[PgAccount, Action]] | None = None,
) -> list[AccountResult]:
    """Converge every account through the root client; each step is idempotent.

    With `deferred`, password changes of existing users are collected there instead of
    applied: reload first gives the clients the new password, then changes it (etcd
    drops the user's tokens then, and the clients re-authenticate with the new one).
    """
    results = []
    for account in pg_accounts:
        result = AccountResult(account.cluster, account.prefix, weak_password=account.weak)
        if account.weak:
            report.warn(weak_warning(account))
        roles = client.user_get(account.name)
        ok = roles is not None and _password_ok(client, account)
        actions = plan_account(account, client.role_get(account.name), roles, ok)
        for action in actions:
            if deferred is not None and action.kind == "change_password":
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
