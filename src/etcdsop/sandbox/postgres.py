"""PostgreSQL on sandbox hosts, laid out as Pigsty v4.5's pgsql role leaves them.

`etcdsop sandbox postgres` (Pigsty's `./pgsql.yml`, after `etcdsop create` as
`./etcd.yml` comes first there) and the e2e tests' Patroni clusters both use it:
Pigsty's units (templates/patroni.svc, vip-manager.svc), Patroni's config rendered
from templates/oltp.yml at /pg/conf/<cluster>-<seq>.yml with /etc/patroni/patroni.yml
linked to it, the cluster's server certificate (files/pki/pgsql/) as Patroni's and
vip-manager's etcd client TLS in /pg/cert, vip-manager.yml 0600. The packages
(rootfs.POSTGRES_PACKAGES) are in the base image, every service disabled there.
Debian bookworm's Patroni is 3.0.2 and vip-manager 1.0.2 (Pigsty ships newer ones;
the files they read are the same).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etcdsop.errors import ClusterError, InputError
from etcdsop.waits import poll_until

from .shell import Shell
from .state import PG_CLUSTER

if TYPE_CHECKING:
    from etcdsop.model import PgCluster
    from etcdsop.ops.common import Context

Progress = Callable[[str], None]
_KEY_LOCK = threading.Lock()

CLUSTER = PG_CLUSTER
# Pigsty v4.5: the unit runs `patroni /etc/patroni/patroni.yml`, a link to the file it
# renders, /pg/conf/<pg_instance>.yml (dbsu:postgres 0640).
PATRONI_CONF = "/etc/patroni/patroni.yml"
VIP_CONF = "/etc/default/vip-manager.yml"
PATRONI_LOG = "/pg/log/patroni/patroni.log"
PATRONICTL_LIST = f"patronictl -c {PATRONI_CONF} list"
START_TIMEOUT = 120.0  # a primary's initdb and a replica's basebackup on a busy machine
# What `sandbox postgres` puts on the hosts, and what a test removes between cases.
WIPE = (
    "systemctl disable --now vip-manager patroni >/dev/null 2>&1;"
    " pkill -u postgres >/dev/null 2>&1; sleep 0.5; pkill -9 -u postgres >/dev/null 2>&1;"
    " systemctl reset-failed patroni vip-manager >/dev/null 2>&1;"
    " rm -rf /pg /etc/patroni /etc/etcd-client /etc/default/vip-manager.yml"
    " /etc/default/vip-manager.yml.* /etc/systemd/system/patroni.service"
    " /etc/systemd/system/vip-manager.service /tmp/pgpass-*;"
    " systemctl daemon-reload; true"
)


def instance_conf(cluster: str, seq: int) -> str:
    return f"/pg/conf/{cluster}-{seq}.yml"


# Pigsty's templates/patroni.svc rendered (pg_dbsu postgres, watchdog off). Only change:
# LimitNOFILE within this machine's fs.nr_open (Pigsty's 8388608 needs a raised nr_open).
PATRONI_UNIT = """\
[Unit]
Description=Runners to orchestrate a high-availability PostgreSQL
After=syslog.target network.target

[Service]
Type=simple

User=postgres
Group=postgres

# Runtime Directory
RuntimeDirectory=postgresql
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes

# Read in configuration file if it exists, otherwise proceed
EnvironmentFile=-/etc/patroni_env.conf

WorkingDirectory=/var/lib/postgresql

# keep early startup and fallback logs in journald
StandardOutput=journal
StandardError=journal
SyslogIdentifier=patroni

# Start the patroni process
ExecStart=/usr/bin/patroni /etc/patroni/patroni.yml

# Send HUP to reload from patroni.yml
ExecReload=/usr/bin/kill -s HUP $MAINPID

# only kill the patroni process, not it's children, so it will gracefully stop postgres
KillMode=process

# Give a reasonable amount of time for the server to start up/shut down
TimeoutSec=30

# Do not restart the service if it crashes, we want to manually inspect database on failure
Restart=no

TimeoutStopSec=120
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity

# DO NOT OOM KILL PATRONI
OOMScoreAdjust=-1000

[Install]
WantedBy=multi-user.target
"""
# Pigsty's templates/vip-manager.svc
VIP_UNIT = """\
[Unit]
Description=Manages Virtual IP for Patroni
Documentation=https://github.com/cybertec-postgresql/vip-manager
After=network-online.target
Before=patroni.service

[Service]
Type=simple
ExecStart=/usr/bin/vip-manager --config=/etc/default/vip-manager.yml
Restart=on-failure
RestartSec=5s
CPUQuota=10%

[Install]
WantedBy=multi-user.target
"""


def patroni_yml(
    ip: str,
    seq: int,
    etcd_ips: Sequence[str],
    *,
    cluster: str = CLUSTER,
    password: str,
    members: Sequence[str] = (),
    v4: bool = True,
    citus: tuple[str, int] | None = None,
) -> str:
    """Pigsty's templates/oltp.yml as it renders (the parts Patroni 3.0 reads).
    citus: (pg_shard, pg_group) for pg_mode citus: scope and etcd user pg_shard.

    v4: its etcd3 section with the cluster's etcd user; older (3.0-3.4): the same
    section without credentials, which an etcd with RBAC needs: added after `key:`."""
    hosts = ",".join(f"{e}:2379" for e in sorted(etcd_ips))
    allow = ", ".join(sorted({*members, ip}))
    user = citus[0] if citus else cluster
    if citus:
        scope = f"""\
scope: {citus[0]}   # citus shard cluster: {cluster}

#--------------------------------------------------------------#
# citus
#--------------------------------------------------------------#
citus:
  group: {citus[1]}
  database: meta"""
    else:
        scope = f"scope: {cluster}   # common pgsql cluster"
    if v4:
        etcd3 = f"""\
etcd3:
  hosts: '{hosts}'
  cacert: /pg/cert/ca.crt
  cert:   /pg/cert/server.crt
  key:    /pg/cert/server.key
  protocol: https
  username: '{user}'
  password: '{password}'
"""
    else:
        etcd3 = f"""\
etcd3:
  hosts: '{hosts}'
  protocol: https
  cacert: /pg/cert/ca.crt
  cert:   /pg/cert/server.crt
  key:    /pg/cert/server.key
  username: '{cluster}'   # added for etcd RBAC
  password: '{password}'
"""
    return f"""\
#!/usr/bin/env patroni
#==============================================================#
# File      :   patroni.yml (oltp)
# Desc      :   Transaction Database Cluster Template (4-128C)
# Path      :   /pg/conf/{cluster}-{seq}.yml <- /etc/patroni/patroni.yml
# Note      :   ANSIBLE MANAGED, DO NOT CHANGE!
#==============================================================#
# ETCD: {" ".join(f"{e}:2379" for e in sorted(etcd_ips))}

---
#--------------------------------------------------------------#
# identity
#--------------------------------------------------------------#
# namespace, instance, cluster/shard scope
namespace: /pg/
name: {cluster}-{seq}
{scope}

#--------------------------------------------------------------#
# log
#--------------------------------------------------------------#
log:
  level: INFO                           #  NOTEST|DEBUG|INFO|WARNING|ERROR|CRITICAL
  dir: /pg/log/patroni                  #  patroni log dir
  file_size: 33554432                   #  32MB log triggers log rotation
  file_num: 4                           #  keep at most 4 x 32MB = 128MB
  dateformat: '%Y-%m-%d %H:%M:%S %z'    #  IMPORTANT: discard milli timestamp
  format: '%(asctime)s %(levelname)s: %(message)s'

#--------------------------------------------------------------#
# etcd
#--------------------------------------------------------------#
{etcd3}
#--------------------------------------------------------------#
# ctl
#--------------------------------------------------------------#
ctl:
  insecure: true

#--------------------------------------------------------------#
# api
#--------------------------------------------------------------#
# how to expose patroni service
restapi:
  listen: {ip}:8008
  connect_address: {ip}:8008
  # unsafe api can only be accessed from meta nodes with auth
  authentication:
    username: 'postgres'
    password: 'Patroni.API'
  allowlist: [ {allow} ]

#--------------------------------------------------------------#
# tags
#--------------------------------------------------------------#
tags:
  nofailover: false
  clonefrom: true
  noloadbalance: false
  nosync: false

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 40
        shared_buffers: 16MB
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8

postgresql:
  listen: 0.0.0.0:5432
  connect_address: {ip}:5432
  data_dir: /pg/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /tmp/pgpass-{cluster}
  authentication:
    superuser: {{username: postgres, password: 'DBUser.Postgres'}}
    replication: {{username: replicator, password: 'DBUser.Replicator'}}
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 198.18.0.0/16 scram-sha-256
    - host all all 198.18.0.0/16 scram-sha-256
  parameters:
    unix_socket_directories: /var/run/postgresql
"""


def vip_yml(
    seq: int,
    etcd_ips: Sequence[str],
    *,
    address: str,
    password: str,
    cluster: str = CLUSTER,
    v4: bool = True,
    citus: tuple[str, int] | None = None,
    interface: str = "eth0",
) -> str:
    """Pigsty's templates/vip-manager.yml rendered; before v4 (3.x and 2.x) it had no
    etcd user: the RBAC lines were commented out and the file was 0644."""
    address, mask = address.split("/")
    user = citus[0] if citus else cluster
    trigger = f"/pg/{citus[0]}/{citus[1]}/leader" if citus else f"/pg/{cluster}/leader"
    endpoints = "".join(f"  - https://{e}:2379\n" for e in sorted(etcd_ips))
    rbac = (
        f'etcd-user: "{user}"\netcd-password: "{password}"\n'
        if v4
        else '#etcd-user: "patroni"\n#etcd-password: "Julian\'s secret"\n'
    )
    return f"""\
---
# tuned configuration
#==============================================================#
# File      :   vip-manager.yml
# Desc      :   bind a l2 vip to postgres primary according to etcd
# Path      :   /etc/default/vip-manager.yml
# Note      :   ANSIBLE MANAGED, CHANGE WITH CAUTIONS!
#==============================================================#

# time (in milliseconds) after which vip-manager wakes up and checks (...)
interval: 1000

# the etcd or consul key which vip-manager will regularly poll.
trigger-key: "{trigger}"

# if the value of the above key matches the trigger-value (...)
trigger-value: "{cluster}-{seq}"

# the virtual ip address to manage
ip: {address}

# netmask for the virtual ip
netmask: {mask}

#interface to which the virtual ip will be added
interface: {interface}

# how the virtual ip should be managed (...)
hosting-type: basic # possible values: basic, or hetzner.

# etcd or consul
dcs-type: etcd

# a list that contains all DCS endpoints to which vip-manager could talk.
dcs-endpoints:
{endpoints}# A single list-item is also fine.

# when etcd-ca-file is specified, TLS connections to the etcd endpoints will be used.
etcd-ca-file: "/pg/cert/ca.crt"

# when etcd-cert-file and etcd-key-file are specified, (...) this certificate and key.
etcd-cert-file: "/pg/cert/server.crt"
etcd-key-file: "/pg/cert/server.key"

# etcd RBAC authentication
{rbac}
# how often things should be retried (currently only affects arpClient)
retry-num: 2
retry-after: 250  #in milliseconds

# verbose logs (currently only supported for hetzner)
verbose: false
...
"""


def server_cert(pki: Path, cluster: str, seq: int, ip: str) -> tuple[bytes, bytes]:
    """Pigsty's pg_cert: one key per cluster (files/pki/pgsql/<cluster>.key, 0600), a
    cert per instance signed by the CA (files/pki/pgsql/<cluster>-<seq>.crt; CN
    <cluster>-<seq>, O pigsty, OU postgres, SANs localhost, names, 127.0.0.1, ip)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    try:
        ca_key = serialization.load_pem_private_key((pki / "ca" / "ca.key").read_bytes(), None)
        ca = x509.load_pem_x509_certificate((pki / "ca" / "ca.crt").read_bytes())
    except FileNotFoundError as exc:
        raise InputError(f"no CA in {pki / 'ca'}: run `etcdsop create` first") from exc
    key_path = pki / "pgsql" / f"{cluster}.key"
    with _KEY_LOCK:  # hosts are laid out in parallel: one key per cluster, made once
        if not key_path.exists():
            key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            new = ec.generate_private_key(ec.SECP256R1())
            pem = new.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            tmp = key_path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            tmp.touch(mode=0o600)
            tmp.write_bytes(pem)
            tmp.replace(key_path)
        key_pem = key_path.read_bytes()
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster}-{seq}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pigsty"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "postgres"),
        ]
    )
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName(cluster),
        x509.DNSName(f"{cluster}-{seq}"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(ip)),
    ]
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7300))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (pki / "pgsql" / f"{cluster}-{seq}.crt").write_bytes(pem)
    return pem, key_pem


def remove_admin_files(pki: Path, cluster: str = CLUSTER) -> None:
    """`sandbox down`: what server_cert left on the admin node for the cluster (the
    rest of files/, made by `etcdsop create`, is the cluster's and stays)."""
    where = pki / "pgsql"
    for path in [where / f"{cluster}.key", *where.glob(f"{cluster}-*.crt")]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        where.rmdir()  # only when empty


def lay_out(
    shell: Shell, pki: Path, ip: str, cluster: str, seq: int, conf: str, vip: str | None, v4: bool
) -> None:
    """One host as Pigsty's pgsql role leaves it (v4.5, or 3.0-3.4 with v4=False);
    vip None: pg_vip_enabled false, no vip-manager files."""
    cert, key = server_cert(pki, cluster, seq, ip)
    shell.ssh(
        ip,
        "install -d -o postgres -g postgres -m 0700 /pg /pg/data"
        " && install -d -o postgres -g postgres -m 0755 /pg/bin /pg/conf /pg/cert /pg/log"
        " /pg/log/patroni && install -d -m 0755 /etc/patroni",
    )
    shell.put(ip, "/pg/cert/ca.crt", (pki / "ca" / "ca.crt").read_bytes(), "644", "postgres")
    shell.put(ip, "/pg/cert/server.crt", cert, "644", "postgres:postgres")
    shell.put(ip, "/pg/cert/server.key", key, "600", "postgres:postgres")
    ins = instance_conf(cluster, seq)
    if v4:
        shell.put(ip, ins, conf, "640", "postgres:postgres")
        links = [(ins, PATRONI_CONF)]
        if vip is not None:
            shell.put(ip, VIP_CONF, vip, "600", "root:postgres")
    else:
        # /etc/patroni/patroni.yml -> /pg/bin/patroni.yml -> /pg/conf/<ins>.yml -> oltp.yml
        shell.put(ip, "/pg/conf/oltp.yml", conf, "755", "postgres:postgres")
        links = [("/pg/conf/oltp.yml", ins), (ins, "/pg/bin/patroni.yml")]
        links.append(("/pg/bin/patroni.yml", PATRONI_CONF))
        if vip is not None:
            shell.put(ip, VIP_CONF, vip, "644", "root:root")
    for target, link in links:
        shell.ssh(ip, f"ln -sfn {target} {link} && chown -h postgres:postgres {link}")
    shell.put(ip, "/etc/systemd/system/patroni.service", PATRONI_UNIT, "644", "root:root")
    if vip is not None:
        shell.put(ip, "/etc/systemd/system/vip-manager.service", VIP_UNIT, "644", "root:root")
    shell.ssh(ip, "systemctl daemon-reload")


def members(shell: Shell, ip: str) -> list[dict[str, Any]]:
    """patronictl list, as Patroni's own view of the cluster through etcd."""
    try:
        out = shell.ssh(ip, f"{PATRONICTL_LIST} -f json", check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return []  # a busy host: the caller's deadline decides
    try:
        data = json.loads(out.stdout or "[]")
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def wait_members(
    shell: Shell, ip: str, want: dict[str, tuple[str, str]], timeout: float = START_TIMEOUT
) -> list[dict[str, Any]]:
    """Until patronictl on ip shows each member with its (role, state); ClusterError
    with Patroni's log after timeout."""
    seen: list[dict[str, Any]] = []

    def settled() -> list[dict[str, Any]] | None:
        nonlocal seen
        seen = members(shell, ip)
        roles = {m["Member"]: (m.get("Role"), m.get("State")) for m in seen}
        return seen if all(roles.get(name) == w for name, w in want.items()) else None

    done = poll_until(settled, timeout=timeout, interval=1.0)
    if done is not None:
        return done
    shown = ", ".join(f"{m.get('Member')} {m.get('Role')} {m.get('State')}" for m in seen)
    raise ClusterError(
        f"patroni on {ip}: members not {want} after {timeout:.0f}s (seen: {shown or 'none'})",
        details=patroni_log(shell, ip)[-3000:],
    )


def patroni_log(shell: Shell, ip: str, since: str = "") -> str:
    """What Patroni logged: its file (Pigsty's log.dir) and the unit's journal.
    since: epoch seconds; file lines carry Pigsty's dateformat, compared as text."""
    journal = f"journalctl -u patroni -o cat --no-pager {'--since @' + since if since else ''}"
    out = shell.ssh(ip, f"{journal}; cat {PATRONI_LOG} 2>/dev/null", check=False).stdout
    if not since:
        return out
    stamp = shell.ssh(ip, f"date -d @{since} '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    lines = out.splitlines()
    return "\n".join(line for line in lines if not line[:4].isdigit() or line[:19] >= stamp)


def start(shell: Shell, hosts: Sequence[str], cluster: str = CLUSTER, *, vip: bool = True) -> None:
    """Pigsty's pg_launch order: the primary (hosts[0]) until it leads, then the
    replicas until they stream; then vip-manager everywhere (with vip). Units enabled,
    as there."""
    shell.ssh(hosts[0], "systemctl enable --now patroni")
    leader = {f"{cluster}-1": ("Leader", "running")}
    wait_members(shell, hosts[0], leader)
    for ip in hosts[1:]:
        shell.ssh(ip, "systemctl enable --now patroni")
    # Patroni 3.0.2 says "running" for a streaming replica ("streaming" came in 3.0.4).
    want = {f"{cluster}-{n}": ("Replica", "running") for n in range(2, len(hosts) + 1)}
    wait_members(shell, hosts[0], {**leader, **want})
    if vip:
        shell.each(list(hosts), "systemctl enable --now vip-manager")


# -- `etcdsop sandbox postgres` ------------------------------------------------------------
@dataclass(frozen=True)
class PgSpec:
    """One PostgreSQL cluster of the sandbox inventory, as Pigsty's templates use it."""

    cluster: str
    hosts: tuple[str, ...]  # by pg_seq: the primary (pg_seq 1) first
    password: str  # pg_etcd_password
    vip: str  # pg_vip_address ("ip/prefix"), "" when pg_vip_enabled is false
    interface: str  # pg_vip_interface
    prefix: str = ""  # its keys in etcd: <pg_namespace>/<pg_cluster>/

    @classmethod
    def of(cls, pg: PgCluster) -> PgSpec:
        """From the inventory: pg_seq 1..n once each, the primary at 1 (InputError)."""
        seqs = {ip: pg.host_vars[ip].get("pg_seq") for ip in pg.hosts}
        wanted = list(range(1, len(pg.hosts) + 1))
        if sorted(s if isinstance(s, int) else 0 for s in seqs.values()) != wanted:
            raise InputError(f"pg cluster {pg.name}: pg_seq must be 1..{len(pg.hosts)} once each")
        ordered = sorted(pg.hosts, key=lambda ip: int(seqs[ip] or 0))
        first = pg.host_vars[ordered[0]]
        if first.get("pg_role", "primary") != "primary":
            raise InputError(f"pg cluster {pg.name}: pg_seq 1 ({ordered[0]}) must be the primary")
        vip = str(first.get("pg_vip_address") or "") if pg.vip_enabled else ""
        if pg.vip_enabled and "/" not in vip:
            raise InputError(f"pg cluster {pg.name}: pg_vip_address must be ip/prefix, not {vip!r}")
        interface = str(first.get("pg_vip_interface") or "auto")
        return cls(
            cluster=pg.name,
            hosts=tuple(ordered),
            password=pg.etcd_password or pg.name,
            vip=vip,
            interface="eth0" if interface == "auto" else interface,  # the sandbox's only NIC
            prefix=f"{pg.namespace.rstrip('/')}/{pg.scope}/",
        )


def running(shell: Shell, hosts: Sequence[str]) -> list[str]:
    """The hosts whose Patroni runs."""
    probe = "systemctl is-active patroni || true"
    return [ip for ip, out in shell.each(list(hosts), probe).items() if out.strip() == "active"]


def deploy(
    shell: Shell,
    pki: Path,
    spec: PgSpec,
    etcd_ips: Sequence[str],
    progress: Progress | None = None,
    clear_dcs: Callable[[str], object] | None = None,
) -> bool:
    """Lay out and start the cluster against the etcd voters etcd_ips; False (nothing
    touched) when every Patroni of it runs already: `etcdsop reload` is what re-points
    a running cluster. One running on some hosts only is refused (ClusterError)."""
    say = progress or (lambda _line: None)
    up = running(shell, spec.hosts)
    if up == list(spec.hosts):
        return False
    if up:
        down = ", ".join(ip for ip in spec.hosts if ip not in up)
        raise ClusterError(
            f"pg cluster {spec.cluster}: Patroni runs on {', '.join(up)} but not on {down}: "
            f"start it there (`etcdsop sandbox ssh <ip> systemctl start patroni`)"
        )
    shell.each(list(spec.hosts), WIPE)  # Pigsty's pg_clean: a fresh instance
    if clear_dcs is not None:
        # An earlier run's keys (initialize, leader...) would keep the new cluster
        # "waiting for leader to bootstrap": its data dirs are gone, so are they.
        clear_dcs(spec.prefix)

    def one(pair: tuple[int, str]) -> None:
        seq, ip = pair
        conf = patroni_yml(
            ip, seq, etcd_ips, cluster=spec.cluster, password=spec.password, members=spec.hosts
        )
        vip = None
        if spec.vip:
            vip = vip_yml(
                seq,
                etcd_ips,
                cluster=spec.cluster,
                password=spec.password,
                address=spec.vip,
                interface=spec.interface,
            )
        lay_out(shell, pki, ip, spec.cluster, seq, conf, vip, True)

    with ThreadPoolExecutor(max_workers=len(spec.hosts)) as pool:
        list(pool.map(one, enumerate(spec.hosts, start=1)))
    say(f"{spec.cluster}: Patroni and vip-manager configs on {', '.join(spec.hosts)}")
    start(shell, spec.hosts, spec.cluster, vip=bool(spec.vip))
    say(f"{spec.cluster}: {spec.cluster}-1 leads, {len(spec.hosts) - 1} replica(s) stream")
    if spec.vip:
        # Debian's vip-manager 1.0.2 reads the leader key through etcd's v2 API only, which
        # etcd 3.4 does not serve: it runs and re-reads its endpoints, but binds no VIP.
        say(f"{spec.cluster}: vip-manager running (Debian's 1.0.2: binds no VIP, see README)")
    return True


def bring_up(ctx: Context, shell: Shell, sandbox_ips: Sequence[str]) -> list[PgSpec]:
    """`etcdsop sandbox postgres`: every PostgreSQL cluster of the sandbox inventory on
    its etcd, as Pigsty's pgsql.yml after etcd.yml: its etcd user and role the way
    `etcdsop rbac sync` makes them, then Patroni and vip-manager pointed at the voters."""
    from urllib.parse import urlsplit

    from etcdsop.errors import GuardRefused
    from etcdsop.ops import rbac

    report = ctx.report
    specs = [PgSpec.of(pg) for pg in ctx.inventory.pg_clusters]
    if not specs:
        raise InputError(
            f"{ctx.inventory.path}: no PostgreSQL cluster (group with pg_cluster): "
            "boot the sandbox with `etcdsop sandbox up N --with-postgres`"
        )
    for spec in specs:
        strangers = [ip for ip in spec.hosts if ip not in sandbox_ips]
        if strangers:
            raise InputError(
                f"pg cluster {spec.cluster}: {', '.join(strangers)} is not a sandbox host"
            )
    view = ctx.probe()
    if not view.live or not view.voter_endpoints():
        raise ClusterError(
            f"no etcd cluster answers on {', '.join(m.ip for m in ctx.inventory.members)}: "
            "run `etcdsop create` first (as Pigsty runs etcd.yml before pgsql.yml)"
        )
    report.phase("etcd users of the PostgreSQL clusters (as `etcdsop rbac sync`)")
    client = ctx.voter_client(view)
    plans = rbac.plan(client, rbac.accounts(ctx.inventory))
    for account, _ in rbac.password_changes(plans):
        raise GuardRefused(
            f"pg cluster {account.cluster}: etcd user {account.name} exists with another "
            "password than pg_etcd_password: `etcdsop reload -t patroni,vip` changes it"
        )
    rbac.sync(client, [a for a, _ in plans], report, dry_run=False, plans=plans)
    hosts = sorted(
        {str(urlsplit(u).hostname) for u in view.voter_endpoints()}, key=ipaddress.ip_address
    )
    for spec in specs:
        report.phase(f"PostgreSQL cluster {spec.cluster} on {', '.join(spec.hosts)}")

        def say(line: str, name: str = spec.cluster) -> None:
            report.host(name, line.removeprefix(f"{name}: "), "changed")

        try:
            changed = deploy(shell, ctx.pki_dir, spec, hosts, say, client.delete_prefix)
        except subprocess.CalledProcessError as exc:
            raise ClusterError(
                f"pg cluster {spec.cluster}: a command failed (exit {exc.returncode})",
                details=f"{exc.cmd[-1]}\n{exc.stderr or ''}",
            ) from None
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"pg cluster {spec.cluster}: a command took over {exc.timeout:.0f}s",
                details=str(exc.cmd[-1]),
            ) from None
        if not changed:
            report.host(spec.cluster, "every Patroni runs already: left as it is", "ok")
    return specs
