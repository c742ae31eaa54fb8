"""Pure checks that keep `create` from touching data that is not ours to touch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from etcdsop.errors import GuardRefused
from etcdsop.etcd import MemberInfo
from etcdsop.facts import HostFacts
from etcdsop.model import Member
from etcdsop.render import CA_CRT, ETCD_CONF


def existing_conf(facts: HostFacts) -> dict[str, Any] | None:
    current = facts.files.get(ETCD_CONF)
    if current is None or current.content is None:
        return None
    try:
        conf = yaml.safe_load(current.content)
    except yaml.YAMLError:
        return {}
    return conf if isinstance(conf, dict) else {}


def create_refusal(
    member: Member,
    facts: HostFacts,
    live: MemberInfo | None,
    cluster_live: bool,
    *,
    foreign_cluster: bool = False,
) -> str | None:
    """Why creating/joining on this host could destroy data, or None when it is safe."""
    ip, data = member.ip, member.data_dir
    rm_hint = f"remove it first (etcdsop rm {ip}, or stop etcd and wipe {data})"
    conf = existing_conf(facts)
    token = (conf or {}).get("initial-cluster-token")
    if foreign_cluster:
        return f"host {ip} answers as a member of another etcd cluster: {rm_hint}"
    foreign = foreign_entries(facts)
    if foreign:
        return (
            f"host {ip}: etcd_data {data} is not empty and holds no etcd data "
            f"({', '.join(foreign[:5])}): refusing to make it etcd's; choose another etcd_data"
        )
    if facts.running and conf is None:
        return (
            f"host {ip} runs an etcd that etcdsop did not configure (no {ETCD_CONF}): "
            f"stop it first (systemctl disable --now etcd) if it holds nothing you need"
        )
    if token is not None and str(token) != member.cluster and (facts.running or facts.has_data):
        return (
            f"host {ip} holds etcd cluster {token!r}, not {member.cluster!r} "
            f"(initial-cluster-token in {ETCD_CONF}): {rm_hint}"
        )
    # Client URLs are published at a member's first start (an initial-cluster member
    # has its name from the start, so the name proves nothing).
    if cluster_live and live is not None and live.client_urls and not facts.has_data:
        return (
            f"host {ip} is member {live.name or live.hex_id} of the live cluster but "
            f"{data} holds no etcd data: started so, it would crash (or rejoin empty); "
            f"replace it: etcdsop rm {ip}, then etcdsop add {ip}"
        )
    if cluster_live and live is None:
        if facts.has_data:
            return (
                f"host {ip} holds data dir {data} that is not a member of the live cluster "
                f"{member.cluster!r}: {rm_hint}, then join with: "
                f"etcdsop create -l {ip} -e etcd_init=existing"
            )
        if member.init != "existing":
            return (
                f"cluster {member.cluster!r} is running and {ip} is not a member: join it "
                f"with: etcdsop create -l {ip} -e etcd_init=existing"
            )
    if not cluster_live and facts.has_data and conf and conf.get("name") not in (None, member.name):
        return (
            f"host {ip} holds the data dir of member {conf.get('name')!r}, "
            f"not {member.name!r}: {rm_hint}"
        )
    return None


def same_ca(host_pem: bytes, local_pem: bytes | None) -> bool:
    """Whether a host's /etc/etcd/ca.crt trusts the local signing CA (the first of the
    local file; same key: a CA renewed with its own key still signs what the hosts
    trust). While `certs rotate-ca` runs either file holds old + new CA: the host is
    this cluster's as long as what this admin node signs with is trusted there (an older
    copy of the pki dir, still signing with the old CA, is not)."""
    if local_pem is None:
        return False
    if host_pem.strip() == local_pem.strip():
        return True
    from etcdsop.certinfo import load_pems
    from etcdsop.pki import _spki

    local = load_pems(local_pem)
    return bool(local) and _spki(local[0].public_key()) in {
        _spki(c.public_key()) for c in load_pems(host_pem)
    }


def pki_refusal(member: Member, facts: HostFacts, local_ca_pem: bytes | None) -> str | None:
    """A host that runs, or holds data of, a cluster whose CA is not the local one:
    issuing a CA here would replace what its members and clients trust."""
    current = facts.files.get(CA_CRT)
    if current is None or current.content is None:
        return None
    if not (facts.running or facts.has_data):
        return None  # a leftover file with nothing behind it: ours to overwrite
    token = (existing_conf(facts) or {}).get("initial-cluster-token")
    if token is not None and str(token) != member.cluster:
        return None  # another cluster's host: create_refusal names it
    if same_ca(current.content, local_ca_pem):
        return None
    local = "no local CA" if local_ca_pem is None else "another CA than the local one"
    return f"host {member.ip} trusts a CA in {CA_CRT} that is not this admin node's ({local})"


def foreign_entries(facts: HostFacts) -> list[str]:
    """What a data dir without etcd data holds (a mount point's lost+found aside)."""
    if facts.has_data:
        return []
    return [e for e in facts.data_entries if e != "lost+found"]


INSTALL_MARKER = ".etcdsop-installed"  # in /var/lib/etcd: etcdsop installed the package
PACKAGE_DEFAULT = "default"  # the data dir of the package's own etcd, started on install


def cleanup_refusal(member: Member, facts: HostFacts, rm_data: bool = True) -> str | None:
    """Why stopping (and, with rm_data, deleting) etcd on this host could touch what is
    not ours, or None.

    Ours is what the host's own etcd.conf says belongs to this member of this
    cluster (its name, the cluster's token, the inventory's data dir and peer URL).
    """
    ip = member.ip
    conf = existing_conf(facts)
    var_lib = [e for e in facts.var_lib_entries if e != INSTALL_MARKER]
    if INSTALL_MARKER in facts.var_lib_entries:  # the package's default data is ours too
        var_lib = [e for e in var_lib if e != PACKAGE_DEFAULT]
    if conf is None:
        found = []
        if facts.running:
            found.append("an etcd running without /etc/etcd/etcd.conf")
        if rm_data and (facts.has_data or foreign_entries(facts)):
            found.append(f"{member.data_dir} holding files")
        if rm_data and var_lib:
            found.append(f"/var/lib/etcd holding {', '.join(var_lib[:5])}")
        if found:
            return f"host {ip} has no etcd.conf of cluster {member.cluster!r} but " + (
                " and ".join(found)
            )
        return None
    problems = []
    if str(conf.get("initial-cluster-token")) != member.cluster:
        problems.append(f"cluster token {conf.get('initial-cluster-token')!r}")
    if str(conf.get("name")) != member.name:
        problems.append(f"member name {conf.get('name')!r}")
    if str(conf.get("data-dir", "")).rstrip("/") != member.data_dir:
        problems.append(f"data dir {conf.get('data-dir')!r}")
    peer = conf.get("initial-advertise-peer-urls")
    if peer is not None and str(peer) != member.peer_url:
        problems.append(f"peer URL {peer!r}")
    if problems:
        return (
            f"host {ip}: its {ETCD_CONF} is not {member.name} of cluster {member.cluster!r} "
            f"at {member.peer_url} with data dir {member.data_dir} ({', '.join(problems)})"
        )
    if rm_data and foreign_entries(facts):
        return f"host {ip}: {member.data_dir} holds files but no etcd data"
    return None


def check_safeguard(members: Sequence[Member], what: str = "removal") -> None:
    """`etcd_safeguard: true` protects a member from anything that wipes or replaces it."""
    guarded = [m for m in members if m.safeguard]
    if guarded:
        names = ", ".join(f"{m.name} ({m.ip})" for m in guarded)
        raise GuardRefused(
            f"etcd_safeguard is true for {names}: {what} aborted; override "
            "with -e etcd_safeguard=false"
        )
