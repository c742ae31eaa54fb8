"""Node files rendered from the model, strictly (a missing value is an error).

Paths, owners and modes are Pigsty's (see shared/spec/pigsty-etcd.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from etcdsop.errors import InputError
from etcdsop.model import Member

ETCD_CONF = "/etc/etcd/etcd.conf"
ETCD_PASS = "/etc/etcd/etcd.pass"
CA_CRT = "/etc/etcd/ca.crt"
SERVER_CRT = "/etc/etcd/server.crt"
SERVER_KEY = "/etc/etcd/server.key"
UNIT = "/etc/systemd/system/etcd.service"
PROFILE = "/etc/profile.d/etcdctl.sh"


@dataclass(frozen=True)
class NodeDir:
    path: str
    owner: str
    group: str
    mode: int


@dataclass(frozen=True)
class NodeFile:
    path: str
    content: bytes
    owner: str
    group: str
    mode: int
    secret: bool = False  # masked in diffs and never read back in full


@dataclass(frozen=True)
class PeerRef:
    """One entry of initial-cluster: a member name and its peer URL."""

    name: str
    peer_url: str


def node_dirs(member: Member) -> list[NodeDir]:
    return [
        NodeDir("/etc/etcd", "etcd", "etcd", 0o750),
        NodeDir("/var/lib/etcd", "etcd", "etcd", 0o770),
        NodeDir(member.data_dir, "etcd", "etcd", 0o700),
    ]


@cache
def _template(name: str) -> Template:
    return Template(resources.files("etcdsop.templates").joinpath(name).read_text())


def _render(template: str, **values: object) -> bytes:
    try:
        return _template(template).substitute(values).encode()
    except KeyError as exc:  # a template/code mismatch: a bug, not user input
        raise AssertionError(f"template {template} needs {exc}") from exc


_SHELL_WORD = re.compile(r"^[a-z_][a-z0-9_-]*$")


def render_etcd_conf(member: Member, initial_cluster: Sequence[PeerRef], init: str) -> bytes:
    return _render(
        "etcd.conf",
        name=member.name,
        data_dir=member.data_dir,
        cluster=member.cluster,
        init=init,
        initial_cluster=",".join(f"{p.name}={p.peer_url}" for p in initial_cluster),
        peer_url=member.peer_url,
        client_url=member.client_url,
        port=member.port,
        election_timeout=member.election_timeout,
        heartbeat_interval=member.heartbeat_interval,
        quota_backend_bytes=member.quota_backend_bytes,
        client_cert_auth="true" if member.client_cert_auth else "false",
    )


def render_unit(member: Member) -> bytes:
    return _render("etcd.service", name=member.name, data_dir=member.data_dir)


def render_profile(member: Member, endpoints: Sequence[str]) -> bytes:
    admin = str(member.vars.get("admin_username", "dba"))
    if not _SHELL_WORD.match(admin):
        raise InputError(f"host {member.ip}: admin_username {admin!r} is not a valid user name")
    return _render(
        "etcdctl.sh", cluster=member.cluster, endpoints=",".join(endpoints), admin_user=admin
    )


def node_files(
    member: Member,
    *,
    initial_cluster: Sequence[PeerRef],
    init: str,
    endpoints: Sequence[str],
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
) -> list[NodeFile]:
    """Every file etcdsop manages on one member, in the order they are written."""
    return [
        NodeFile(CA_CRT, ca_pem, "etcd", "etcd", 0o644),
        NodeFile(SERVER_CRT, cert_pem, "etcd", "etcd", 0o644),
        NodeFile(SERVER_KEY, key_pem, "etcd", "etcd", 0o600, secret=True),
        NodeFile(ETCD_PASS, member.root_password.encode(), "root", "etcd", 0o640, secret=True),
        NodeFile(ETCD_CONF, render_etcd_conf(member, initial_cluster, init), "etcd", "etcd", 0o644),
        NodeFile(UNIT, render_unit(member), "root", "root", 0o644),
        NodeFile(PROFILE, render_profile(member, endpoints), "root", "root", 0o644),
    ]


MANAGED_PATHS = (CA_CRT, SERVER_CRT, SERVER_KEY, ETCD_PASS, ETCD_CONF, UNIT, PROFILE)
SECRET_PATHS = frozenset({SERVER_KEY, ETCD_PASS})
