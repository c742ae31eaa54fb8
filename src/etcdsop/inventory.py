"""Read a Pigsty / Ansible YAML inventory into the frozen `Inventory` of model.py.

Everything etcdsop knows about hosts comes from here, validated up front: a bad
value is reported as one line naming the file, the host and the key, before any
host is touched. When there are several problems the first is the message and
the others are the error's `details`, so one run shows them all.

Variable precedence follows Ansible: extra vars (-e) > host vars > group vars >
all.vars > the role defaults in `ETCD_DEFAULTS`. Group vars are applied the way
Ansible sorts groups: by depth below `all` (a child overrides its parents), then
`ansible_group_priority`, then name; the later one wins. Host vars of a host
listed in several groups merge in file order. Jinja strings are kept verbatim,
never evaluated; `group_vars/` and `host_vars/` directories are not read.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from etcdsop.errors import InputError
from etcdsop.model import (
    ETCD_DEFAULTS,
    SECRET_KEYS,
    Inventory,
    Member,
    PgCluster,
    SshTarget,
)

MASK = "******"
ETCD_GROUP = "etcd"

# libyaml parses a Pigsty-sized inventory many times faster; fall back when absent.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_T = TypeVar("_T")
_MISSING: Any = object()

_INT_RE = re.compile(r"[+-]?[0-9]+")
_KV_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")  # no leading zeros: "0123" stays a string
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ETCD_NAME_RE = re.compile(r"[A-Za-z0-9-]+")
_PG_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
# etcd_data goes into etcd.conf, the systemd unit and `rm -rf`: keep it plain.
_DATA_DIR_RE = re.compile(r"/[A-Za-z0-9._@+/-]*")
_DAYS_RE = re.compile(r"([0-9]+)d?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

# Ansible's own boolean spellings (module_utils.parsing.convert_bool).
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})
_STRICT_HOST_KEY = {"yes": "yes", "ask": "yes", "accept-new": "accept-new", "no": "no", "off": "no"}
_MAX_ELECTION_MS = 50000  # etcd refuses a longer --election-timeout

_EXPECT = {
    "etcd_seq": "an integer >= 0, unique in the etcd group",
    "etcd_cluster": "letters, digits and '-', the same on every member",
    "etcd_data": "an absolute directory path other than /, of letters, digits and ._@+-",
    "etcd_port": "an integer 1..65535",
    "etcd_peer_port": "an integer 1..65535",
    "etcd_init": "new or existing",
    "etcd_election_timeout": f"milliseconds, an integer 1..{_MAX_ELECTION_MS}",
    "etcd_heartbeat_interval": "milliseconds, a positive integer",
    "etcd_root_password": "a non-empty one-line string, the same on every member",
    "cert_validity": "days, as 7300d or 7300",
    "pg_cluster": "letters, digits, '-' and '_'",
    "pg_namespace": "an etcd key prefix starting with /, the same on every host of the cluster",
    "pg_etcd_password": "a one-line string, the same on every host of the cluster",
    "ansible_host": "a host name or address",
    "ansible_user": "a user name",
    "ansible_ssh_private_key_file": "a path",
    "ansible_ssh_common_args": "ssh options; StrictHostKeyChecking yes, accept-new, no or off",
}
_BOOLEAN_KEYS = ("etcd_learner", "etcd_safeguard", "etcd_rm_data", "etcd_rm_pkg", "pg_vip_enabled")
_EXPECT.update(dict.fromkeys(_BOOLEAN_KEYS, "true or false"))
# Ansible's legacy spellings of the connection vars mean the same thing.
_EXPECT.update(
    ansible_port=_EXPECT["etcd_port"],
    ansible_ssh_port=_EXPECT["etcd_port"],
    ansible_ssh_host=_EXPECT["ansible_host"],
    ansible_ssh_user=_EXPECT["ansible_user"],
    ansible_private_key_file=_EXPECT["ansible_ssh_private_key_file"],
    ansible_ssh_extra_args=_EXPECT["ansible_ssh_common_args"],
)


# ---------------------------------------------------------------- public API


def load_inventory(path: Path, extra_vars: Mapping[str, Any] | None = None) -> Inventory:
    """Parse, resolve and validate `path`; raise InputError naming file, host and key."""
    label = str(path)
    tree = _parse_document(_read_yaml(path, label), label)
    extra = dict(extra_vars or {})
    check = _Checker(label, extra)
    base = path.absolute().parent
    members = _members(tree, extra, check, base)
    pg_clusters = _pg_clusters(tree, extra, check, base)
    check.raise_problems()
    return Inventory(path=path, members=members, pg_clusters=pg_clusters, extra_vars=extra)


def parse_extra_vars(items: Sequence[str], base_dir: Path) -> dict[str, Any]:
    """Merge repeatable `-e` items: `k=v [k=v...]`, `@file.yml` or a `{...}` mapping."""
    merged: dict[str, Any] = {}
    for item in items:
        merged.update(_extra_item(item, base_dir))
    return merged


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


def masked_vars(source: Member | Mapping[Any, Any]) -> dict[str, Any]:
    """A copy of the variables with secret values (nested ones too) shown as ******."""
    values = source.vars if isinstance(source, Member) else source
    masked = _mask(values, {})
    return {str(key): value for key, value in masked.items()}


def is_secret(key: object) -> bool:
    """Whether a variable holds a secret: the known names, or a name that says so."""
    name = str(key).lower()
    if name in SECRET_KEYS or name == "pass" or name.endswith("_pass"):
        return True
    return any(word in name for word in ("password", "passwd", "secret"))


# ---------------------------------------------------------------- YAML reading


def _read_yaml(path: Path, label: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory, not an inventory file") from None
    except UnicodeDecodeError:
        raise InputError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
    return _load_yaml(text, label)


def _load_yaml(text: str, label: str) -> Any:
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = _one_line(str(exc.problem or exc.context or "syntax error"))
        raise InputError(f"{label}: not valid YAML: {where}{reason}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{label}: not valid YAML: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- group tree


@dataclass
class _Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # direct members, in file order
    parents: list[str] = field(default_factory=list)


@dataclass
class _Tree:
    """The groups and host vars of one inventory, before any precedence is applied."""

    label: str
    groups: dict[str, _Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # in file order
    # Filled on first use, once parsing is over: the tree no longer changes then.
    _groups_of: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)
    _members_of: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group(name))

    def link(self, parent: str, child: str) -> None:
        if child == parent or child in self.ancestors(parent):
            raise InputError(f"{self.label}: group {child}: is its own ancestor (via {parent})")
        if parent not in self.group(child).parents:
            self.group(child).parents.append(parent)

    def ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.group(name).parents)
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo.extend(self.group(parent).parents)
        return found

    def add_host(self, group: _Group, raw: object, values: object) -> None:
        host = _host_name(raw)
        if values is not None and not isinstance(values, Mapping):
            raise InputError(
                f"{self.label}: host {host}: vars must be a mapping, not {_kind(values)}"
            )
        if host not in group.hosts:
            group.hosts.append(host)
        self.host_vars.setdefault(host, {}).update(_str_keys(values or {}))

    def groups_of(self, host: str) -> frozenset[str]:
        if host not in self._groups_of:
            direct = {g.name for g in self.groups.values() if host in g.hosts}
            found = set(direct) | {"all"}
            for name in direct:
                found |= self.ancestors(name)
            self._groups_of[host] = frozenset(found)
        return self._groups_of[host]

    def members_of(self, name: str) -> list[str]:
        """Hosts of a group and of its descendants (Ansible semantics), in file order."""
        if not self._members_of:
            for host in self.host_vars:
                for group in self.groups_of(host):
                    self._members_of.setdefault(group, []).append(host)
        return self._members_of.get(name, [])

    def depth(self, name: str) -> int:
        # Ansible: the longest path from `all`; deeper groups override shallower ones.
        parents = self.group(name).parents
        return 1 + max(self.depth(p) for p in parents) if parents else 0

    def resolve(self, host: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = dict(ETCD_DEFAULTS)
        for name in sorted(self.groups_of(host), key=self._precedence):
            merged.update(self.groups[name].vars)
        merged.update(self.host_vars[host])
        merged.update(extra)
        return merged

    def _precedence(self, name: str) -> tuple[int, int, str]:
        priority = self.groups[name].vars.get("ansible_group_priority", 1)
        try:
            rank = _to_int(priority)
        except _Bad:
            rank = 1
        return (self.depth(name), rank, name)


def _parse_document(doc: object, label: str) -> _Tree:
    if doc is None:
        raise InputError(f"{label}: the inventory is empty")
    if not isinstance(doc, Mapping):
        raise InputError(
            f"{label}: the top level must be a mapping of groups (all: or etcd:), not {_kind(doc)}"
        )
    tree = _Tree(label)
    tree.group("all")
    # Ansible: every top-level key is a group, and each one but `all` is a child of `all`.
    for key, body in doc.items():
        name = str(key)
        _parse_group(tree, name, body, None if name == "all" else "all")
    return tree


def _parse_group(tree: _Tree, name: str, body: object, parent: str | None) -> None:
    group = tree.group(name)
    if parent is not None:
        tree.link(parent, name)
    if body is None:
        return
    where = f"{tree.label}: group {name}"
    if not isinstance(body, Mapping):
        raise InputError(f"{where}: must be a mapping of hosts, vars, children, not {_kind(body)}")
    for raw_key, value in body.items():
        key = str(raw_key)
        if key == "vars":
            group.vars.update(_str_keys(_section(value, f"{where}: vars")))
        elif key == "hosts":
            for host, host_vars in _section(value, f"{where}: hosts").items():
                tree.add_host(group, host, host_vars)
        elif key == "children":
            for child, child_body in _section(value, f"{where}: children").items():
                _parse_group(tree, str(child), child_body, name)
        else:
            raise InputError(f"{where}: unexpected key {key!r} (expected hosts, vars or children)")


def _section(value: object, where: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: must be a mapping, not {_kind(value)}")
    return value


def _str_keys(values: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key): value for key, value in values.items()}


def _host_name(raw: object) -> str:
    """YAML keys may be ints or IPv6 strings; IPs are normalised so spellings compare."""
    name = str(raw)
    return _normal_ip(name) or name


def _normal_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _ip_order(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return (address.version, int(address))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# ---------------------------------------------------------------- value checks


class _Bad(Exception):
    """A converter refused a value; `problem` replaces the default 'is <value>'."""

    def __init__(self, problem: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem


def _to_int(value: object) -> int:
    if isinstance(value, bool):  # YAML `yes` is a bool, never a number
        raise _Bad()
    if isinstance(value, int):
        return value
    # Ansible templates "3" into 3 where an int is needed; accept digit strings too.
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value)
    raise _Bad()


def _in_range(low: int, high: int | None) -> Callable[[object], int]:
    def convert(value: object) -> int:
        number = _to_int(value)
        if number < low or (high is not None and number > high):
            raise _Bad()
        return number

    return convert


_to_seq = _in_range(0, None)
_to_port = _in_range(1, 65535)
_to_election = _in_range(1, _MAX_ELECTION_MS)
_to_heartbeat = _in_range(1, None)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE  # a string "false" must not be truthy
    raise _Bad()


def _to_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad()
    return str(value)


def _to_line(value: object) -> str:
    text = _to_text(value)
    if _CONTROL_RE.search(text):
        raise _Bad("has a line break or control character")
    return text


def _matching(pattern: re.Pattern[str]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        text = _to_text(value)
        if not pattern.fullmatch(text):
            raise _Bad()
        return text

    return convert


_to_etcd_name = _matching(_ETCD_NAME_RE)
_to_pg_name = _matching(_PG_NAME_RE)


def _to_init(value: object) -> str:
    if value not in ("new", "existing"):
        raise _Bad()
    return str(value)


def _to_data_dir(value: object) -> str:
    text = _to_text(value)
    parts = text.split("/")
    if not _DATA_DIR_RE.fullmatch(text) or ".." in parts or text.strip("/") == "":
        raise _Bad()
    return text.rstrip("/")


def _to_password(value: object) -> str:
    text = _to_line(value)
    if not text:
        raise _Bad("is empty (etcd does not support empty passwords)")
    return text


def _to_namespace(value: object) -> str:
    text = _to_line(value)
    if not text.startswith("/"):
        raise _Bad()
    return text


def _to_days(value: object) -> int:
    # Pigsty writes "7300d"; a bare integer means days too.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Bad()
    match = _DAYS_RE.fullmatch(str(value).strip())
    if not match or int(match.group(1)) < 1:
        raise _Bad()
    return int(match.group(1))


def _show(key: str, value: object) -> str:
    """A short rendering for messages; never a secret's value."""
    if value is None:
        return "null"
    if is_secret(key) and isinstance(value, str):
        return "a string (hidden)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list, tuple)):
        return _kind(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Checker:
    """Collects the problems of one load, each one line naming file, host and key."""

    label: str
    extra: Mapping[str, Any]
    problems: list[str] = field(default_factory=list)

    def fail(self, host: str, key: str, problem: str, expect: str | None = None) -> None:
        source = " (from -e)" if key in self.extra else ""
        tail = f" ({expect})" if expect else ""
        self.fail_host(host, f"{key}{source} {problem}{tail}")

    def fail_host(self, host: str, problem: str) -> None:
        line = f"{self.label}: host {host}: {problem}"
        if line not in self.problems:  # a host both in etcd and a pg cluster is read twice
            self.problems.append(line)

    def raise_problems(self) -> None:
        if self.problems:
            first, *rest = self.problems
            raise InputError(first, details="\n".join(rest) or None)


@dataclass
class _HostReader:
    """The resolved vars of one host, read through converters that report failures."""

    check: _Checker
    host: str
    values: Mapping[str, Any]
    failed: set[str] = field(default_factory=set)

    def get(self, key: str, convert: Callable[[object], _T], fallback: _T) -> _T:
        value = self.values.get(key, _MISSING)
        if value is _MISSING or value is None:
            self.fail(key, "is missing" if value is _MISSING else "is null")
            return fallback
        result = self._convert(key, value, convert)
        return fallback if result is None else result

    def optional(self, key: str, convert: Callable[[object], _T]) -> _T | None:
        value = self.values.get(key)
        return None if value is None else self._convert(key, value, convert)

    def _convert(self, key: str, value: object, convert: Callable[[object], _T]) -> _T | None:
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            # Taken literally, a template would become a password or an address as written.
            self.fail(key, "is a Jinja template", value=value)
            return None
        try:
            return convert(value)
        except _Bad as bad:
            self.fail(key, bad.problem or f"is {_show(key, value)}", value=value)
            return None

    def fail(self, key: str, problem: str, value: object = None, expect: str | None = None) -> None:
        expect = expect or _EXPECT.get(key)
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            expect = "; ".join(filter(None, [expect, "Jinja templates are not evaluated"]))
        self.failed.add(key)
        self.check.fail(self.host, key, problem, expect)


# ---------------------------------------------------------------- etcd members


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


def _check_same(
    reader: _HostReader, key: str, mine: object, theirs: object, other_host: str, rule: str
) -> None:
    if mine == theirs:
        return
    if is_secret(key):
        reader.fail(key, f"differs from the one of host {other_host}", expect=rule)
    else:
        shown = f"is {_show(key, mine)} but {_show(key, theirs)} on host {other_host}"
        reader.fail(key, shown, expect=rule)


# ---------------------------------------------------------------- ssh target


def _ssh_target(reader: _HostReader, base: Path) -> SshTarget:
    address = _connection(reader, ("ansible_host", "ansible_ssh_host"), _to_nonempty)
    port = _connection(reader, ("ansible_port", "ansible_ssh_port"), _to_port)
    user = _connection(reader, ("ansible_user", "ansible_ssh_user"), _to_nonempty)
    key_file = _connection(
        reader, ("ansible_private_key_file", "ansible_ssh_private_key_file"), _to_nonempty
    )
    options: dict[str, str] = {}
    # ssh keeps the first value of an option; Ansible puts common args before extra args.
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        for name, value in (reader.optional(key, _ssh_options) or {}).items():
            options.setdefault(name, value)
    known_hosts = options.get("userknownhostsfile")  # ssh allows several: the first is written
    return SshTarget(
        address=address or reader.host,
        port=port,
        user=user,
        key_file=_local_path(key_file, base),
        known_hosts_file=_local_path(known_hosts.split()[0], base) if known_hosts else None,
        strict_host_key_checking=options.get("stricthostkeychecking"),
    )


def _connection(
    reader: _HostReader, names: Sequence[str], convert: Callable[[object], _T]
) -> _T | None:
    # Ansible reads each spelling in turn and the last one set wins.
    present = [name for name in names if reader.values.get(name) is not None]
    return reader.optional(present[-1], convert) if present else None


def _to_nonempty(value: object) -> str:
    text = _to_line(value).strip()
    if not text:
        raise _Bad("is empty")
    return text


def _ssh_options(value: object) -> dict[str, str]:
    """`-o Key=Val`, `-oKey=Val` and `-o "Key Val"` options, names lowercased."""
    try:
        tokens = shlex.split(_to_text(value))
    except ValueError as exc:
        raise _Bad(f"cannot be split like a shell command line: {exc}") from None
    found: dict[str, str] = {}
    for option in _dash_o_values(tokens):
        parts = re.split(r"\s*=\s*|\s+", option.strip(), maxsplit=1)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _Bad(f"has an -o option without a value: {option!r}")
        name, setting = parts[0].lower(), parts[1]
        if name == "stricthostkeychecking":
            setting = _STRICT_HOST_KEY.get(setting.lower(), "")
            if not setting:
                raise _Bad(f"sets StrictHostKeyChecking={parts[1]}")
        found.setdefault(name, setting)
    return found


def _dash_o_values(tokens: Sequence[str]) -> Iterator[str]:
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "-o":
            if index == len(tokens):
                raise _Bad("ends with -o and no option")
            yield tokens[index]
            index += 1
        elif token.startswith("-o"):
            yield token[2:]


def _local_path(value: str | None, base: Path) -> str | None:
    """Expand ~ and resolve a relative path against the inventory's directory."""
    if value is None:
        return None
    path = Path(os.path.expanduser(value))
    return os.path.normpath(path if path.is_absolute() else base / path)


# ---------------------------------------------------------------- pg clusters


def _pg_clusters(
    tree: _Tree, extra: Mapping[str, Any], check: _Checker, base: Path
) -> tuple[PgCluster, ...]:
    """Hosts grouped by their resolved pg_cluster, sorted by name.

    Grouping by host, not by group vars: Pigsty's citus layout sets pg_cluster per host.
    """
    by_name: dict[str, list[_HostReader]] = {}
    for host in tree.host_vars:
        values = tree.resolve(host, extra)
        if values.get("pg_cluster") is None:
            continue
        reader = _HostReader(check, host, values)
        name = reader.get("pg_cluster", _to_pg_name, "")
        if _normal_ip(host) is None:
            check.fail_host(host, f"not an IP address (a host of pg cluster {name or '?'})")
        elif "pg_cluster" not in reader.failed:
            by_name.setdefault(name, []).append(reader)
    return tuple(_pg_cluster(tree, name, by_name[name], base) for name in sorted(by_name))


def _pg_cluster(tree: _Tree, name: str, readers: list[_HostReader], base: Path) -> PgCluster:
    readers.sort(key=lambda r: _ip_order(r.host))
    settings = [
        (
            r.optional("pg_namespace", _to_namespace) or "/pg",
            r.optional("pg_etcd_password", _to_line) or "",
            r.optional("pg_vip_enabled", _to_bool) or False,
        )
        for r in readers
    ]
    keys = ("pg_namespace", "pg_etcd_password", "pg_vip_enabled")
    for reader, setting in zip(readers[1:], settings[1:], strict=True):
        for key, mine, theirs in zip(keys, setting, settings[0], strict=True):
            if key not in reader.failed:
                rule = f"the same on every host of pg cluster {name}"
                _check_same(reader, key, mine, theirs, readers[0].host, rule)
    hosts = tuple(r.host for r in readers)
    return PgCluster(
        name=name,
        group=_cluster_group(tree, name, hosts),
        hosts=hosts,
        namespace=settings[0][0],
        etcd_password=settings[0][1],
        vip_enabled=settings[0][2],
        host_vars={r.host: dict(r.values) for r in readers},
        ssh={r.host: _ssh_target(r, base) for r in readers},
    )


def _cluster_group(tree: _Tree, name: str, hosts: Sequence[str]) -> str:
    """The group named after the cluster, else the smallest group holding all its hosts."""
    wanted = set(hosts)
    sizes = {
        group: len(members)
        for group in tree.groups_of(hosts[0])
        if group != "all" and wanted <= set(members := tree.members_of(group))
    }
    if name in sizes:
        return name
    return min(sizes, key=lambda group: (sizes[group], group)) if sizes else "all"


# ---------------------------------------------------------------- extra vars


def _extra_item(item: str, base_dir: Path) -> dict[str, Any]:
    text = item.strip()
    if text.startswith("@"):
        name = text[1:]
        path = Path(os.path.expanduser(name))
        label = f"-e @{name}"
        loaded = _read_yaml(path if path.is_absolute() else base_dir / path, label)
        return _extra_mapping(loaded, label, allow_empty=True)
    if text.startswith("{"):
        return _extra_mapping(_load_yaml(text, f"-e {item!r}"), f"-e {item!r}")
    return _extra_pairs(item)


def _extra_mapping(loaded: object, label: str, allow_empty: bool = False) -> dict[str, Any]:
    if loaded is None and allow_empty:
        return {}
    if not isinstance(loaded, Mapping):
        raise InputError(f"{label}: must be a mapping of variables, not {_kind(loaded)}")
    return _str_keys(loaded)


def _extra_pairs(item: str) -> dict[str, Any]:
    """Ansible's `k=v k2='v 2'` form; values become ints and bools only when plain."""
    expect = "expected key=value, @file.yml or a {...} mapping"
    try:
        tokens = shlex.split(item)
    except ValueError as exc:
        raise InputError(
            f"-e {item!r}: cannot be split like a shell line: {exc} ({expect})"
        ) from None
    if not tokens:
        raise InputError(f"-e {item!r}: empty ({expect})")
    pairs: dict[str, Any] = {}
    for token in tokens:
        key, equals, value = token.partition("=")
        if not equals or not _KEY_RE.fullmatch(key):
            shown = key if equals else token
            raise InputError(f"-e {shown!r}: not a key=value pair ({expect})")
        pairs[key] = _extra_value(key, value)
    return pairs


def _extra_value(key: str, text: str) -> Any:
    # Not full YAML: "0123" would turn octal, "1:30" sexagesimal, dates into objects.
    if is_secret(key):
        return text
    if _KV_INT_RE.fullmatch(text):
        return int(text)
    word = text.lower()
    if word in ("true", "yes", "on", "false", "no", "off"):
        return word in ("true", "yes", "on")
    return text


# ---------------------------------------------------------------- limit and masking


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


def _mask(value: Any, seen: dict[int, Any]) -> Any:
    """Copy `value` with secrets masked; `seen` keeps YAML aliases cheap and cycles finite."""
    if isinstance(value, Mapping):
        if id(value) in seen:
            return seen[id(value)]
        copy: dict[Any, Any] = {}
        seen[id(value)] = copy
        for key, item in value.items():
            secret = is_secret(key) and item not in (None, "")
            copy[key] = MASK if secret else _mask(item, seen)
        return copy
    if isinstance(value, list):
        if id(value) in seen:
            return seen[id(value)]
        items: list[Any] = []
        seen[id(value)] = items
        items.extend(_mask(item, seen) for item in value)
        return items
    return value
