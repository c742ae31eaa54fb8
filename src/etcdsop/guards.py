"""Pure checks that keep `create` from touching data that is not ours to touch."""

from __future__ import annotations

from typing import Any

import yaml

from etcdsop.etcd import MemberInfo
from etcdsop.facts import HostFacts
from etcdsop.model import Member
from etcdsop.render import ETCD_CONF


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
