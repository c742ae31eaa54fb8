"""A real 2-node Patroni cluster (PostgreSQL 15, Debian's patroni 3.0.2) and vip-manager
on sandbox hosts, set up the way Pigsty leaves them, for the reload tests.

The base rootfs carries the packages (conftest's PG_PACKAGES) with every service
disabled; this module writes the units and configs, ships the etcd client TLS
files, bootstraps the primary, then the replica, and wipes it all afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.conftest import PASSWORD, Bed

from etcdsop.etcd import EtcdClient, TlsFiles
from etcdsop.pki import Pki

CLUSTER = "pg-test"
PG_PASSWORD = "Pg.Etcd-e2e.1"
PATRONI_CONF = "/pg/bin/patroni.yml"
VIP_CONF = "/etc/default/vip-manager.yml"
VIP_ADDRESS = "198.18.{subnet}.99/24"

PATRONI_UNIT = """\
[Unit]
Description=Patroni (etcdsop e2e)
After=network-online.target

[Service]
Type=simple
User=postgres
Group=postgres
ExecStart=/usr/bin/patroni /pg/bin/patroni.yml
ExecReload=/bin/kill -s HUP $MAINPID
KillMode=process
TimeoutSec=30
Restart=no

[Install]
WantedBy=multi-user.target
"""
# Pigsty's unit: vip-manager reads the YAML file (Debian's unit reads env vars).
VIP_UNIT = """\
[Unit]
Description=vip-manager (etcdsop e2e)
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/bin/vip-manager --config=/etc/default/vip-manager.yml
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
WIPE = (
    "systemctl stop vip-manager patroni >/dev/null 2>&1;"
    " pkill -u postgres >/dev/null 2>&1; sleep 0.5; pkill -9 -u postgres >/dev/null 2>&1;"
    " systemctl reset-failed patroni vip-manager >/dev/null 2>&1;"
    " rm -rf /pg /etc/etcd-client /etc/default/vip-manager.yml /etc/default/vip-manager.yml.*"
    " /etc/systemd/system/patroni.service /etc/systemd/system/vip-manager.service;"
    " systemctl daemon-reload; true"
)


def wipe(bed: Bed, ips: Sequence[str]) -> None:
    bed.each(list(ips), WIPE)


def inventory(
    bed: Bed,
    where: Path,
    etcd: dict[str, int],
    pg: Sequence[str],
    *,
    root_password: str = PASSWORD,
    pg_vars: dict[str, Any] | None = None,
) -> Path:
    """Pigsty-shaped: the etcd group (ip -> etcd_seq) and a pg-test group."""
    doc = {
        "all": {
            "children": {
                "etcd": {
                    "hosts": {ip: {"etcd_seq": seq} for ip, seq in etcd.items()},
                    "vars": {"etcd_cluster": "etcd", "etcd_root_password": root_password},
                },
                CLUSTER: {
                    "hosts": {
                        ip: {"pg_seq": n, "pg_role": "primary" if n == 1 else "replica"}
                        for n, ip in enumerate(pg, start=1)
                    },
                    "vars": {
                        "pg_cluster": CLUSTER,
                        "pg_etcd_password": PG_PASSWORD,
                        "pg_vip_enabled": True,
                        "pg_vip_address": vip_address(bed),
                        "pg_vip_interface": "eth0",
                        **(pg_vars or {}),
                    },
                },
            },
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


def patroni_yml(ip: str, seq: int, etcd_ips: Sequence[str]) -> str:
    hosts = ",".join(f"{e}:2379" for e in etcd_ips)
    return f"""\
# Patroni of {CLUSTER}-{seq}, shaped like Pigsty's /pg/bin/patroni.yml
scope: {CLUSTER}
namespace: /pg/
name: {CLUSTER}-{seq}

restapi:
  listen: 0.0.0.0:8008
  connect_address: {ip}:8008

# the DCS: etcd v3 over TLS, as the cluster's own etcd user
etcd3:
  hosts: '{hosts}'
  protocol: https
  cacert: /etc/etcd-client/ca.crt
  cert: /etc/etcd-client/client.crt
  key: /etc/etcd-client/client.key
  username: {CLUSTER}
  password: '{PG_PASSWORD}'

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
  pgpass: /tmp/pgpass-{CLUSTER}
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

tags:
  nofailover: false  # both may lead
"""


def vip_yml(bed: Bed, seq: int, etcd_ips: Sequence[str]) -> str:
    address, mask = vip_address(bed).split("/")
    endpoints = "".join(f"  - https://{e}:2379\n" for e in etcd_ips)
    return f"""\
# vip-manager of {CLUSTER}-{seq}, shaped like Pigsty's
ip: {address}
netmask: {mask}
interface: eth0
trigger-key: "/pg/{CLUSTER}/leader"
trigger-value: "{CLUSTER}-{seq}"
dcs-type: etcd
dcs-endpoints:
{endpoints}etcd-user: {CLUSTER}
etcd-password: '{PG_PASSWORD}'
etcd-ca-file: /etc/etcd-client/ca.crt
etcd-cert-file: /etc/etcd-client/client.crt
etcd-key-file: /etc/etcd-client/client.key
interval: 1000
"""


def put(bed: Bed, ip: str, path: str, content: str | bytes, mode: str, owner: str) -> None:
    text = content.decode() if isinstance(content, bytes) else content
    script = f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}"
    bed.ssh(ip, f"{script} && chown {owner} {path}", stdin=text)


def provision(bed: Bed, inv: Path, pg: Sequence[str], etcd_ips: Sequence[str]) -> None:
    """What Pigsty's pgsql.yml would have left: configs, TLS files, a running cluster."""
    pki = Pki(inv.parent / "files" / "pki")
    client = pki.ensure_client(f"pg-{CLUSTER}")
    for seq, ip in enumerate(pg, start=1):
        bed.ssh(ip, "install -d -o postgres -g postgres -m 0700 /pg /pg/bin /pg/data")
        bed.ssh(ip, "install -d -o root -g postgres -m 0750 /etc/etcd-client")
        for name, pem, mode in (
            ("ca.crt", pki.ca_cert_path.read_bytes(), "644"),
            ("client.crt", client.cert_pem, "644"),
            ("client.key", client.key_pem, "640"),
        ):
            put(bed, ip, f"/etc/etcd-client/{name}", pem, mode, "root:postgres")
        put(bed, ip, PATRONI_CONF, patroni_yml(ip, seq, etcd_ips), "600", "postgres:postgres")
        put(bed, ip, VIP_CONF, vip_yml(bed, seq, etcd_ips), "600", "root:root")
        put(bed, ip, "/etc/systemd/system/patroni.service", PATRONI_UNIT, "644", "root:root")
        put(bed, ip, "/etc/systemd/system/vip-manager.service", VIP_UNIT, "644", "root:root")
        bed.ssh(ip, "systemctl daemon-reload")
    bed.ssh(pg[0], "systemctl start patroni")
    wait_members(bed, pg[0], {f"{CLUSTER}-1": ("Leader", "running")})
    for ip in pg[1:]:
        bed.ssh(ip, "systemctl start patroni")
    # Patroni 3.0.2 says "running" for a streaming replica ("streaming" came in 3.0.4).
    want = {f"{CLUSTER}-{n}": ("Replica", "running") for n in range(2, len(pg) + 1)}
    wait_members(bed, pg[0], {f"{CLUSTER}-1": ("Leader", "running"), **want})
    bed.each(list(pg), "systemctl start vip-manager")


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
    journal = bed.ssh(ip, "journalctl -u patroni -n 30 --no-pager -o cat", check=False).stdout
    raise AssertionError(f"patroni members not {want} after {timeout}s: {seen}\n{journal}")


def pg_client(inv: Path, etcd_ips: Sequence[str], password: str = PG_PASSWORD) -> EtcdClient:
    """The pg-test etcd user, through the CN-less client cert the pg hosts use."""
    pki = inv.parent / "files" / "pki"
    tls = TlsFiles(
        pki / "ca" / "ca.crt",
        pki / "etcdsop" / f"pg-{CLUSTER}.crt",
        pki / "etcdsop" / f"pg-{CLUSTER}.key",
    )
    return EtcdClient(
        [f"https://{ip}:2379" for ip in etcd_ips], tls, user=CLUSTER, password=password
    )
