"""What a host looks like now, gathered in one SSH round trip, parsed by a pure function.

Secret files are reported by checksum only: their content never crosses the wire back.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from etcdsop.remote import RemoteHost
from etcdsop.render import MANAGED_PATHS, SECRET_PATHS

# Arguments: $1 = data dir, then the secret paths ("--"), then the plain paths.
_SCRIPT = r"""
data=$1; shift
secret=1
for p in "$@"; do
  if [ "$p" = "--" ]; then secret=0; continue; fi
  if [ -f "$p" ]; then
    meta=$(stat -c '%a %U %G' "$p")
    if [ $secret = 1 ]; then
      echo "file $p $meta sha256 $(sha256sum "$p" | cut -d' ' -f1)"
    else
      echo "file $p $meta b64 $(base64 -w0 "$p")"
    fi
  fi
done
for d in /etc/etcd /var/lib/etcd "$data"; do
  [ -d "$d" ] && echo "dir $d $(stat -c '%a %U %G' "$d")"
done
if [ -x /usr/bin/etcd ]; then
  echo "binary /usr/bin/etcd $(/usr/bin/etcd --version 2>/dev/null | head -1 | awk '{print $NF}')"
fi
[ -d "$data/member" ] && echo "datadir yes"
[ -d "$data" ] && echo "dataentries $(ls -A "$data" | tr '\n' ' ')"
[ -d /var/lib/etcd ] && echo "varlib $(ls -A /var/lib/etcd | tr '\n' ' ')"
echo "active $(systemctl is-active etcd 2>/dev/null | head -1)"
echo "enabled $(systemctl is-enabled etcd 2>/dev/null | head -1)"
echo "since $(systemctl show -p ActiveEnterTimestampMonotonic --value etcd 2>/dev/null)"
echo "mainpid $(systemctl show -p MainPID --value etcd 2>/dev/null)"
id -u etcd >/dev/null 2>&1 && echo "user etcd"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os ${ID:-unknown} ${ID_LIKE:-}"; fi
exit 0
"""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    mode: int
    owner: str
    group: str
    content: bytes | None  # None for secret files
    sha256: str

    def same_content(self, wanted: bytes) -> bool:
        return self.sha256 == hashlib.sha256(wanted).hexdigest()


@dataclass(frozen=True)
class RemoteDir:
    path: str
    mode: int
    owner: str
    group: str


@dataclass(frozen=True)
class HostFacts:
    files: dict[str, RemoteFile] = field(default_factory=dict)
    dirs: dict[str, RemoteDir] = field(default_factory=dict)
    etcd_version: str | None = None  # None when /usr/bin/etcd is missing
    has_data: bool = False  # <data_dir>/member exists: this host was a member once
    data_entries: tuple[str, ...] = ()  # what the data dir holds (names)
    var_lib_entries: tuple[str, ...] = ()  # what /var/lib/etcd holds (names)
    active: str = "unknown"
    enabled: str = "unknown"
    active_since: int = 0  # ActiveEnterTimestampMonotonic (usec), changes on restart
    main_pid: int = 0
    etcd_user: bool = False
    os_id: str = "unknown"
    os_like: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.active in ("active", "activating", "reloading")

    @property
    def debian_like(self) -> bool:
        return self.os_id in ("debian", "ubuntu") or "debian" in self.os_like


def parse_facts(text: str) -> HostFacts:
    files: dict[str, RemoteFile] = {}
    dirs: dict[str, RemoteDir] = {}
    values: dict[str, str] = {}
    version: str | None = None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "file":
            path, mode, owner, group, encoding, payload = (rest.split(" ") + [""] * 6)[:6]
            content = base64.b64decode(payload) if encoding == "b64" else None
            digest = hashlib.sha256(content).hexdigest() if content is not None else payload
            files[path] = RemoteFile(path, int(mode, 8), owner, group, content, digest)
        elif kind == "dir":
            path, mode, owner, group = rest.split(" ")[:4]
            dirs[path] = RemoteDir(path, int(mode, 8), owner, group)
        elif kind == "binary":
            version = rest.partition(" ")[2].strip() or "unknown"
        else:
            values[kind] = rest.strip()
    os_words = values.get("os", "unknown").split()
    return HostFacts(
        files=files,
        dirs=dirs,
        etcd_version=version,
        has_data=values.get("datadir") == "yes",
        data_entries=tuple(values.get("dataentries", "").split()),
        var_lib_entries=tuple(values.get("varlib", "").split()),
        active=values.get("active") or "unknown",
        enabled=values.get("enabled") or "unknown",
        active_since=_int(values.get("since")),
        main_pid=_int(values.get("mainpid")),
        etcd_user="user" in values,
        os_id=os_words[0] if os_words else "unknown",
        os_like=tuple(os_words[1:]),
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def gather(host: RemoteHost, data_dir: str, paths: Sequence[str] = MANAGED_PATHS) -> HostFacts:
    secrets = [p for p in paths if p in SECRET_PATHS]
    plain = [p for p in paths if p not in SECRET_PATHS]
    result = host.run(["sh", "-c", _SCRIPT, "sh", data_dir, *secrets, "--", *plain], timeout=60)
    return parse_facts(result.stdout)
