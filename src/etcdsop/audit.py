"""The audit trail: one JSON line per changing command in files/log/etcdsop.jsonl.

What an SRE reads after an incident: when, who, from where, what (secrets masked),
on which cluster, how it ended and what snapshot it took.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etcdsop.inventory.masking import MASK, is_secret

LOG_NAME = "log/etcdsop.jsonl"
_ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)


def masked_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the value of every secret `key=value` masked."""
    out = []
    for word in argv:
        match = _ASSIGNMENT.match(word)
        if match and is_secret(match["key"]):
            word = f"{match['key']}={MASK}"
        out.append(word)
    return out


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
