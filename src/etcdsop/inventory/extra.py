"""Extra vars from repeatable -e options: k=v pairs, @file.yml or a {...} mapping."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from etcdsop.errors import InputError
from etcdsop.inventory.masking import is_secret
from etcdsop.inventory.yamlfile import _kind, _load_yaml, _read_yaml, _str_keys

_KV_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")  # no leading zeros: "0123" stays a string
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_extra_vars(items: Sequence[str], base_dir: Path) -> dict[str, Any]:
    """Merge repeatable `-e` items: `k=v [k=v...]`, `@file.yml` or a `{...}` mapping."""
    merged: dict[str, Any] = {}
    for item in items:
        merged.update(_extra_item(item, base_dir))
    return merged


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
