"""The audit trail: one JSON line per changing command in files/log/etcdsop.jsonl.

What an SRE reads after an incident: when, who, from where, what (secrets masked),
on which cluster, how it ended and what snapshot it took.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from etcdsop.inventory.masking import MASK, is_secret, masked_vars

LOG_NAME = "log/etcdsop.jsonl"
_ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)


# The options that take a value, as cli_options.py defines them; every other short
# option is a flag, so `-ye X` is `-y -e X` and `-yeX` is `-y -eX`, as click reads them.
# tests/unit/test_audit.py checks these against the real command tree.
EXTRA_LONG = "--extra-vars"
EXTRA_SHORT = "e"
VALUE_SHORT = frozenset("efilnot")


def masked_argv(argv: Sequence[str]) -> list[str]:
    """The command line with every secret masked, the words read as the CLI reads them:
    each value of -e/--extra-vars (`=` or next word, attached to -e or to a cluster of
    flags before it; k=v pairs or a {...} mapping), and any other `key=value` word."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            out.append(word)
            out.extend(_mask_assignment(w) for w in words)
            break
        if word == EXTRA_LONG:
            out.append(word)
            out.extend(_mask_extra(w) for w in _next(words))
        elif word.startswith(EXTRA_LONG + "="):
            out.append(f"{EXTRA_LONG}={_mask_extra(word[len(EXTRA_LONG) + 1 :])}")
        elif word.startswith("-") and not word.startswith("--") and len(word) > 1:
            head, value = _short_value(word)
            if value is None:
                out.append(word)
            elif head.endswith(EXTRA_SHORT):
                out.append(head + (_mask_extra(value) if value else ""))
                if not value:
                    out.extend(_mask_extra(w) for w in _next(words))
            elif not value:
                out.append(word)
                out.extend(_mask_assignment(w) for w in _next(words))
            else:
                out.append(_mask_assignment(word))
        else:
            out.append(_mask_assignment(word))
    return out


def _next(words: Iterator[str]) -> list[str]:
    return [w for w in [next(words, None)] if w is not None]


def _short_value(word: str) -> tuple[str, str | None]:
    """`-yeX` -> ("-ye", "X"); `-e` -> ("-e", "") (the value is the next word); a
    cluster of flags alone -> (word, None)."""
    for index, letter in enumerate(word[1:], start=1):
        if letter in VALUE_SHORT:
            return word[: index + 1], word[index + 1 :]
    return word, None


def _mask_assignment(word: str) -> str:
    match = _ASSIGNMENT.match(word)
    if match and is_secret(match["key"]):
        return f"{match['key']}={MASK}"
    return word


def _mask_extra(value: str) -> str:
    """One -e value as parse_extra_vars reads it: `@file` names a file (kept), `{...}`
    a YAML/JSON mapping (shown masked), else shell-split k=v pairs. A value that cannot
    be read that way is hidden whole when it names a secret anywhere."""
    text = value.strip()
    if text.startswith("@"):
        return value
    try:
        if text.startswith("{"):
            loaded = yaml.safe_load(text)
            if not isinstance(loaded, Mapping):
                raise ValueError(text)
            if masked_vars(loaded) == loaded:
                return value
            return json.dumps(masked_vars(loaded), separators=(",", ":"), default=str)
        tokens = shlex.split(value)
    except (ValueError, yaml.YAMLError):
        return MASK if _names_a_secret(value) else value
    masked = [_mask_assignment(t) for t in tokens]
    if masked == tokens:
        return value
    return " ".join(m if m != t else shlex.quote(t) for t, m in zip(tokens, masked, strict=True))


def _names_a_secret(text: str) -> bool:
    return any(is_secret(word) for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def append(files_dir: Path, record: dict[str, Any]) -> Path:
    """Append one line (0600 file, 0700 dir); one write() so concurrent runs never mix."""
    path = files_dir / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def read(files_dir: Path, last: int) -> list[dict[str, Any]]:
    path = files_dir / LOG_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines()[-last:] if last > 0 else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"outcome": "unreadable line", "command": line[:80]})
    return records
