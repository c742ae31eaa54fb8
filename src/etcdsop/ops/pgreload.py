"""Patroni and vip-manager on the PostgreSQL hosts: TLS files, config edits, reload.

Every host is handled on its own: a missing or broken config fails that host (its
files untouched) while the others go on. Patroni is reloaded (SIGHUP re-reads its
credentials), vip-manager restarted (it has no reload); only where something changed
and only if it was running. A Patroni whose etcd hosts changed (or that still runs
an older etcd3 section) is also marked for a restart under maintenance mode, done
later by ops/pgrestart.py once its etcd user has its new password.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from etcdsop.clientconf import ClientConfError, EtcdAccess, edit_patroni, edit_vip, mask_secrets
from etcdsop.errors import ClusterError, InputError
from etcdsop.model import Inventory, PgCluster, SshTarget
from etcdsop.ops.common import Context
from etcdsop.ops.pgrestart import PatroniNode, etcd3_of, loaded_version, rest_url, restart_reason
from etcdsop.ops.rbac import PgAccount
from etcdsop.ops.reload import HostOutcome, ReloadResult, write_with_backup
from etcdsop.remote import RemoteHost, run_parallel
from etcdsop.render import NodeFile

DEFAULT_PATRONI_CONF = "/pg/bin/patroni.yml"
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
    patroni_conf: str | None  # None: not a target here
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
                    patroni_conf=_path(values, "patroni_conf", DEFAULT_PATRONI_CONF, ip)
                    if "patroni" in targets
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


# -- one host ---------------------------------------------------------------------------
def tls_files(job: PgHostJob, ca: bytes, cert: bytes, key: bytes) -> list[NodeFile]:
    cacert, certfile, keyfile = job.tls_paths
    return [
        NodeFile(cacert, ca, "root", job.group, 0o644),
        NodeFile(certfile, cert, "root", job.group, 0o644),
        NodeFile(keyfile, key, "root", job.group, 0o640, secret=True),
    ]


def _changed_tls(files: Sequence[NodeFile], facts: _HostFacts) -> list[NodeFile]:
    return [f for f in files if facts.shas.get(f.path) != hashlib.sha256(f.content).hexdigest()]


def _conf_diff(path: str, old: bytes, new: bytes, secrets: Sequence[str]) -> str:
    before = old.decode(errors="replace").splitlines(keepends=True)
    after = new.decode(errors="replace").splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(before, after, fromfile=path, tofile=path))
    return mask_secrets(diff, secrets)


@dataclass
class _Edit:
    target: str
    path: str
    old: bytes
    new: bytes


class _Host:
    """reload on one PostgreSQL host: gather, edit, (dry run stops), write, reload."""

    def __init__(
        self,
        ctx: Context,
        host: RemoteHost,
        job: PgHostJob,
        access: EtcdAccess,
        tls: list[NodeFile],
        secrets: Sequence[str],
        stamp: str,
    ) -> None:
        self.ctx, self.host, self.job, self.access = ctx, host, job, access
        self.tls, self.secrets, self.stamp = tls, secrets, stamp
        self.node: PatroniNode | None = None  # its running Patroni, for the restart phase

    def targets(self) -> list[tuple[str, str]]:
        found = [("patroni", self.job.patroni_conf), ("vip", self.job.vip_conf)]
        return [(t, p) for t, p in found if p is not None]

    def run(self) -> list[HostOutcome]:
        job = self.job
        items = [f"conf:{p}" for _, p in self.targets()]
        items += [f"sha:{p}" for p in job.tls_paths]
        if job.patroni_conf is not None:
            items.append(f"mtimes:{job.patroni_conf}")
        out = self.host.run(["sh", "-c", _FACTS, "sh", job.group, *items], timeout=30)
        facts = parse_host_facts(out.stdout)
        failures: dict[str, str] = {}
        edits: list[_Edit] = []
        for target, path in self.targets():
            try:
                edits += self._edit(target, path, facts)
            except ClientConfError as exc:
                failures[target] = f"{path} {exc.message}; left untouched"
        tls_todo: list[NodeFile] = []
        if job.ship_tls:
            tls_todo = _changed_tls(self.tls, facts)
            if tls_todo and not facts.has_group:
                for target, _ in self.targets():
                    failures.setdefault(
                        target, f"group {job.group} (pg_dbsu) does not exist: is PostgreSQL here?"
                    )
        else:
            missing = [p for p in job.tls_paths if p not in facts.shas]
            for target, _ in self.targets():
                if missing:
                    failures.setdefault(target, f"TLS file(s) missing: {', '.join(missing)}")
        outcomes = [HostOutcome(t, job.ip, "failed", m) for t, m in failures.items()]
        working = [t for t, _ in self.targets() if t not in failures]
        if not working:
            return outcomes
        if tls_todo and not self.ctx.options.dry_run:
            self._write_tls(tls_todo)
        for target in working:
            mine = [e for e in edits if e.target == target]
            outcome = self._finish(target, mine, tls_todo, facts)
            outcomes.append(outcome)
            if target == "patroni" and outcome.status != "failed":
                self.node = self._patroni_node(mine, facts, outcome)
        return outcomes

    def _patroni_node(
        self, edits: list[_Edit], facts: _HostFacts, outcome: HostOutcome
    ) -> PatroniNode | None:
        """The running Patroni and whether a SIGHUP is enough for it (see pgrestart)."""
        path = self.job.patroni_conf
        if path is None or facts.active.get("patroni") != "active":
            return None
        old = facts.files.get(path)
        new = edits[0].new if edits else old
        running, running_from = None, ""
        if facts.started is not None:
            version = loaded_version(facts.started, facts.mtimes, path)
            # Started on an older file (an earlier reload wrote it but did not restart it).
            if version is not None and version != path:
                out = self.host.run(["base64", "-w0", version], timeout=30)
                running, running_from = etcd3_of(base64.b64decode(out.stdout)), version
        return PatroniNode(
            cluster=self.job.cluster.name,
            ip=self.job.ip,
            host=self.host,
            conf=path,
            url=rest_url(new),
            kill_mode=facts.kill_mode,
            reason=restart_reason(etcd3_of(old), etcd3_of(new), running, running_from),
            outcome=outcome,
        )

    def _edit(self, target: str, path: str, facts: _HostFacts) -> list[_Edit]:
        old = facts.files.get(path)
        if old is None:
            raise ClientConfError("is missing")
        if target == "patroni":
            cluster = self.job.cluster
            new = edit_patroni(
                old,
                self.access.patroni_etcd3(),
                scope=cluster.name,
                namespace=cluster.namespace,
            )
        else:
            new = edit_vip(old, self.access.vip_settings())
        return [_Edit(target, path, old, new)] if new != old else []

    def _write_tls(self, files: Sequence[NodeFile]) -> None:
        directory = self.job.tls_paths[0].rsplit("/", 1)[0]
        if directory == CLIENT_DIR:
            self.host.run(
                ["install", "-d", "-o", "root", "-g", self.job.group, "-m", "0750", CLIENT_DIR]
            )
        for f in files:
            write_with_backup(
                self.host,
                f.path,
                f.content,
                self.stamp,
                owner=f.owner,
                group=f.group,
                mode=f.mode,
                existed=False,
            )

    def _finish(
        self, target: str, edits: list[_Edit], tls_todo: list[NodeFile], facts: _HostFacts
    ) -> HostOutcome:
        job, dry = self.job, self.ctx.options.dry_run
        if not edits and not tls_todo:
            return HostOutcome(target, job.ip, "unchanged", "up to date")
        paths = [e.path for e in edits] + [f.path for f in tls_todo]
        diff = "".join(_conf_diff(e.path, e.old, e.new, self.secrets) for e in edits)
        diff += "".join(
            f"{f.path}: {'changed' if f.path in facts.shas else 'new'}\n" for f in tls_todo
        )
        names = ", ".join(p.rsplit("/", 1)[-1] for p in paths)
        outcome = HostOutcome(
            target,
            job.ip,
            "changed",
            ("would write " if dry else "wrote ") + names,
            files=paths,
            diff=diff,
        )
        if dry:
            return outcome
        for e in edits:
            backup = write_with_backup(self.host, e.path, e.new, self.stamp)  # keeps owner/mode
            if backup:
                outcome.backups.append(backup)
        unit = "patroni" if target == "patroni" else "vip-manager"
        if facts.active.get(unit) != "active":
            outcome.message += (
                f"; {unit} is not running ({facts.active.get(unit) or 'unknown'}): not touched"
            )
            return outcome
        try:
            if target == "patroni":
                self.host.run(["systemctl", "reload", "patroni"], timeout=60)
                outcome.message += "; patroni reloaded"
            else:
                self._restart_vip()
                outcome.message += "; vip-manager restarted"
        except ClusterError as exc:
            return HostOutcome(
                target,
                job.ip,
                "failed",
                f"{', '.join(paths)} written, but {exc.message}",
                paths,
                outcome.backups,
                diff,
            )
        return outcome

    def _restart_vip(self) -> None:
        self.host.run(["systemctl", "restart", "vip-manager"], timeout=60)
        # Type=simple: "started" says little; a bad config makes it exit right away.
        check = self.host.run(
            ["sh", "-c", "sleep 1; systemctl is-active vip-manager"], check=False, timeout=30
        )
        if check.stdout.strip() != "active":
            raise ClusterError(
                f"vip-manager is {check.stdout.strip() or 'unknown'} after its restart",
                details=self.host.journal_tail("vip-manager", 10),
            )


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
) -> PgPending:
    """Edit, write and reload on every PostgreSQL host; the caller closes the result."""
    pending = PgPending()
    if not jobs:
        ctx.report.info("no PostgreSQL cluster in the inventory")
        return pending
    by_cluster = {a.cluster: a for a in accounts}
    pems = {j.cluster.name: client_pems(ctx, j.cluster) for j in jobs if j.ship_tls}
    workers = []
    for job in jobs:
        if job.patroni_conf is None and job.vip_conf is None:
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
        tls = tls_files(job, *pems[job.cluster.name]) if job.ship_tls else []
        secrets = [] if account.weak else [account.password]
        workers.append(_Host(ctx, host, job, access, tls, secrets, stamp))
    results = run_parallel(
        workers, lambda w: w.run(), forks=ctx.options.forks, key=lambda w: w.job.ip
    )
    for worker in workers:
        value = results[worker.job.ip]
        if isinstance(value, ClusterError):
            for target, _ in worker.targets():
                result.outcomes.append(HostOutcome(target, worker.job.ip, "failed", value.message))
        else:
            result.outcomes += value
            if worker.node is not None:
                pending.nodes.append(worker.node)
    return pending
