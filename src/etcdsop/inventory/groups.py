"""The group tree of an inventory and Ansible's variable precedence over it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etcdsop.errors import InputError
from etcdsop.inventory.values import _Bad, _normal_ip, _to_int
from etcdsop.inventory.yamlfile import _kind, _str_keys
from etcdsop.model import ETCD_DEFAULTS


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
    # From group_vars/ and host_vars/ beside the inventory (vardirs.py), by name.
    dir_group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    dir_host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    dir_group_origin: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> file
    dir_host_origin: dict[str, dict[str, str]] = field(default_factory=dict)
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
        # Ansible's default VARIABLE_PRECEDENCE: all.vars, the other groups' vars in the
        # file, group_vars/all, the other groups' group_vars files; then the host's vars
        # in the file, its host_vars file; -e last. `all` sorts first (depth 0).
        merged: dict[str, Any] = dict(ETCD_DEFAULTS)
        ordered = sorted(self.groups_of(host), key=self._precedence)
        for name in ordered:
            merged.update(self.groups[name].vars)
        for name in ordered:
            merged.update(self.dir_group_vars.get(name, {}))
        merged.update(self.host_vars[host])
        merged.update(self.dir_host_vars.get(host, {}))
        merged.update(extra)
        return merged

    def origin(self, host: str, key: str) -> str | None:
        """The group_vars/host_vars file the host's value of key comes from, if one does."""
        if key in self.dir_host_vars.get(host, {}):
            return self.dir_host_origin[host][key]
        if key in self.host_vars.get(host, {}):
            return None
        for name in sorted(self.groups_of(host), key=self._precedence, reverse=True):
            if key in self.dir_group_vars.get(name, {}):
                return self.dir_group_origin[name][key]
        return None

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


def _host_name(raw: object) -> str:
    """YAML keys may be ints or IPv6 strings; IPs are normalised so spellings compare."""
    name = str(raw)
    return _normal_ip(name) or name
