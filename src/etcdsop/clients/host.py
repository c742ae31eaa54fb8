"""reload on one PostgreSQL host: locate, gather, edit in memory, write, reload.

The steps are separate so reload_pg_hosts (clients/reload.py) can hold back a
cluster's reloads until its new etcd password is set (clients/password.py), and keep
the old password where some host of the cluster cannot take the new one.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etcdsop.clients.confedit import (
    ClientConfError,
    EtcdAccess,
    edit_patroni,
    edit_vip,
    parse_config,
)
from etcdsop.clients.hostfacts import (
    FACTS,
    PgHostFacts,
    changed_tls,
    conf_diff,
    parse_host_facts,
    tls_files,
)
from etcdsop.clients.jobs import CLIENT_DIR, TLS_DEFAULTS, PgHostJob
from etcdsop.clients.locate import (
    CHECK_TLS,
    KNOWN_CONFS,
    LOCATE,
    Located,
    choose,
    parse_locate,
    parse_tls,
    tls_verdict,
)
from etcdsop.clients.restart import PatroniNode, etcd3_of, loaded_version, rest_url, restart_reason
from etcdsop.errors import ClusterError
from etcdsop.model import PgCluster
from etcdsop.ops.common import Context
from etcdsop.ops.filebackup import restore_backup, write_with_backup
from etcdsop.ops.outcomes import HostOutcome
from etcdsop.remote import RemoteHost
from etcdsop.render import NodeFile

UNITS = {"patroni": "patroni", "vip": "vip-manager"}


@dataclass
class _Edit:
    target: str
    path: str
    old: bytes
    new: bytes


class PgHost:
    """One host's Patroni and vip-manager configs and the client TLS they name."""

    def __init__(
        self,
        ctx: Context,
        host: RemoteHost,
        job: PgHostJob,
        access: EtcdAccess,
        ca_pem: bytes,
        pems: Callable[[PgCluster], tuple[bytes, bytes, bytes]],
        secrets: Sequence[str],
        stamp: str,
    ) -> None:
        self.ctx, self.host, self.job, self.access = ctx, host, job, access
        self.ca_pem, self.pems, self.secrets, self.stamp = ca_pem, pems, secrets, stamp
        self.located: Located | None = None
        self.facts = PgHostFacts()
        self.failures: dict[str, str] = {}  # target -> why it is left untouched
        self.notes: list[str] = []
        self.edits: list[_Edit] = []
        self.tls_todo: list[NodeFile] = []
        self.outcomes: list[HostOutcome] = []
        self.written: list[_Edit] = []
        self.node: PatroniNode | None = None  # its running Patroni, for the restart phase

    # -- what and where ---------------------------------------------------------------
    def targets(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str | None]] = [("vip", self.job.vip_conf)]
        if self.job.patroni:
            found.insert(0, ("patroni", self.located.target if self.located else None))
        return [(t, p) for t, p in found if p is not None]

    def _all_targets(self) -> list[str]:
        return (["patroni"] if self.job.patroni else []) + (["vip"] if self.job.vip_conf else [])

    def fail_all(self, message: str) -> None:
        self.outcomes = [
            HostOutcome(t, self.job.ip, "failed", message) for t in self._all_targets()
        ]
        self.failures = dict.fromkeys(self._all_targets(), message)

    def note_all(self, message: str) -> None:
        for outcome in self.outcomes:
            outcome.message += f"; {message}"
            outcome.status = "failed"

    # -- 1: gather and edit in memory ------------------------------------------------------
    def prepare(self) -> None:
        job = self.job
        if job.patroni:
            candidates = [p for p in (job.patroni_conf, *KNOWN_CONFS) if p]
            out = self.host.run(["sh", "-c", LOCATE, "sh", *candidates], timeout=30)
            choice = choose(parse_locate(out.stdout), job.patroni_conf)
            if isinstance(choice, str):
                self.failures["patroni"] = choice
            else:
                self.located = choice
                if choice.note:
                    self.notes.append(choice.note)
        items = [f"conf:{p}" for _, p in self.targets()]
        items += [f"sha:{p}" for p in dict.fromkeys([*job.tls_paths, *TLS_DEFAULTS])]
        if self.located is not None:
            items.append(f"mtimes:{self.located.target}")
        out = self.host.run(["sh", "-c", FACTS, "sh", job.group, *items], timeout=30)
        self.facts = parse_host_facts(out.stdout)
        self._choose_tls()
        self._edit_all()

    def _choose_tls(self) -> None:
        """The TLS files the configs should name, and what of ours to ship there."""
        job, facts = self.job, self.facts
        if not job.ship_tls:  # the inventory names files someone else manages
            missing = [p for p in job.tls_paths if p not in facts.shas]
            if missing:
                for target, _ in self.targets():
                    self.failures.setdefault(target, f"TLS file(s) missing: {', '.join(missing)}")
            return
        existing = self._existing_tls()
        if existing is not None and existing != TLS_DEFAULTS:
            out = self.host.run(["sh", "-c", CHECK_TLS, "sh", *existing], timeout=30)
            why = tls_verdict(self.ca_pem, existing, parse_tls(out.stdout))
            if why is None:  # Pigsty's own client certificates: used as they are
                self.access = dataclasses.replace(
                    self.access, cacert=existing[0], cert=existing[1], key=existing[2]
                )
                return
            self.notes.append(f"etcdsop's client certificate used instead: {why}")
        self.tls_todo = changed_tls(
            tls_files(job.tls_paths, job.group, self.pems(job.cluster)), facts
        )
        if self.tls_todo and not facts.has_group:
            for target, _ in self.targets():
                self.failures.setdefault(
                    target, f"group {job.group} (pg_dbsu) does not exist: is PostgreSQL here?"
                )

    def _existing_tls(self) -> tuple[str, str, str] | None:
        """cacert, cert, key as the Patroni config names them (else vip-manager's)."""
        if self.located is not None:
            section = etcd3_of(self.facts.files.get(self.located.target)) or {}
            found = [section.get(k) for k in ("cacert", "cert", "key")]
            if all(isinstance(v, str) and v.startswith("/") for v in found):
                return (str(found[0]), str(found[1]), str(found[2]))
        if self.job.vip_conf is not None:
            try:
                _, doc = parse_config(self.facts.files.get(self.job.vip_conf) or b"")
            except ClientConfError:
                return None
            keys = ("etcd-ca-file", "etcd-cert-file", "etcd-key-file")
            found = [doc.get(k) for k in keys]
            if all(isinstance(v, str) and v.startswith("/") for v in found):
                return (str(found[0]), str(found[1]), str(found[2]))
        return None

    def _edit_all(self) -> None:
        self.edits = []
        for target, path in self.targets():
            if target in self.failures:
                continue
            try:
                self.edits += self._edit(target, path)
            except ClientConfError as exc:
                self.failures[target] = f"{path} {exc.message}; left untouched"

    def _edit(self, target: str, path: str) -> list[_Edit]:
        old = self.facts.files.get(path)
        if old is None:
            raise ClientConfError("is missing")
        cluster = self.job.cluster
        if target == "patroni":
            new = edit_patroni(
                old,
                self.access.patroni_etcd3(),
                scope=cluster.scope,
                namespace=cluster.namespace,
                citus_group=cluster.citus_group,
            )
        else:
            readable = f"{cluster.namespace.rstrip('/')}/{cluster.scope}/"
            new = edit_vip(old, self.access.vip_settings(), readable=readable)
        return [_Edit(target, path, old, new)] if new != old else []

    def keep_password(self, why: str) -> None:
        """Edit again keeping the password the files have: the cluster's stays as it is."""
        self.access = dataclasses.replace(self.access, password=None)
        self.notes.append(why)
        self._edit_all()

    # -- 2: write (and reload unless held back) -----------------------------------------------
    def write(self, *, reload: bool) -> None:
        job, dry = self.job, self.ctx.options.dry_run
        self.outcomes = [HostOutcome(t, job.ip, "failed", m) for t, m in self.failures.items()]
        working = [t for t, _ in self.targets() if t not in self.failures]
        if not working:
            return
        if self.tls_todo and not dry:
            self._write_tls(self.tls_todo)
        for target in working:
            mine = [e for e in self.edits if e.target == target]
            outcome = self._finish(target, mine, reload=reload)
            self.outcomes.append(outcome)
            if target == "patroni" and outcome.status != "failed":
                self.node = self._patroni_node(mine, outcome)

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
                secret=f.secret,
            )

    def _finish(self, target: str, edits: list[_Edit], *, reload: bool) -> HostOutcome:
        job, dry = self.job, self.ctx.options.dry_run
        notes = "".join(f"; {n}" for n in self.notes)
        if not edits and not self.tls_todo:
            return HostOutcome(target, job.ip, "unchanged", "up to date" + notes)
        paths = [e.path for e in edits] + [f.path for f in self.tls_todo]
        diff = "".join(conf_diff(e.path, e.old, e.new, self.secrets) for e in edits)
        diff += "".join(
            f"{f.path}: {'changed' if f.path in self.facts.shas else 'new'}\n"
            for f in self.tls_todo
        )
        names = ", ".join(p.rsplit("/", 1)[-1] for p in paths)
        verb = "would write " if dry else "wrote "
        outcome = HostOutcome(target, job.ip, "changed", verb + names + notes, paths, diff=diff)
        if dry:
            return outcome
        for e in edits:
            # Both files hold secrets: backups 0600; vip-manager.yml 0600 once it holds a
            # password (Pigsty 2.x left it 0644), patroni.yml never world-readable.
            mode = "o-rwx"
            if target == "vip" and b"etcd-password" in e.new:
                mode = "0600"
            backup = write_with_backup(self.host, e.path, e.new, self.stamp, mode=mode, secret=True)
            self.written.append(e)
            if backup:
                outcome.backups.append(backup)
        if reload:
            self._reload(target, outcome)
        return outcome

    def _reload(self, target: str, outcome: HostOutcome) -> None:
        unit = UNITS[target]
        if self.facts.active.get(unit) != "active":
            state = self.facts.active.get(unit) or "unknown"
            outcome.message += f"; {unit} is not running ({state}): not touched"
            return
        try:
            if target == "patroni":
                self.host.run(["systemctl", "reload", "patroni"], timeout=60)
                outcome.message += "; patroni reloaded"
            else:
                self.host.run(["systemctl", "restart", "vip-manager"], timeout=60)
                error = self._vip_error()
                if error is not None:
                    raise error
                outcome.message += "; vip-manager restarted"
        except ClusterError as exc:
            outcome.status = "failed"
            outcome.message = f"{', '.join(outcome.files)} written, but {exc.message}"

    # -- 3: right after the password change -------------------------------------------------
    def reload_now(self) -> None:
        """Patroni reloaded and vip-manager restarted in one round trip (the window)."""
        units = []
        for o in self.outcomes:
            unit = UNITS[o.target]
            state = self.facts.active.get(unit) or "unknown"
            if o.status == "changed" and state == "active":
                units.append(unit)
            elif o.status == "changed":
                o.message += f"; {unit} is not running ({state}): not touched"
        if not units:
            return
        script = "rc=0; " + "".join(
            f"systemctl {'reload' if u == 'patroni' else 'restart'} {u} || rc=1; " for u in units
        )
        out = self.host.run(["sh", "-c", script + "exit $rc"], check=False, timeout=60)
        for o in self.outcomes:
            unit = UNITS[o.target]
            if unit in units:
                o.message += (
                    "; patroni reloaded" if unit == "patroni" else "; vip-manager restarted"
                )
                if out.rc != 0:
                    o.status = "failed"
                    o.message += f" (failed: {(out.stdout + out.stderr).strip()[-200:]})"

    def check_vip(self) -> None:
        """After reload_now: a vip-manager that did not stay up fails its target."""
        if not any(
            o.target == "vip" and "vip-manager restarted" in o.message for o in self.outcomes
        ):
            return
        error = self._vip_error()
        for o in self.outcomes:
            if error is not None and o.target == "vip":
                o.status, o.message = "failed", f"{o.message}; {error.message}"

    def _vip_error(self) -> ClusterError | None:
        """vip-manager is Type=simple: a bad config makes it exit right after its start."""
        check = self.host.run(
            ["sh", "-c", "sleep 1; systemctl is-active vip-manager"], check=False, timeout=30
        )
        if check.stdout.strip() == "active":
            return None
        return ClusterError(
            f"vip-manager is {check.stdout.strip() or 'unknown'} after its restart",
            details=self.host.journal_tail("vip-manager", 10),
        )

    def revert(self) -> None:
        """Put back what write() replaced, from its backup (the password stays as it was):
        the content only; owner and mode stay as written (the backup's are 0600)."""
        for e in self.written:
            restore_backup(self.host, e.path, self.stamp)
        self.written = []

    # -- the running Patroni ------------------------------------------------------------------
    def _patroni_node(self, edits: list[_Edit], outcome: HostOutcome) -> PatroniNode | None:
        """The running Patroni and whether a SIGHUP is enough for it (see clients/restart.py)."""
        located, facts = self.located, self.facts
        if located is None or facts.active.get("patroni") != "active":
            return None
        path = located.target
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
            conf=located.conf,
            url=rest_url(new),
            kill_mode=facts.kill_mode,
            reason=restart_reason(etcd3_of(old), etcd3_of(new), running, running_from),
            outcome=outcome,
        )
