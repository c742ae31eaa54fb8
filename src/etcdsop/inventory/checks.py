"""Problem collection: every bad value becomes one line naming file, host and key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from etcdsop.errors import InputError
from etcdsop.inventory.masking import is_secret
from etcdsop.inventory.values import _EXPECT, _Bad
from etcdsop.inventory.yamlfile import _kind

_T = TypeVar("_T")
_MISSING: Any = object()


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
    # Where a host's value came from when not from the inventory file (group_vars/...).
    origin: Callable[[str, str], str | None] = lambda host, key: None

    def fail(self, host: str, key: str, problem: str, expect: str | None = None) -> None:
        if key in self.extra:
            source = " (from -e)"
        else:
            where = self.origin(host, key)
            source = f" (from {where})" if where else ""
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
