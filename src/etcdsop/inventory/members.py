"""The etcd group's members, validated one by one and against each other; --limit."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from etcdsop.errors import InputError
from etcdsop.inventory.checks import _check_same, _Checker, _HostReader
from etcdsop.inventory.groups import _Tree
from etcdsop.inventory.ssh import _ssh_target
from etcdsop.inventory.values import (
    _ip_order,
    _normal_ip,
    _to_bool,
    _to_data_dir,
    _to_days,
    _to_election,
    _to_etcd_name,
    _to_heartbeat,
    _to_init,
    _to_password,
    _to_port,
    _to_quota,
    _to_seq,
)
from etcdsop.model import Inventory, Member

ETCD_GROUP = "etcd"


def select(inventory: Inventory, limit: str | Sequence[str] | None) -> tuple[Member, ...]:
    """Members named by an Ansible-like `--limit` (IPs, `all`, `etcd`), in inventory order."""
    if limit is None:
        return inventory.members
    wanted: set[str] = set()
    whole = False
    patterns = list(_limit_patterns([limit] if isinstance(limit, str) else limit))
    for pattern in patterns:
        if pattern in ("all", ETCD_GROUP):
            whole = True
            continue
        ip = _normal_ip(pattern.removeprefix("[").removesuffix("]"))
        if ip is None or inventory.member(ip) is None:
            raise InputError(
                f"limit {pattern!r} names no host of the etcd group in {inventory.path}"
            )
        wanted.add(ip)
    if not patterns:
        raise InputError(f"limit is empty: name IPs of the etcd group in {inventory.path}")
    if whole:
        return inventory.members
    return tuple(m for m in inventory.members if m.ip in wanted)


def members_for_ips(inventory: Inventory, ips: Sequence[str]) -> list[Member]:
    """Strictly parsed IPs that the inventory's etcd group defines, in the given order."""
    members: list[Member] = []
    for arg in ips:
        try:
            address = ipaddress.ip_address(arg.strip())
        except ValueError:
            raise InputError(f"{arg!r} is not an IP address") from None
        member = next((m for m in inventory.members if ipaddress.ip_address(m.ip) == address), None)
        if member is None:
            raise InputError(
                f"{arg} is not a host of the etcd group in {inventory.path}: "
                "add it there first (with its etcd_seq)"
            )
        if member not in members:
            members.append(member)
    return members


def _members(
    tree: _Tree, extra: Mapping[str, Any], check: _Checker, base: Path
) -> tuple[Member, ...]:
    if ETCD_GROUP not in tree.groups:
        raise InputError(
            f"{tree.label}: no etcd group (define etcd: {{hosts: {{IP: {{etcd_seq: N}}}}}})"
        )
    hosts = tree.members_of(ETCD_GROUP)
    if not hosts:
        raise InputError(f"{tree.label}: group etcd: empty group (no hosts)")
    readers: list[_HostReader] = []
    for host in hosts:
        if _normal_ip(host) is None:
            check.fail_host(host, "not an IP address (etcd members go into URLs and certificates)")
        else:
            readers.append(_HostReader(check, host, tree.resolve(host, extra)))
    readers.sort(key=lambda r: _ip_order(r.host))
    members = tuple(_member(reader, base) for reader in readers)
    _check_member_pairs(readers, members)
    _check_across_members(readers, members)
    return members


def _member(reader: _HostReader, base: Path) -> Member:
    get = reader.get
    return Member(
        ip=reader.host,
        seq=get("etcd_seq", _to_seq, 0),
        cluster=get("etcd_cluster", _to_etcd_name, ""),
        data_dir=get("etcd_data", _to_data_dir, ""),
        port=get("etcd_port", _to_port, 0),
        peer_port=get("etcd_peer_port", _to_port, 0),
        init=get("etcd_init", _to_init, ""),
        learner=get("etcd_learner", _to_bool, False),
        election_timeout=get("etcd_election_timeout", _to_election, 0),
        heartbeat_interval=get("etcd_heartbeat_interval", _to_heartbeat, 0),
        root_password=get("etcd_root_password", _to_password, ""),
        safeguard=get("etcd_safeguard", _to_bool, False),
        rm_data=get("etcd_rm_data", _to_bool, False),
        rm_pkg=get("etcd_rm_pkg", _to_bool, False),
        cert_validity_days=get("cert_validity", _to_days, 0),
        client_cert_auth=get("etcd_client_cert_auth", _to_bool, False),
        quota_backend_bytes=get("etcd_quota_backend_bytes", _to_quota, 0),
        ssh=_ssh_target(reader, base),
        vars=dict(reader.values),
    )


def _check_member_pairs(readers: Sequence[_HostReader], members: Sequence[Member]) -> None:
    """Rules between two keys of the same host; skipped when a key is already bad."""
    for reader, member in zip(readers, members, strict=True):
        if not {"etcd_port", "etcd_peer_port"} & reader.failed and member.port == member.peer_port:
            reader.fail(
                "etcd_peer_port",
                f"is {member.peer_port}, the same as etcd_port",
                expect="client and peer ports must differ",
            )
        timers = {"etcd_election_timeout", "etcd_heartbeat_interval"}
        if not timers & reader.failed and member.election_timeout < 5 * member.heartbeat_interval:
            reader.fail(
                "etcd_election_timeout",
                f"is {member.election_timeout}, less than 5 × etcd_heartbeat_interval "
                f"{member.heartbeat_interval}",
                expect="etcd requires election-timeout >= 5 × heartbeat-interval",
            )


def _check_across_members(readers: Sequence[_HostReader], members: Sequence[Member]) -> None:
    """Values that must be unique, or the same, across the etcd group."""
    seq_owner: dict[int, str] = {}
    first: dict[str, tuple[str, object]] = {}
    for reader, member in zip(readers, members, strict=True):
        if "etcd_seq" not in reader.failed:
            owner = seq_owner.setdefault(member.seq, member.ip)
            if owner != member.ip:
                reader.fail("etcd_seq", f"is {member.seq}, also used by host {owner}")
        for key, value in (
            ("etcd_cluster", member.cluster),
            ("etcd_root_password", member.root_password),
        ):
            if key not in reader.failed:
                other_ip, other = first.setdefault(key, (member.ip, value))
                _check_same(reader, key, value, other, other_ip, "the same on every member")


def _limit_patterns(items: Sequence[str]) -> Iterator[str]:
    """Split on commas, and on colons too unless the piece is an IPv6 address (Ansible)."""
    for item in items:
        for piece in str(item).split(","):
            piece = piece.strip()
            if not piece:
                continue
            if ":" not in piece or _normal_ip(piece.strip("[]")) is not None:
                yield piece
            else:
                yield from (part.strip() for part in piece.split(":") if part.strip())
