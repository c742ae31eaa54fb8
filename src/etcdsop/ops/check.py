"""`etcdsop check`: gather what the doctor looks at, then findings.py decides.

One status (members, health, versions, db sizes, alarms, auth), one SSH round trip per
etcd host for its node certificate and its etcd's uptime plus three short ones for its
clock, one or two per PostgreSQL host for the client certificate Patroni uses, and the
admin node's own files (CA, admin certificate, backups). Nothing on a host changes.

A learner's age: etcd does not say when a member was added. Two lower bounds, the
larger wins: how long etcd has run on the learner's host (a member is never turned
back into a learner, so its etcd was a learner all that time), and when etcdsop first
saw it as a learner (`files/log/first-seen.json`, kept by `check`: covers a learner
that restarts, or never started).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509

from etcdsop import findings
from etcdsop.errors import ClusterError
from etcdsop.findings import CertFact, ClockSample, Finding, MemberFact
from etcdsop.model import Member, PgCluster
from etcdsop.ops.common import Context
from etcdsop.ops.status import StatusResult, status
from etcdsop.remote import run_parallel
from etcdsop.render import SERVER_CRT

FIRST_SEEN = "log/first-seen.json"
CLOCK_TRIES = 3  # the sample with the shortest round trip is kept
NODE_FIX = "etcdsop create (re-issues node certificates due within 30 days, no restart)"
CA_FIX = "rotate the CA: a bundle of old and new CA, rolling restarts, re-issued certificates"

# Prints the node certificate (base64) and the seconds etcd has been running.
_NODE_FACTS = r"""
if [ -r "$1" ]; then echo "cert $(base64 -w0 "$1")"; fi
echo "uptime $(ps -o etimes= -C etcd 2>/dev/null | sort -n | tail -1)"
exit 0
"""


@dataclass
class CheckResult:
    cluster: str
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was looked at

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
            "checked": self.checked,
        }


def check(ctx: Context, *, now: datetime | None = None) -> CheckResult:
    moment = now or datetime.now(timezone.utc)
    inv = ctx.inventory
    result = CheckResult(inv.cluster)
    report = ctx.report
    report.phase("cluster state")
    st = status(ctx)
    if st.cluster_id is None:
        answering = [r.name for r in st.members if r.raft_index is not None]
        result.findings.append(
            Finding(
                "member",
                "cluster",
                f"no quorum: {', '.join(answering)} answer(s), but no member lists the cluster"
                if answering
                else "no member of the inventory answers",
                "start etcd on the hosts (systemctl start etcd), or etcdsop recover / restore",
            )
        )
    result.findings += _cluster_findings(st, {m.peer_url: m.ip for m in inv.members})
    result.checked.append(f"{len(st.members)} member(s): health, versions, db vs quota, alarms")
    report.phase(f"{len(inv.members)} etcd host(s): node certificate, etcd uptime, clock")
    certs, uptimes, clocks = _etcd_hosts(ctx, result)
    certs += _admin_certs(ctx)
    certs += _pg_certs(ctx, result)
    result.findings += findings.certs(certs, moment)
    result.checked.append(f"{len(certs)} certificate(s)")
    result.findings += _learner_findings(ctx, st, uptimes, moment)
    result.findings += findings.clock_skew(clocks)
    result.checked.append(f"clocks of {len(clocks)} host(s)")
    backup_dir = inv.files_dir / "backup"
    taken = [
        findings.backup_time(p, p.stat().st_mtime)
        for p in backup_dir.glob(f"{inv.cluster}-*.db")
        if p.is_file()
    ]
    result.findings += findings.backups(backup_dir, inv.cluster, taken, moment)
    result.checked.append(f"{len(taken)} backup(s) in {backup_dir}")
    return result


def _cluster_findings(st: StatusResult, inventory: dict[str, str]) -> list[Finding]:
    if st.cluster_id is None:
        return []
    live = [
        MemberFact(
            name=r.name or r.id,
            peer_url=r.peer_urls[0] if r.peer_urls else "",
            learner=r.learner,
            healthy=r.healthy,
            problem=r.problem,
            version=r.version,
            db_size=r.db_size,
            quota=r.quota_bytes,
            in_inventory=r.in_inventory,
        )
        for r in st.members
    ]
    alarms = [(a["name"], a["alarm"]) for a in st.alarms]
    return findings.members(live, inventory, alarms) + findings.auth(st.auth_enabled)


def _etcd_hosts(
    ctx: Context, result: CheckResult
) -> tuple[list[CertFact], dict[str, float], list[ClockSample]]:
    """Per etcd host: its node certificate, etcd's uptime, its clock (in parallel)."""

    def gather(member: Member) -> tuple[CertFact | None, float | None, ClockSample]:
        host = ctx.host(member)
        out = host.run(["sh", "-c", _NODE_FACTS, "sh", SERVER_CRT], timeout=30).stdout
        cert: CertFact | None = None
        uptime: float | None = None
        for line in out.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "cert":
                where = f"{member.ip}:{SERVER_CRT}"
                cert = _cert_fact("node", where, base64.b64decode(rest), NODE_FIX)
            elif kind == "uptime" and rest.strip().isdigit():
                uptime = float(rest.strip())
        return cert, uptime, _clock(ctx, member)

    outcomes = ctx.parallel(ctx.inventory.members, gather)
    certs: list[CertFact] = []
    uptimes: dict[str, float] = {}
    clocks: list[ClockSample] = []
    for member in ctx.inventory.members:
        value = outcomes[member.ip]
        if isinstance(value, ClusterError):
            result.findings.append(
                Finding(
                    "host",
                    member.ip,
                    f"not reachable over SSH ({value.message})",
                    "check the host, its sshd and the inventory's ansible_* settings",
                )
            )
            continue
        assert isinstance(value, tuple)
        cert, uptime, sample = value
        if cert is not None:
            certs.append(cert)
        if uptime is not None:
            uptimes[member.peer_url] = uptime
        clocks.append(sample)
    return certs, uptimes, clocks


def _clock(ctx: Context, member: Member) -> ClockSample:
    """The host's clock against ours, the try with the shortest round trip."""
    best: ClockSample | None = None
    for _ in range(CLOCK_TRIES):
        sent = time.time()
        out = ctx.host(member).run(["date", "+%s.%N"], timeout=10).stdout
        back = time.time()
        sample = ClockSample(member.ip, float(out.strip()) - (sent + back) / 2, back - sent)
        if best is None or sample.round_trip < best.round_trip:
            best = sample
    assert best is not None
    return best


def _cert_fact(role: str, where: str, pem: bytes, fix: str) -> CertFact:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return CertFact(role, where, None, "not a PEM certificate", fix)
    return CertFact(role, where, cert.not_valid_after_utc, fix=fix)


def _admin_certs(ctx: Context) -> list[CertFact]:
    """The CA and etcdsop's client certificates on this admin node."""
    pki = ctx.pki_dir
    facts = []
    for role, path, fix in (
        ("CA", pki / "ca" / "ca.crt", CA_FIX),
        ("admin", pki / "etcdsop" / "admin.crt", "etcdsop create (re-issues it when due)"),
    ):
        if path.is_file():
            facts.append(_cert_fact(role, str(path), path.read_bytes(), fix))
        else:
            facts.append(CertFact(role, str(path), None, "missing", "etcdsop create"))
    return facts


def _pg_certs(ctx: Context, result: CheckResult) -> list[CertFact]:
    """The client certificate each Patroni presents to etcd: the one its etcd3 section
    names (Pigsty's /pg/cert/server.crt, or etcdsop's /etc/etcd-client/)."""
    from etcdsop.clients.locate import KNOWN_CONFS, LOCATE, choose, parse_locate

    hosts: list[tuple[PgCluster, str]] = [
        (c, h) for c in ctx.inventory.pg_clusters for h in c.hosts
    ]
    if not hosts:
        return []

    def gather(item: tuple[PgCluster, str]) -> CertFact | None:
        cluster, name = item
        host = ctx.remote(name, cluster.ssh[name])
        conf_var = cluster.host_vars.get(name, {}).get("patroni_conf")
        candidates = [*KNOWN_CONFS, *([str(conf_var)] if conf_var else [])]
        located = choose(
            parse_locate(host.run(["sh", "-c", LOCATE, "sh", *candidates], timeout=30).stdout),
            str(conf_var) if conf_var else None,
        )
        if isinstance(located, str):
            return None  # no Patroni here: reload -t patroni says so
        import yaml

        text = host.run(["cat", located.target], timeout=30).stdout
        doc = yaml.safe_load(text) if text else None
        section = doc.get("etcd3") if isinstance(doc, dict) else None
        cert = section.get("cert") if isinstance(section, dict) else None
        if not cert:
            return None
        where = f"{name}:{cert}"
        fix = "etcdsop reload -t patroni (ships a fresh client certificate)"
        got = host.run(["base64", "-w0", str(cert)], timeout=30, check=False)
        if got.rc != 0:
            return CertFact("PostgreSQL client", where, None, "missing or unreadable", fix)
        return _cert_fact("PostgreSQL client", where, base64.b64decode(got.stdout), fix)

    outcomes = run_parallel(hosts, gather, forks=ctx.options.forks, key=lambda item: item[1])
    facts = []
    for _, name in hosts:
        value = outcomes[name]
        if isinstance(value, ClusterError):
            result.findings.append(
                Finding("host", name, f"PostgreSQL host not checked ({value.message})", "")
            )
        elif isinstance(value, CertFact):
            facts.append(value)
    return facts


def _learner_findings(
    ctx: Context, st: StatusResult, uptimes: dict[str, float], now: datetime
) -> list[Finding]:
    path = ctx.inventory.files_dir / FIRST_SEEN
    seen = _read_seen(path)
    learners = {r.id: r for r in st.members if r.learner}
    ages: dict[str, float | None] = {}
    for member_id, row in learners.items():
        first = seen.setdefault(member_id, now.isoformat(timespec="seconds"))
        age = (now - datetime.fromisoformat(first)).total_seconds()
        uptime = max((uptimes.get(u, 0.0) for u in row.peer_urls), default=0.0)
        ages[row.name or row.id] = max(age, uptime)
    kept = {k: v for k, v in seen.items() if k in learners}  # voters and gone ones forgotten
    if kept != _read_seen(path) and st.cluster_id is not None:
        _write_seen(path, kept)
    return findings.learners(ages)


def _read_seen(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_seen(path: Path, seen: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(seen, indent=1) + "\n")
    os.chmod(partial, 0o600)
    os.replace(partial, path)
