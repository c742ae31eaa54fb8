"""Patroni and vip-manager on the PostgreSQL hosts: TLS files, config edits, reload.

Every host is handled on its own (clients/host.py): a missing or broken config fails
that host (its files untouched) while the others go on. Patroni is reloaded (SIGHUP
re-reads its credentials), vip-manager restarted (it has no reload); only where
something changed and only if it was running. Where a cluster's etcd password
changes, its hosts are all edited first and reloaded together right after the change
(clients/password.py). A Patroni whose etcd hosts changed (or that still runs an older
etcd3 section) is also marked for a restart under maintenance mode, done later by
clients/restart.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from etcdsop.clients.confedit import EtcdAccess
from etcdsop.clients.host import PgHost
from etcdsop.clients.jobs import PgHostJob, host_port
from etcdsop.clients.restart import PatroniNode
from etcdsop.errors import ClusterError
from etcdsop.model import PgCluster
from etcdsop.ops.common import Context
from etcdsop.ops.outcomes import ReloadResult
from etcdsop.ops.rbac import PasswordChange, PgAccount
from etcdsop.remote import run_parallel

PLACEHOLDER = b"(certificate to be issued)\n"


def client_pems(ctx: Context, cluster: PgCluster) -> tuple[bytes, bytes, bytes]:
    """CA, and the cluster's CN-less client cert and key (issued unless a dry run)."""
    pki = ctx.pki
    name = f"pg-{cluster.name}"
    ca = pki.ca_cert_path.read_bytes()
    if ctx.options.dry_run:
        if pki.plan_client(name):
            return ca, PLACEHOLDER, PLACEHOLDER
        base = ctx.pki_dir / "etcdsop" / name
        return ca, base.with_suffix(".crt").read_bytes(), base.with_suffix(".key").read_bytes()
    issued = pki.ensure_client(name)
    if issued.issued:
        ctx.report.info(f"certificate {name} issued: {issued.reason}")
    return ca, issued.cert_pem, issued.key_pem


class ClientPems:
    """Each cluster's client cert and key for the hosts that need etcdsop's own set,
    issued once, on first use (hosts whose Pigsty certificates are valid need none)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._done: dict[str, tuple[bytes, bytes, bytes]] = {}

    def __call__(self, cluster: PgCluster) -> tuple[bytes, bytes, bytes]:
        with self._lock:
            if cluster.name not in self._done:
                self._done[cluster.name] = client_pems(self.ctx, cluster)
            return self._done[cluster.name]


@dataclass
class PgPending:
    """What reload_pg_hosts leaves for later: the running Patronis (to restart where
    needed). Its SSH connections are the context's, closed with it."""

    nodes: list[PatroniNode] = field(default_factory=list)

    @property
    def restarts(self) -> list[PatroniNode]:
        return [n for n in self.nodes if n.reason]


def reload_pg_hosts(
    ctx: Context,
    jobs: Sequence[PgHostJob],
    accounts: Sequence[PgAccount],
    endpoints: Sequence[str],
    result: ReloadResult,
    stamp: str,
    passwords: Sequence[PasswordChange] = (),
    change_password: Callable[[PasswordChange], None] | None = None,
) -> PgPending:
    """Edit every host in memory, write, then reload; where a cluster's password changes,
    write first, change it in etcd, then reload that cluster's clients at once."""
    pending = PgPending()
    if not jobs:
        ctx.report.info("no PostgreSQL cluster in the inventory")
        return pending
    by_cluster = {name: a for a in accounts for name in a.members}
    ca_pem = ctx.pki.ca_cert_path.read_bytes()
    pems = ClientPems(ctx)
    workers: list[PgHost] = []
    for job in jobs:
        if not job.patroni and job.vip_conf is None:
            continue
        account = by_cluster[job.cluster.name]
        access = EtcdAccess(
            hosts=tuple(host_port(u) for u in endpoints),
            cacert=job.tls_paths[0],
            cert=job.tls_paths[1],
            key=job.tls_paths[2],
            username=account.name,
            password=account.password,
        )
        host = ctx.remote(job.ip, job.ssh)
        secrets = [] if account.weak else [account.password]
        workers.append(PgHost(ctx, host, job, access, ca_pem, pems, secrets, stamp))
    forks = ctx.options.forks

    def each(action: Callable[[PgHost], object], chosen: Sequence[PgHost]) -> dict[str, object]:
        return run_parallel(chosen, action, forks=forks, key=lambda w: w.job.ip)

    for ip, value in each(lambda w: w.prepare(), workers).items():
        if isinstance(value, ClusterError):
            next(w for w in workers if w.job.ip == ip).fail_all(value.message)
    changing = {a.cluster: (a, x) for a, x in passwords}

    def of(name: str) -> list[PgHost]:
        members = changing[name][0].members
        return [w for w in workers if w.job.cluster.name in members]

    for name in list(changing):
        mine = of(name)
        broken = [f"{w.job.ip} {t}: {m}" for w in mine for t, m in w.failures.items()]
        if broken:
            # Every client must take the new password in the same step: none does.
            del changing[name]
            for w in mine:
                w.keep_password(f"etcd password of {name} left unchanged: " + "; ".join(broken))
    dry = ctx.options.dry_run
    deferred = [w for name in changing for w in of(name)]
    outcomes = each(lambda w: w.write(reload=w not in deferred), workers)
    for name, change in changing.items():
        mine = of(name)
        if dry:
            ctx.report.info(
                f"{name}: would change its etcd password, then at once reload Patroni and "
                "restart vip-manager on " + ", ".join(w.job.ip for w in mine)
            )
            continue
        written = [w for w in mine if not isinstance(outcomes.get(w.job.ip), ClusterError)]
        if len(written) != len(mine) or any(w.failures for w in mine):
            each(lambda w: w.revert(), written)
            for w in mine:
                w.note_all(
                    f"etcd password of {name} left unchanged (a host failed); files restored"
                )
            continue
        assert change_password is not None
        began = time.monotonic()
        try:
            change_password(change)
        except ClusterError as exc:
            # etcd kept the old password: so do the files (no process read them yet).
            each(lambda w: w.revert(), written)
            for w in mine:
                w.note_all(
                    f"etcd refused the new password of {name} ({exc.message}); files restored"
                )
            continue
        each(lambda w: w.reload_now(), mine)
        window = time.monotonic() - began
        result.password_windows[name] = round(window, 3)
        ctx.report.host(
            name,
            f"etcd password changed, then Patroni reloaded and vip-manager restarted on "
            f"{len(mine)} host(s) within {window * 1000:.0f} ms",
            "changed",
        )
        each(lambda w: w.check_vip(), mine)
    for worker in workers:
        value = outcomes.get(worker.job.ip)
        if isinstance(value, ClusterError):
            worker.fail_all(value.message)
        result.outcomes += worker.outcomes
        if worker.node is not None:
            pending.nodes.append(worker.node)
    return pending
