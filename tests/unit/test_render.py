from __future__ import annotations

import yaml
from tests.unit.factories import member, trio

from etcdsop.render import PeerRef, node_files, render_etcd_conf, render_profile, render_unit

EXPECTED_CONF = """\
# etcd configuration for etcd-2, managed by etcdsop: local edits are overwritten
name: etcd-2
data-dir: /data/etcd
initial-cluster-token: etcd
initial-cluster-state: new
initial-cluster: etcd-1=https://10.10.10.10:2380,etcd-2=https://10.10.10.11:2380,\
etcd-3=https://10.10.10.12:2380
initial-advertise-peer-urls: https://10.10.10.11:2380
listen-peer-urls: https://10.10.10.11:2380
listen-client-urls: https://10.10.10.11:2379,https://127.0.0.1:2379
advertise-client-urls: https://10.10.10.11:2379
election-timeout: 1000
heartbeat-interval: 100
# A member back from a network partition must not depose a working leader (etcd
# 3.5+ default; 3.4 has it off, and every heal then costs an election).
pre-vote: true
quota-backend-bytes: 8589934592
auto-compaction-mode: periodic
auto-compaction-retention: "24h"
# The v3 JSON gateway (etcdsop, Patroni) is off by default when a config file is used.
enable-grpc-gateway: true
client-transport-security:
  cert-file: /etc/etcd/server.crt
  key-file: /etc/etcd/server.key
  trusted-ca-file: /etc/etcd/ca.crt
  client-cert-auth: false
# Peers present their node certificate: only CA-signed members may talk raft.
peer-transport-security:
  cert-file: /etc/etcd/server.crt
  key-file: /etc/etcd/server.key
  trusted-ca-file: /etc/etcd/ca.crt
  client-cert-auth: true
"""


def _cluster() -> list[PeerRef]:
    return [PeerRef(m.name, m.peer_url) for m in trio()]


def test_etcd_conf_matches_reference_text() -> None:
    conf = render_etcd_conf(trio()[1], _cluster(), "new").decode()
    assert conf == EXPECTED_CONF
    parsed = yaml.safe_load(conf)
    assert parsed["auto-compaction-retention"] == "24h"
    # Pigsty's default: clients need no certificate of their own; peers always do.
    assert parsed["client-transport-security"]["client-cert-auth"] is False
    assert parsed["peer-transport-security"]["client-cert-auth"] is True
    with_auth = yaml.safe_load(render_etcd_conf(member(client_cert_auth=True), [], "new"))
    assert with_auth["client-transport-security"]["client-cert-auth"] is True


def test_etcd_conf_follows_member_variables() -> None:
    m = member(
        "10.0.0.5",
        7,
        cluster="meta",
        port=3379,
        peer_port=3380,
        data_dir="/pg/etcd",
        heartbeat_interval=250,
        election_timeout=2500,
    )
    conf = yaml.safe_load(render_etcd_conf(m, [PeerRef(m.name, m.peer_url)], "existing"))
    assert conf["name"] == "meta-7"
    assert conf["initial-cluster-state"] == "existing"
    assert conf["initial-cluster"] == "meta-7=https://10.0.0.5:3380"
    assert conf["listen-client-urls"] == "https://10.0.0.5:3379,https://127.0.0.1:3379"
    assert (conf["heartbeat-interval"], conf["election-timeout"]) == (250, 2500)
    assert conf["data-dir"] == "/pg/etcd"


def test_unit_is_type_notify_with_reference_limits() -> None:
    unit = render_unit(member(data_dir="/data/etcd")).decode()
    for line in (
        "Type=notify",
        "User=etcd",
        "WorkingDirectory=/data/etcd",
        "ExecStart=/usr/bin/etcd --config-file /etc/etcd/etcd.conf",
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStartSec=0",  # etcdsop's waits bound the start: a joiner may take long
        "TimeoutStopSec=60",
        "LimitNOFILE=65536",
        "OOMScoreAdjust=-1000",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines()


def test_profile_exports_endpoints_and_reads_password_from_file() -> None:
    text = render_profile(member(), ["https://10.10.10.10:2379", "https://10.10.10.11:2379"])
    body = text.decode()
    assert 'export ETCDCTL_ENDPOINTS="https://10.10.10.10:2379,https://10.10.10.11:2379"' in body
    assert 'ETCDCTL_USER="root:$(cat /etc/etcd/etcd.pass)"' in body
    assert "root|dba)" in body
    assert "S3cret" not in body


def test_node_files_paths_owners_modes() -> None:
    m = member()
    files = {
        f.path: f
        for f in node_files(
            m,
            initial_cluster=_cluster(),
            init="new",
            endpoints=[m.client_url],
            ca_pem=b"CA",
            cert_pem=b"CRT",
            key_pem=b"KEY",
        )
    }
    expected = {
        "/etc/etcd/etcd.conf": ("etcd", "etcd", 0o644),
        "/etc/etcd/etcd.pass": ("root", "etcd", 0o640),
        "/etc/etcd/ca.crt": ("etcd", "etcd", 0o644),
        "/etc/etcd/server.crt": ("etcd", "etcd", 0o644),
        "/etc/etcd/server.key": ("etcd", "etcd", 0o600),
        "/etc/systemd/system/etcd.service": ("root", "root", 0o644),
        "/etc/profile.d/etcdctl.sh": ("root", "root", 0o644),
    }
    assert {p: (f.owner, f.group, f.mode) for p, f in files.items()} == expected
    assert files["/etc/etcd/etcd.pass"].content == b"S3cret.Pass"  # bare, no newline
    assert {p for p, f in files.items() if f.secret} == {
        "/etc/etcd/etcd.pass",
        "/etc/etcd/server.key",
    }
