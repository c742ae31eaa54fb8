"""One PostgreSQL host's facts in one round trip (configs, TLS checksums, units) and the
pure helpers that compare them with what reload wants there."""

from __future__ import annotations

import base64
import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from etcdsop.clients.confedit import mask_secrets
from etcdsop.render import NodeFile


@dataclass
class PgHostFacts:
    files: dict[str, bytes] = field(default_factory=dict)
    shas: dict[str, str] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    has_group: bool = False
    mtimes: dict[str, int] = field(default_factory=dict)  # patroni.yml and its backups
    started: int | None = None  # when the running Patroni started (epoch seconds)
    kill_mode: str = ""


# Arguments: group, then "conf:<path>" (content), "sha:<path>" (checksum) or
# "mtimes:<path>" (when it and its backups were written) items. A backup keeps its
# file's mtime (cp -p) and is named after the run that replaced it: with Patroni's
# start they tell which version it started on.
FACTS = r"""
group=$1; shift
for a in "$@"; do
  kind=${a%%:*}; p=${a#*:}
  if [ "$kind" = mtimes ]; then
    for f in "$p" "$p".*.bak; do
      [ -f "$f" ] && echo "mtime $(stat -c %Y "$f") $f"
    done
    continue
  fi
  if [ ! -f "$p" ]; then echo "missing $p"; continue; fi
  if [ "$kind" = conf ]; then echo "file $p $(base64 -w0 "$p")"
  else echo "sha $p $(sha256sum "$p" | cut -d' ' -f1)"; fi
done
for u in patroni vip-manager; do
  echo "active $u $(systemctl is-active "$u" 2>/dev/null | head -1)"
done
pid=$(systemctl show -p MainPID --value patroni 2>/dev/null)
if [ -n "$pid" ] && [ "$pid" != 0 ]; then
  echo "started $(( $(date +%s) - $(ps -o etimes= -p "$pid" | tr -d ' ') ))"
fi
echo "killmode $(systemctl show -p KillMode --value patroni 2>/dev/null)"
getent group "$group" >/dev/null && echo "group ok"
exit 0
"""


def parse_host_facts(text: str) -> PgHostFacts:
    facts = PgHostFacts()
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, value = rest.partition(" ")
        if kind == "file":
            facts.files[name] = base64.b64decode(value)
        elif kind == "sha":
            facts.shas[name] = value.strip()
        elif kind == "active":
            facts.active[name] = value.strip()
        elif kind == "group":
            facts.has_group = True
        elif kind == "mtime" and name.isdigit() and value:
            facts.mtimes[value.strip()] = int(name)
        elif kind == "started" and name.isdigit():
            facts.started = int(name)
        elif kind == "killmode":
            facts.kill_mode = name.strip()
    return facts


def tls_files(
    paths: tuple[str, str, str], group: str, pems: tuple[bytes, bytes, bytes]
) -> list[NodeFile]:
    cacert, certfile, keyfile = paths
    ca, cert, key = pems
    return [
        NodeFile(cacert, ca, "root", group, 0o644),
        NodeFile(certfile, cert, "root", group, 0o644),
        NodeFile(keyfile, key, "root", group, 0o640, secret=True),
    ]


def changed_tls(files: Sequence[NodeFile], facts: PgHostFacts) -> list[NodeFile]:
    return [f for f in files if facts.shas.get(f.path) != hashlib.sha256(f.content).hexdigest()]


def conf_diff(path: str, old: bytes, new: bytes, secrets: Sequence[str]) -> str:
    before = old.decode(errors="replace").splitlines(keepends=True)
    after = new.decode(errors="replace").splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(before, after, fromfile=path, tofile=path))
    return mask_secrets(diff, secrets)
