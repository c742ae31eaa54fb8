"""The SSH target of a host: ansible_* connection vars and the -o options of ssh args."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from etcdsop.inventory.checks import _HostReader
from etcdsop.inventory.values import _Bad, _to_line, _to_port, _to_text
from etcdsop.model import SshTarget

_T = TypeVar("_T")

_STRICT_HOST_KEY = {"yes": "yes", "ask": "yes", "accept-new": "accept-new", "no": "no", "off": "no"}


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
