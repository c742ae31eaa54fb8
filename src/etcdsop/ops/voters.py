"""Who the clients talk to: the live voters, checked against the inventory, and the
root password etcd accepts (converged to the inventory's first when it differs).

Used by `etcdsop reload` (ops/reload.py) and `etcdsop env` (ops/env.py).
"""

from __future__ import annotations

from collections.abc import Callable

from etcdsop.errors import ClusterError
from etcdsop.etcd import EtcdApiError, EtcdClient
from etcdsop.model import Inventory
from etcdsop.ops.common import ClusterView, Context
from etcdsop.ops.outcomes import ReloadResult
from etcdsop.ops.stages import url_sort_key
from etcdsop.plan import find_live
from etcdsop.render import ETCD_PASS


def voter_urls(view: ClusterView) -> list[str]:
    """Client URLs of the started voters, in the inventory's order (by IP)."""
    return sorted(view.voter_endpoints(), key=url_sort_key)


def cross_check(inventory: Inventory, view: ClusterView) -> list[str]:
    """Every way the live membership and the inventory's etcd group disagree."""
    notes = []
    for member in inventory.members:
        live = find_live(member, view.members)
        if live is None:
            notes.append(
                f"inventory member {member.name} ({member.ip}) is not in the live cluster: left "
                f"out of every endpoint list (add it: etcdsop add {member.ip})"
            )
        elif not live.started:
            notes.append(
                f"member {member.name} ({member.ip}) is announced but not started: left out"
            )
        elif live.is_learner:
            notes.append(
                f"member {member.name} ({member.ip}) is a learner: left out of client endpoints "
                f"until promoted (etcdsop promote {member.ip})"
            )
    inventory_peers = {m.peer_url for m in inventory.members}
    for live in view.members:
        if not inventory_peers & set(live.peer_urls):
            kind = "learner" if live.is_learner else "voter"
            where = ", ".join(live.client_urls or live.peer_urls)
            used = "" if live.is_learner or not live.started else ": clients still use it"
            notes.append(
                f"live {kind} {live.name or live.hex_id} ({where}) is not in the inventory's "
                f"etcd group{used} (remove it with etcdsop rm, or add it to the inventory)"
            )
    return notes


def live_root(
    ctx: Context,
    result: ReloadResult,
    *,
    rotate: bool,
    check: Callable[[EtcdClient], None] | None = None,
) -> ClusterView:
    """The live view, converging the root password first when the inventory's is refused.

    The old password comes from /etc/etcd/etcd.pass (any member): it is changed through
    the API first, the files after, so an interrupted run can always be re-run. `check`
    gets a working root client before anything changes (it may refuse the run).
    """
    view = ctx.probe()
    if not view.live:
        return view
    client = ctx.client(view.voter_endpoints() or None)
    try:
        accepted = client.check_password("root", ctx.inventory.root_password)
    except EtcdApiError as exc:
        if "authentication is not enabled" not in exc.etcd_message:
            raise
        result.root_password = "auth not enabled"
        if check is not None:
            check(ctx.voter_client(view))
        return view
    if accepted:
        result.root_password = "unchanged"
        if check is not None:
            check(ctx.voter_client(view))
        return view
    if not rotate:
        raise ClusterError(
            "etcd refuses the inventory's etcd_root_password: `etcdsop reload --target etcd` "
            "changes the live root password (read from /etc/etcd/etcd.pass) to it"
        )
    old = live_password(ctx)
    if check is not None:
        check(root_client(ctx, old))
    if ctx.options.dry_run:
        result.root_password = "would change"
        ctx.report.info("root password: would be changed to the inventory's through the API")
        return view
    root_client(ctx, old).user_change_password("root", ctx.inventory.root_password)
    result.root_password = "changed"
    ctx.report.info("root password changed through the API to the inventory's")
    return view


def root_client(ctx: Context, password: str) -> EtcdClient:
    client = ctx.voter_client()
    return EtcdClient(client.endpoints, client.tls, user="root", password=password)


def live_password(ctx: Context) -> str:
    members = list(ctx.inventory.members)
    found = ctx.parallel(
        members, lambda m: ctx.host(m).run(["cat", ETCD_PASS], check=False, timeout=20)
    )
    candidates = []
    for member in members:
        value = found[member.ip]
        text = getattr(value, "stdout", "") if getattr(value, "rc", 1) == 0 else ""
        if text and text not in candidates:
            candidates.append(text)
    probe = ctx.voter_client()
    for password in candidates:
        if probe.check_password("root", password):
            return password
    raise ClusterError(
        "etcd refuses the inventory's etcd_root_password and every /etc/etcd/etcd.pass: "
        "put the live root password in the inventory"
    )
