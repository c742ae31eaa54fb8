"""A real 2-node Patroni cluster (PostgreSQL 15, Debian's patroni 3.0.2) and vip-manager
on sandbox hosts, set up the way Pigsty leaves them, for the reload tests.

The base rootfs carries the packages (conftest's PG_PACKAGES) with every service
disabled; this module writes the units and configs, ships the etcd client TLS
files, bootstraps the primary, then the replica, and wipes it all afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from tests.e2e.conftest import PASSWORD, Bed

from etcdsop.etcd import EtcdClient, TlsFiles

CLUSTER = "pg-test"
OLD_CLUSTER = "pg-old"  # one host laid out as Pigsty 3.0-3.4 did
PG_PASSWORD = "Pg.Etcd-e2e.1"
OLD_PASSWORD = "Pg.Old-e2e.1"
# Pigsty v4.5: the unit runs `patroni /etc/patroni/patroni.yml`, a link to the file it
# renders, /pg/conf/<pg_instance>.yml (dbsu:postgres 0640).
PATRONI_CONF = "/etc/patroni/patroni.yml"
VIP_CONF = "/etc/default/vip-manager.yml"
VIP_ADDRESS = "198.18.{subnet}.99/24"
OLD_VIP_ADDRESS = "198.18.{subnet}.98/24"
PATRONI_LOG = "/pg/log/patroni/patroni.log"


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
WIPE = (
    "systemctl stop vip-manager patroni >/dev/null 2>&1;"
    " pkill -u postgres >/dev/null 2>&1; sleep 0.5; pkill -9 -u postgres >/dev/null 2>&1;"
    " systemctl reset-failed patroni vip-manager >/dev/null 2>&1;"
    " rm -rf /pg /etc/patroni /etc/etcd-client /etc/default/vip-manager.yml"
    " /etc/default/vip-manager.yml.* /etc/systemd/system/patroni.service"
    " /etc/systemd/system/vip-manager.service /tmp/pgpass-*;"
    " systemctl daemon-reload; true"
)


def wipe(bed: Bed, ips: Sequence[str]) -> None:
    bed.each(list(ips), WIPE)


def _pg_group(
    name: str, hosts: Sequence[str], password: str, vip: str, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "hosts": {
            ip: {"pg_seq": n, "pg_role": "primary" if n == 1 else "replica"}
            for n, ip in enumerate(hosts, start=1)
        },
        "vars": {
            "pg_cluster": name,
            "pg_etcd_password": password,
            "pg_vip_enabled": True,
            "pg_vip_address": vip,
            "pg_vip_interface": "eth0",
            **extra,
        },
    }


def inventory(
    bed: Bed,
    where: Path,
    etcd: dict[str, int],
    pg: Sequence[str],
    *,
    root_password: str = PASSWORD,
    pg_vars: dict[str, Any] | None = None,
    old: str | None = None,
    old_vars: dict[str, Any] | None = None,
) -> Path:
    """Pigsty-shaped: the etcd group (ip -> etcd_seq), pg-test and (with old) pg-old."""
    children: dict[str, Any] = {
        "etcd": {
            "hosts": {ip: {"etcd_seq": seq} for ip, seq in etcd.items()},
            "vars": {"etcd_cluster": "etcd", "etcd_root_password": root_password},
        },
    }
    if pg:
        children[CLUSTER] = _pg_group(
            CLUSTER, pg, PG_PASSWORD, vip_address(bed), dict(pg_vars or {})
        )
    if old:
        address = OLD_VIP_ADDRESS.format(subnet=bed.ips[0].split(".")[2])
        children[OLD_CLUSTER] = _pg_group(
            OLD_CLUSTER, [old], OLD_PASSWORD, address, dict(old_vars or {})
        )
    doc = {
        "all": {
            "children": children,
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(bed.paths.ssh_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={bed.paths.known_hosts}"
                " -o StrictHostKeyChecking=accept-new",
            },
        }
    }
    path = where / "pigsty.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def vip_address(bed: Bed) -> str:
    return VIP_ADDRESS.format(subnet=bed.ips[0].split(".")[2])


def patroni_yml(
    ip: str,
    seq: int,
    etcd_ips: Sequence[str],
    *,
    cluster: str = CLUSTER,
    password: str = PG_PASSWORD,
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
    superuser: {{username: postgres, password: 'Su.Pg-e2e'}}
    replication: {{username: replicator, password: 'Repl.Pg-e2e'}}
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 198.18.0.0/16 scram-sha-256
    - host all all 198.18.0.0/16 scram-sha-256
  parameters:
    unix_socket_directories: /var/run/postgresql
"""


def vip_yml(
    bed: Bed,
    seq: int,
    etcd_ips: Sequence[str],
    *,
    cluster: str = CLUSTER,
    password: str = PG_PASSWORD,
    v4: bool = True,
    citus: tuple[str, int] | None = None,
    address: str = "",
) -> str:
    """Pigsty's templates/vip-manager.yml rendered; before v4 (3.x and 2.x) it had no
    etcd user: the RBAC lines were commented out and the file was 0644."""
    address, mask = (
        address
        or (vip_address(bed) if v4 else OLD_VIP_ADDRESS.format(subnet=bed.ips[0].split(".")[2]))
    ).split("/")
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
interface: eth0

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


def put(bed: Bed, ip: str, path: str, content: str | bytes, mode: str, owner: str) -> None:
    text = content.decode() if isinstance(content, bytes) else content
    script = f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"
    bed.ssh(ip, f"{script} && chown {owner} {path}", stdin=text)


def server_cert(pki: Path, cluster: str, seq: int, ip: str) -> tuple[bytes, bytes]:
    """Pigsty's pg_cert: one key per cluster, a cert per instance signed by the CA
    (CN <cluster>-<seq>, O pigsty, OU postgres, SANs localhost, names, 127.0.0.1, ip)."""
    ca_key = serialization.load_pem_private_key((pki / "ca" / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((pki / "ca" / "ca.crt").read_bytes())
    key_path = pki / "pgsql" / f"{cluster}.key"
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        new = ec.generate_private_key(ec.SECP256R1())
        key_path.write_bytes(
            new.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
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
    return cert.public_bytes(serialization.Encoding.PEM), key_path.read_bytes()


def lay_out(
    bed: Bed, pki: Path, ip: str, cluster: str, seq: int, conf: str, vip: str, v4: bool
) -> None:
    """One host as Pigsty's pgsql role leaves it (v4.5, or 3.0-3.4 with v4=False)."""
    cert, key = server_cert(pki, cluster, seq, ip)
    bed.ssh(
        ip,
        "install -d -o postgres -g postgres -m 0700 /pg /pg/data"
        " && install -d -o postgres -g postgres -m 0755 /pg/bin /pg/conf /pg/cert /pg/log"
        " /pg/log/patroni && install -d -m 0755 /etc/patroni",
    )
    put(bed, ip, "/pg/cert/ca.crt", (pki / "ca" / "ca.crt").read_bytes(), "644", "postgres")
    put(bed, ip, "/pg/cert/server.crt", cert, "644", "postgres:postgres")
    put(bed, ip, "/pg/cert/server.key", key, "600", "postgres:postgres")
    ins = instance_conf(cluster, seq)
    if v4:
        put(bed, ip, ins, conf, "640", "postgres:postgres")
        links = [(ins, PATRONI_CONF)]
        put(bed, ip, VIP_CONF, vip, "600", "root:postgres")
    else:
        # /etc/patroni/patroni.yml -> /pg/bin/patroni.yml -> /pg/conf/<ins>.yml -> oltp.yml
        put(bed, ip, "/pg/conf/oltp.yml", conf, "755", "postgres:postgres")
        links = [("/pg/conf/oltp.yml", ins), (ins, "/pg/bin/patroni.yml")]
        links.append(("/pg/bin/patroni.yml", PATRONI_CONF))
        put(bed, ip, VIP_CONF, vip, "644", "root:root")
    for target, link in links:
        bed.ssh(ip, f"ln -sfn {target} {link} && chown -h postgres:postgres {link}")
    put(bed, ip, "/etc/systemd/system/patroni.service", PATRONI_UNIT, "644", "root:root")
    put(bed, ip, "/etc/systemd/system/vip-manager.service", VIP_UNIT, "644", "root:root")
    bed.ssh(ip, "systemctl daemon-reload")


def provision(
    bed: Bed, inv: Path, pg: Sequence[str], etcd_ips: Sequence[str], old: str | None = None
) -> None:
    """What Pigsty's pgsql.yml would have left: configs, TLS files, running clusters."""
    pki = inv.parent / "files" / "pki"
    for seq, ip in enumerate(pg, start=1):
        conf = patroni_yml(ip, seq, etcd_ips, members=pg)
        lay_out(bed, pki, ip, CLUSTER, seq, conf, vip_yml(bed, seq, etcd_ips), True)
    if old:
        conf = patroni_yml(old, 1, etcd_ips, cluster=OLD_CLUSTER, password=OLD_PASSWORD, v4=False)
        vip = vip_yml(bed, 1, etcd_ips, cluster=OLD_CLUSTER, v4=False)
        lay_out(bed, pki, old, OLD_CLUSTER, 1, conf, vip, False)
        bed.ssh(old, "systemctl start patroni")
    bed.ssh(pg[0], "systemctl start patroni")
    wait_members(bed, pg[0], {f"{CLUSTER}-1": ("Leader", "running")})
    for ip in pg[1:]:
        bed.ssh(ip, "systemctl start patroni")
    # Patroni 3.0.2 says "running" for a streaming replica ("streaming" came in 3.0.4).
    want = {f"{CLUSTER}-{n}": ("Replica", "running") for n in range(2, len(pg) + 1)}
    wait_members(bed, pg[0], {f"{CLUSTER}-1": ("Leader", "running"), **want})
    bed.each(list(pg), "systemctl start vip-manager")
    if old:
        wait_members(bed, old, {f"{OLD_CLUSTER}-1": ("Leader", "running")})
        # No etcd user in its file yet: it fails to read its key until reload gives it one.
        bed.ssh(old, "systemctl start vip-manager")


def members(bed: Bed, ip: str) -> list[dict[str, Any]]:
    """patronictl list, as Patroni's own view of the cluster through etcd."""
    out = bed.ssh(ip, f"patronictl -c {PATRONI_CONF} list -f json", check=False, timeout=60)
    try:
        data = json.loads(out.stdout or "[]")
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def wait_members(
    bed: Bed, ip: str, want: dict[str, tuple[str, str]], timeout: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = members(bed, ip)
        roles = {m["Member"]: (m.get("Role"), m.get("State")) for m in seen}
        if all(roles.get(name) == wanted for name, wanted in want.items()):
            return seen
        time.sleep(1)
    log = patroni_log(bed, ip)[-3000:]
    raise AssertionError(f"patroni members not {want} after {timeout}s: {seen}\n{log}")


def patroni_log(bed: Bed, ip: str, since: str = "") -> str:
    """What Patroni logged: its file (Pigsty's log.dir) and the unit's journal.
    since: epoch seconds; file lines carry Pigsty's dateformat, compared as text."""
    journal = f"journalctl -u patroni -o cat --no-pager {'--since @' + since if since else ''}"
    out = bed.ssh(ip, f"{journal}; cat {PATRONI_LOG} 2>/dev/null", check=False).stdout
    if not since:
        return out
    stamp = bed.ssh(ip, f"date -d @{since} '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    lines = out.splitlines()
    return "\n".join(line for line in lines if not line[:4].isdigit() or line[:19] >= stamp)


def pg_client(
    inv: Path, etcd_ips: Sequence[str], password: str = PG_PASSWORD, user: str = CLUSTER
) -> EtcdClient:
    """A PostgreSQL cluster's etcd user, through etcdsop's CN-less admin certificate."""
    pki = inv.parent / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt", pki / "etcdsop" / "admin.crt", pki / "etcdsop" / "admin.key"
    )
    return EtcdClient([f"https://{ip}:2379" for ip in etcd_ips], tls, user=user, password=password)
