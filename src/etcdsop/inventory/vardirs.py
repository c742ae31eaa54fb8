"""Ansible's group_vars/ and host_vars/ beside the inventory file.

As Ansible's host_group_vars plugin: for a group or host NAME, the file NAME,
NAME.yml, NAME.yaml or NAME.json, or every such file below a directory NAME/
(sorted by path, hidden files skipped); later files win. Pigsty keeps its playbooks
beside pigsty.yml, so the playbook directory's group_vars/ is this same one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from etcdsop.errors import InputError
from etcdsop.inventory.groups import _Tree
from etcdsop.inventory.yamlfile import _kind, _read_yaml, _str_keys

_EXTENSIONS = (".yml", ".yaml", ".json")
_VAULT_HEADER = "$ANSIBLE_VAULT;"


def read_var_dirs(tree: _Tree, base: Path) -> None:
    """Fill the tree's directory vars (and where each came from) for its groups and hosts."""
    tree.dir_group_vars, tree.dir_group_origin = _vars_by_name(base, "group_vars", tree.groups)
    tree.dir_host_vars, tree.dir_host_origin = _vars_by_name(base, "host_vars", tree.host_vars)


def _vars_by_name(
    base: Path, kind: str, names: Iterable[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """Per name: the merged vars, and for each key the file (relative to base) it came from."""
    folder = base / kind
    values: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, str]] = {}
    if not folder.is_dir():
        return values, origins
    for name in names:
        for path in _files_for(folder, name):
            data = _read_vars(path)
            values.setdefault(name, {}).update(data)
            where = str(path.relative_to(base))
            origins.setdefault(name, {}).update(dict.fromkeys(data, where))
    return values, origins


def _files_for(folder: Path, name: str) -> list[Path]:
    files: list[Path] = []
    for candidate in (folder / name, *(folder / f"{name}{ext}" for ext in _EXTENSIONS)):
        if candidate.is_file():
            files.append(candidate)
        elif candidate.is_dir():
            files += sorted(
                p
                for p in candidate.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(candidate).parts)
                and p.suffix in ("", *_EXTENSIONS)
            )
    return files


def _read_vars(path: Path) -> dict[str, Any]:
    label = str(path)
    with path.open("rb") as fh:
        if fh.read(len(_VAULT_HEADER)).decode(errors="replace") == _VAULT_HEADER:
            raise InputError(
                f"{label}: encrypted with ansible-vault, which etcdsop does not read: pass"
                " the variables etcdsop needs with -e @<decrypted file>"
            )
    data = _read_yaml(path, label)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{label}: must be a mapping of variables, not {_kind(data)}")
    return _str_keys(data)
