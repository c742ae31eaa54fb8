"""Where the certificates live on the hosts, read in one or two round trips per host.

Members: /etc/etcd/ca.crt, server.crt (does server.key match it?) and when etcd
started. PostgreSQL hosts: the files Patroni's etcd3 section and vip-manager's config
name (as reload finds Patroni's config: clients/locate.py), else reload's own
/etc/etcd-client set. Keys never leave a host: only whether they match their cert.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from etcdsop.clients.confedit import ClientConfError, parse_config
from etcdsop.clients.hostfacts import FACTS, parse_host_facts
from etcdsop.clients.jobs import PgHostJob, plan_jobs
from etcdsop.clients.locate import KNOWN_CONFS, LOCATE, choose, parse_locate
from etcdsop.clients.restart import etcd3_of
from etcdsop.errors import ClusterError
from etcdsop.model import Member
from etcdsop.ops.common import Context
from etcdsop.remote import RemoteHost, run_parallel
from etcdsop.render import CA_CRT, SERVER_CRT, SERVER_KEY

# Arguments: "pair:<cert>:<key>" (does the key match the cert), "unit:<name>" (state,
# milliseconds it has run) or a path (resolved path, milliseconds since written,
# content). Milliseconds, not seconds: an etcd started in the same second as its
# ca.crt was written, just before, read the old file (rotate-ca's restart rule).
# Run time from the boot clock (/proc/uptime and the process's start tick).
READ = r"""
now=$(date +%s%N)
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
up=$(cut -d' ' -f1 /proc/uptime)
for a in "$@"; do
  case $a in
  pair:*)
    r=${a#pair:}; c=${r%%:*}; k=${r#*:}
    x=$(openssl x509 -noout -pubkey -in "$c" 2>/dev/null | sha256sum | cut -d' ' -f1)
    y=$(openssl pkey -pubout -in "$k" 2>/dev/null | sha256sum | cut -d' ' -f1)
    e=$(printf '' | sha256sum | cut -d' ' -f1)
    m=no; if [ "$x" = "$y" ] && [ "$x" != "$e" ]; then m=yes; fi
    echo "keymatch $c $m"
    ;;
  unit:*)
    u=${a#unit:}
    pid=$(systemctl show -p MainPID --value "$u" 2>/dev/null)
    run=-
    if [ -n "$pid" ] && [ "$pid" != 0 ]; then
      st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)
      if [ -n "$st" ]; then run=$(( ${up%.*}${up#*.}0 - st * 1000 / hz )); fi
    fi
    echo "unit $u $(systemctl is-active "$u" 2>/dev/null | head -1) ${pid:-0} ${run:--}"
    ;;
  *)
    if [ -f "$a" ]; then
      age=$(( (now - $(date -r "$a" +%s%N)) / 1000000 ))
      echo "file $a $(readlink -f -- "$a") $age $(base64 -w0 "$a")"
    else echo "missing $a"; fi
    ;;
  esac
done
exit 0
"""
_PATH_RE = re.compile(r"/[A-Za-z0-9._@+/-]+")


@dataclass
class FileFacts:
    path: str
    target: str  # links resolved: what a write must replace
    age_ms: int  # since it was written
    content: bytes


@dataclass
class UnitFacts:
    active: str
    pid: int
    runs_ms: int | None  # how long the process has run


@dataclass
class HostRead:
    files: dict[str, FileFacts] = field(default_factory=dict)
    keymatch: dict[str, bool] = field(default_factory=dict)  # cert path -> key matches
    units: dict[str, UnitFacts] = field(default_factory=dict)


def parse_read(text: str) -> HostRead:
    out = HostRead()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        parts = rest.split(" ")
        if kind == "file" and len(parts) >= 3:
            content = base64.b64decode(parts[3]) if len(parts) > 3 else b""
            age = int(parts[2]) if parts[2].lstrip("-").isdigit() else 0
            out.files[parts[0]] = FileFacts(parts[0], parts[1], age, content)
        elif kind == "keymatch" and len(parts) == 2:
            out.keymatch[parts[0]] = parts[1] == "yes"
        elif kind == "unit" and len(parts) == 4:
            runs = int(parts[3]) if parts[3].isdigit() else None
            pid = int(parts[2]) if parts[2].isdigit() else 0
            out.units[parts[0]] = UnitFacts(parts[1], pid, runs)
    return out


def read_host(host: RemoteHost, items: Sequence[str]) -> HostRead:
    return parse_read(host.run(["sh", "-c", READ, "sh", *items], timeout=30).stdout)


# -- members ----------------------------------------------------------------------------
MEMBER_ITEMS = (CA_CRT, SERVER_CRT, f"pair:{SERVER_CRT}:{SERVER_KEY}", "unit:etcd")


@dataclass
class MemberCerts:
    member: Member
    read: HostRead | None
    error: str = ""

    def content(self, path: str) -> bytes | None:
        f = self.read.files.get(path) if self.read else None
        return f.content if f else None

    @property
    def etcd(self) -> UnitFacts | None:
        return self.read.units.get("etcd") if self.read else None

    @property
    def runs_old_trust(self) -> bool:
        """etcd started before ca.crt was last written: it trusts what the file held then
        (etcd reads its CA only at start, etcd#11555)."""
        unit, ca = self.etcd, self.read.files.get(CA_CRT) if self.read else None
        if unit is None or unit.runs_ms is None or ca is None:
            return False
        return unit.runs_ms > ca.age_ms


def read_members(ctx: Context, members: Sequence[Member]) -> list[MemberCerts]:
    results = ctx.parallel(members, lambda m: read_host(ctx.host(m), MEMBER_ITEMS))
    out = []
    for m in members:
        value = results[m.ip]
        if isinstance(value, ClusterError):
            out.append(MemberCerts(m, None, value.message))
        else:
            assert isinstance(value, HostRead)
            out.append(MemberCerts(m, value))
    return out


# -- PostgreSQL hosts -----------------------------------------------------------------------
@dataclass(frozen=True)
class TlsSet:
    """The etcd client TLS files one client (Patroni, vip-manager) is configured with."""

    users: tuple[str, ...]  # "patroni", "vip-manager"
    cacert: str
    cert: str
    key: str


@dataclass
class ClientCerts:
    job: PgHostJob
    host: RemoteHost | None
    sets: list[TlsSet] = field(default_factory=list)
    read: HostRead | None = None
    error: str = ""

    @property
    def vip_active(self) -> bool:
        unit = self.read.units.get("vip-manager") if self.read else None
        return unit is not None and unit.active == "active"


def _triple(values: Sequence[object]) -> tuple[str, str, str] | None:
    if all(isinstance(v, str) and _PATH_RE.fullmatch(v) for v in values):
        return (str(values[0]), str(values[1]), str(values[2]))
    return None


def client_sets(job: PgHostJob, patroni_conf: bytes | None, vip_conf: bytes | None) -> list[TlsSet]:
    """Which TLS files each client names; the default set when neither names any."""
    found: dict[tuple[str, str, str], list[str]] = {}
    section = etcd3_of(patroni_conf) or {}
    triple = _triple([section.get(k) for k in ("cacert", "cert", "key")])
    if triple:
        found.setdefault(triple, []).append("patroni")
    if vip_conf:
        try:
            _, doc = parse_config(vip_conf)
        except ClientConfError:
            doc = {}
        keys = ("etcd-ca-file", "etcd-cert-file", "etcd-key-file")
        triple = _triple([doc.get(k) for k in keys])
        if triple:
            found.setdefault(triple, []).append("vip-manager")
    return [TlsSet(tuple(users), *paths) for paths, users in found.items()]


def read_clients(ctx: Context) -> list[ClientCerts]:
    jobs = plan_jobs(ctx.inventory, ("patroni", "vip"))

    def one(job: PgHostJob) -> ClientCerts:
        host = ctx.remote(job.ip, job.ssh)
        candidates = [p for p in (job.patroni_conf, *KNOWN_CONFS) if p]
        out = host.run(["sh", "-c", LOCATE, "sh", *candidates], timeout=30)
        located = choose(parse_locate(out.stdout), job.patroni_conf)
        confs = [located.target] if not isinstance(located, str) else []
        if job.vip_conf:
            confs.append(job.vip_conf)
        out = host.run(["sh", "-c", FACTS, "sh", job.group, *[f"conf:{c}" for c in confs]])
        facts = parse_host_facts(out.stdout)
        patroni = facts.files.get(confs[0]) if not isinstance(located, str) else None
        sets = client_sets(job, patroni, facts.files.get(job.vip_conf or ""))
        if not sets:
            sets = [TlsSet(("reload's default",), *job.tls_paths)]
        items = ["unit:vip-manager", "unit:patroni"]
        for s in sets:
            items += [s.cacert, s.cert, f"pair:{s.cert}:{s.key}"]
        return ClientCerts(job, host, sets, read_host(host, list(dict.fromkeys(items))))

    results = run_parallel(jobs, one, forks=ctx.options.forks, key=lambda j: j.ip)
    out = []
    for job in jobs:
        value = results[job.ip]
        if isinstance(value, ClusterError):
            out.append(ClientCerts(job, None, error=value.message))
        else:
            assert isinstance(value, ClientCerts)
            out.append(value)
    return out
