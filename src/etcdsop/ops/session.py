"""A changing command's session: hold the cluster lock, append the audit line."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from etcdsop import audit
from etcdsop.errors import ClusterError, EtcdsopError, GuardRefused, LockLost
from etcdsop.etcd import EtcdApiError, EtcdClient
from etcdsop.events import Reporter
from etcdsop.lock import Holder, cluster_lock, lock_lost
from etcdsop.ops.common import Context, leader_answer

T = TypeVar("T")
LOCK_FILE = ".etcdsop.lock"


def run_locked(
    ctx: Context,
    reporter: Reporter,
    fn: Callable[[Context, Any], T],
    *,
    wait: float,
    argv: list[str] | None = None,
    nospace_ok: bool = False,
) -> T:
    """fn under the admin-node lock and, when the cluster answers, its etcd lock;
    one audit line whatever happens (refused by the lock included)."""
    words = audit.masked_argv(["etcdsop", *(argv if argv is not None else sys.argv[1:])])
    command = " ".join(words)
    files = ctx.inventory.files_dir
    started, stamp = time.monotonic(), datetime.now(timezone.utc)
    outcome, code = "ok", 0
    holder: Holder | None = None
    try:
        with cluster_lock(
            files / LOCK_FILE,
            lambda: _voters(ctx, reporter),
            ctx.inventory.cluster,
            command,
            wait=wait,
            say=reporter.info,
            nospace_ok=nospace_ok,
            on_remote=ctx.set_lock_release,
            on_lost=ctx.abort_all,
        ) as holder:
            return fn(ctx, reporter)
    except GuardRefused as exc:
        outcome, code = "refused", exc.exit_code
        raise
    except LockLost as exc:
        outcome, code = "lock lost", exc.exit_code
        raise
    except EtcdsopError as exc:
        outcome, code = "failed", exc.exit_code
        raise
    except KeyboardInterrupt as exc:
        if ctx.aborted:  # the lock's SIGINT landed while its loss was being raised
            outcome, code = "lock lost", 2
            raise lock_lost(ctx.inventory.cluster) from exc
        outcome, code = "interrupted", 130
        raise
    except BaseException:
        outcome, code = "crashed", 1
        raise
    finally:
        record = {
            "time": stamp.isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "user": holder.user if holder else Holder.me(command).user,
            "pid": holder.pid if holder else None,
            "command": command,
            "cluster": ctx.inventory.cluster,
            "outcome": outcome,
            "exit_code": code,
            "seconds": round(time.monotonic() - started, 2),
            "snapshots": list(ctx.snapshots),
        }
        try:
            audit.append(files, record)
        except OSError as exc:
            reporter.warn(f"audit line not written to {files / audit.LOG_NAME}: {exc}")


def _voters(ctx: Context, reporter: Reporter) -> EtcdClient | None:
    """The started voters to hold the lock on, or None while no cluster answers."""
    view = ctx.probe()
    if not view.live or not view.voter_endpoints():
        return None
    client = ctx.voter_client(view)
    if not _a_leader_is_known(client, view.voter_endpoints()):
        # Authenticating needs a quorum: asked without one it waits out etcd's request
        # timeout per member. The command that restores the quorum must run at once.
        reporter.warn("cluster lock not taken: no member knows a leader (no quorum now)")
        return None
    try:
        accepted = client.check_password("root", ctx.inventory.root_password)
    except EtcdApiError as exc:
        if "authentication is not enabled" not in exc.etcd_message:
            raise
        accepted = True  # an open cluster: no password needed
    except ClusterError as exc:
        # Authenticating needs a quorum: without one (a 1-member cluster waiting for an
        # announced voter) the command that restores it must still run.
        reporter.warn(f"cluster lock not taken, the cluster has no quorum now ({exc.message})")
        return None
    if not accepted:
        # `reload -t etcd` is how the live root password is brought to the inventory's.
        reporter.warn(
            "cluster lock not taken: etcd refuses the inventory's etcd_root_password "
            "(the admin-node lock is held)"
        )
        return None
    return client


def _a_leader_is_known(client: EtcdClient, endpoints: list[str]) -> bool:
    """Does any voter know a leader (asked without a login, which needs a quorum)?

    A voter that cannot tell (etcd 3.4.42+ while not healthy) counts as knowing one:
    the lock is then tried, at worst one login timeout before going on without it."""
    quick = client.with_timeout(3.0)
    for endpoint in endpoints:
        try:
            if leader_answer(quick, endpoint).leader is not False:
                return True
        except ClusterError:
            continue
    return False
