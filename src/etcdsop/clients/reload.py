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

import base64
import difflib
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from etcdsop.clients.confedit import EtcdAccess, mask_secrets
from etcdsop.clients.restart import PatroniNode
from etcdsop.errors import ClusterError, InputError
from etcdsop.model import Inventory, PgCluster, SshTarget
from etcdsop.ops.common import Context
from etcdsop.ops.rbac import PasswordChange, PgAccount
from etcdsop.ops.reload import ReloadResult
from etcdsop.remote import run_parallel
from etcdsop.render import NodeFile

DEFAULT_VIP_CONF = "/etc/default/vip-manager.yml"
CLIENT_DIR = "/etc/etcd-client"
TLS_VARS = ("pg_etcd_cacert", "pg_etcd_cert", "pg_etcd_key")
TLS_DEFAULTS = (f"{CLIENT_DIR}/ca.crt", f"{CLIENT_DIR}/client.crt", f"{CLIENT_DIR}/client.key")
PLACEHOLDER = b"(certificate to be issued)\n"
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


@dataclass
class _HostFacts:
    files: dict[str, bytes] = field(default_factory=dict)
    shas: dict[str, str] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    has_group: bool = False
    mtimes: dict[str, int] = field(default_factory=dict)  # patroni.yml and its backups
    started: int | None = None  # when the running Patroni started (epoch seconds)
    kill_mode: str = ""


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


# -- facts ------------------------------------------------------------------------------
# Arguments: group, then "conf:<path>" (content), "sha:<path>" (checksum) or
# "mtimes:<path>" (when it and its backups were written) items. A backup keeps its
# file's mtime (cp -p) and is named after the run that replaced it: with Patroni's
# start they tell which version it started on.
_FACTS = r"""
group=$1; shift
for a in "$@"; do
  kind=${a%%:*}; p=${a#*:}
  if [ "$kind" = mtimes ]; then
    for f in "$p" "$p".*.bak; do
      [ -f "$f" ] && echo "mtime $(stat -c %Y "$f") $f"
    done
    continue
  fi
  if [ ! -f "$p" ]; then echo "missing $p"; continue; fi
  if [ "$kind" = conf ]; then echo "file $p $(base64 -w0 "$p")"
  else echo "sha $p $(sha256sum "$p" | cut -d' ' -f1)"; fi
done
for u in patroni vip-manager; do
  echo "active $u $(systemctl is-active "$u" 2>/dev/null | head -1)"
done
pid=$(systemctl show -p MainPID --value patroni 2>/dev/null)
if [ -n "$pid" ] && [ "$pid" != 0 ]; then
  echo "started $(( $(date +%s) - $(ps -o etimes= -p "$pid" | tr -d ' ') ))"
fi
echo "killmode $(systemctl show -p KillMode --value patroni 2>/dev/null)"
getent group "$group" >/dev/null && echo "group ok"
exit 0
"""


def parse_host_facts(text: str) -> _HostFacts:
    facts = _HostFacts()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if kind == "file":
            facts.files[name] = base64.b64decode(value)
        elif kind == "sha":
            facts.shas[name] = value.strip()
        elif kind == "active":
            facts.active[name] = value.strip()
        elif kind == "group":
            facts.has_group = True
        elif kind == "mtime" and name.isdigit() and value:
            facts.mtimes[value.strip()] = int(name)
        elif kind == "started" and name.isdigit():
            facts.started = int(name)
        elif kind == "killmode":
            facts.kill_mode = name.strip()
    return facts


# -- helpers of one host (clients/host.py) ------------------------------------------------
def tls_files(
    paths: tuple[str, str, str], group: str, pems: tuple[bytes, bytes, bytes]
) -> list[NodeFile]:
    cacert, certfile, keyfile = paths
    ca, cert, key = pems
    return [
        NodeFile(cacert, ca, "root", group, 0o644),
        NodeFile(certfile, cert, "root", group, 0o644),
        NodeFile(keyfile, key, "root", group, 0o640, secret=True),
    ]


def changed_tls(files: Sequence[NodeFile], facts: _HostFacts) -> list[NodeFile]:
    return [f for f in files if facts.shas.get(f.path) != hashlib.sha256(f.content).hexdigest()]


def conf_diff(path: str, old: bytes, new: bytes, secrets: Sequence[str]) -> str:
    before = old.decode(errors="replace").splitlines(keepends=True)
    after = new.decode(errors="replace").splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(before, after, fromfile=path, tofile=path))
    return mask_secrets(diff, secrets)


# -- all hosts --------------------------------------------------------------------------
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
    from etcdsop.clients.host import PgHost

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
