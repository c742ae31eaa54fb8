"""Read a Pigsty / Ansible YAML inventory into the frozen `Inventory` of model.py.

Everything etcdsop knows about hosts comes from here, validated up front: a bad
value is reported as one line naming the file, the host and the key, before any
host is touched. When there are several problems the first is the message and
the others are the error's `details`, so one run shows them all.

Variable precedence follows Ansible: extra vars (-e) > host vars > group vars >
all.vars > the role defaults in `ETCD_DEFAULTS`. Group vars are applied the way
Ansible sorts groups: by depth below `all` (a child overrides its parents), then
`ansible_group_priority`, then name; the later one wins. Host vars of a host
listed in several groups merge in file order. `group_vars/` and `host_vars/`
beside the file are read as Ansible reads them (vardirs.py). Jinja strings are kept
verbatim, never evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etcdsop.inventory.checks import _Checker
from etcdsop.inventory.extra import parse_extra_vars
from etcdsop.inventory.groups import _parse_document
from etcdsop.inventory.infra import _infra_hosts
from etcdsop.inventory.masking import MASK, is_secret, masked_vars
from etcdsop.inventory.members import ETCD_GROUP, _members, members_for_ips, select
from etcdsop.inventory.pg import _pg_clusters
from etcdsop.inventory.vardirs import read_var_dirs
from etcdsop.inventory.yamlfile import _LOADER as _LOADER
from etcdsop.inventory.yamlfile import _read_yaml
from etcdsop.model import Inventory

__all__ = [
    "ETCD_GROUP",
    "MASK",
    "is_secret",
    "load_inventory",
    "masked_vars",
    "members_for_ips",
    "parse_extra_vars",
    "select",
]


def load_inventory(path: Path, extra_vars: Mapping[str, Any] | None = None) -> Inventory:
    """Parse, resolve and validate `path`; raise InputError naming file, host and key."""
    label = str(path)
    tree = _parse_document(_read_yaml(path, label), label)
    extra = dict(extra_vars or {})
    base = path.absolute().parent
    read_var_dirs(tree, base)
    check = _Checker(label, extra, origin=tree.origin)
    members = _members(tree, extra, check, base)
    pg_clusters = _pg_clusters(tree, extra, check, base)
    infra_hosts = _infra_hosts(tree, extra, check, base)
    check.raise_problems()
    return Inventory(
        path=path,
        members=members,
        pg_clusters=pg_clusters,
        infra_hosts=infra_hosts,
        extra_vars=extra,
    )
