"""Secrets in inventory variables: which keys hold one, and copies with them masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etcdsop.model import SECRET_KEYS, Member

MASK = "******"


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
