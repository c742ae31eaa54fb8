"""Host-side steps of `restore` and `recover`: ship a snapshot, restore it into a new
data dir, move old data aside (never deleted), and the one-off --force-new-cluster start.

Old data is renamed beside the data dir (`<data>.pre-restore-<UTC>`,
`<data>.pre-recover-<UTC>`, a `.N` added when that name is taken): a data dir that
is a mount point cannot be renamed and is refused, naming what to move by hand.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from etcdsop.errors import ClusterError
from etcdsop.model import Member
from etcdsop.ops.hostops import safe_data_dir
from etcdsop.remote import RemoteHost
from etcdsop.render import PeerRef

MARKER = "/var/lib/etcd/.etcdsop-restore"  # "<stamp> <sha256>": this host is restored
UPLOAD = "/var/lib/etcd/etcdsop-restore.db"
# Revisions jump by this much on 3.5+ (etcd's disaster-recovery guide: more than the
# writes the cluster may have taken since the snapshot).
BUMP_REVISION = 1_000_000_000

# $1 = data dir, $2 = suffix: rename a non-empty data dir aside (a free name), drop
# an empty one; a mount point cannot be renamed (exit 3).
_ASIDE = r"""
aside() {
  d=$1; [ -e "$d" ] || return 0
  if mountpoint -q "$d" 2>/dev/null; then
    echo "$d is a mount point: move its content aside by hand, then re-run" >&2; exit 3
  fi
  if [ -z "$(ls -A "$d")" ]; then rmdir "$d"; return 0; fi
  to="$d.$2"; n=1
  while [ -e "$to" ]; do to="$d.$2.$n"; n=$((n+1)); done
  mv -T "$d" "$to"; echo "aside $to"
}
"""

# $1 = data dir, $2 = stamp, $3 = marker text, then the restore command (its
# --data-dir is "$1.restoring-$2"): restored beside the data dir, then swapped in.
_RESTORE = (
    "set -e\n"
    + _ASIDE
    + r"""
data=$1; stamp=$2; mark=$3; shift 3
new="$data.restoring-$stamp"
rm -rf --one-file-system "$new"
"$@" >/dev/null
aside "$data" "pre-restore-$stamp"
mv -T "$new" "$data"
chown -R etcd:etcd "$data"; chmod 0700 "$data"
printf '%s\n' "$mark" > /var/lib/etcd/.etcdsop-restore
rm -f /var/lib/etcd/etcdsop-restore.db
# Enabled only now: a reboot before the swap must not start the old data.
SYSTEMCTL_SKIP_SYSV=1 systemctl enable --quiet etcd
"""
)

# Which restore tool the host has: etcdutl (3.5+) with --bump-revision, etcdutl
# without it (3.5 before 3.5.8?), or etcdctl (3.4, where restore still lives).
_TOOL = r"""
if command -v etcdutl >/dev/null 2>&1; then
  if etcdutl snapshot restore --help 2>&1 | grep -q -- --bump-revision; then echo etcdutl-bump
  else echo etcdutl; fi
elif command -v etcdctl >/dev/null 2>&1; then echo etcdctl
else echo none; fi
"""

FORCE_CONF = "/run/etcdsop/etcd-force-new-cluster.conf"
FORCE_DROPIN = "/run/systemd/system/etcd.service.d/etcdsop-force-new-cluster.conf"
# In /run: gone at the next boot, so the flag can never outlive this run there.
_FORCE_START = f"""
set -e
mkdir -p /run/etcdsop /run/systemd/system/etcd.service.d
{{ cat /etc/etcd/etcd.conf; echo; echo 'force-new-cluster: true'; }} > {FORCE_CONF}.part
chmod 0644 {FORCE_CONF}.part; mv -f {FORCE_CONF}.part {FORCE_CONF}
printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/etcd --config-file {FORCE_CONF}\\n' \\
  > {FORCE_DROPIN}
systemctl daemon-reload
systemctl reset-failed etcd >/dev/null 2>&1 || true
systemctl start --no-block etcd
"""
_FORCE_CLEAR = f"""
set -e
rm -f {FORCE_DROPIN} {FORCE_CONF}
rmdir /run/systemd/system/etcd.service.d 2>/dev/null || true
systemctl daemon-reload
if systemctl cat etcd | grep -q force-new-cluster; then
  echo "etcd.service still names force-new-cluster" >&2; exit 1
fi
if grep -q '^force-new-cluster' /etc/etcd/etcd.conf; then
  echo "/etc/etcd/etcd.conf holds force-new-cluster" >&2; exit 1
fi
SYSTEMCTL_SKIP_SYSV=1 systemctl enable --quiet etcd
systemctl restart --no-block etcd
"""


def restore_tool(host: RemoteHost) -> str:
    return host.run(["sh", "-c", _TOOL], timeout=30).stdout.strip() or "none"


def bump_revisions(tools: Mapping[str, str]) -> bool:
    """Bump only when every host can: members restored differently would disagree on
    every revision (their stores would diverge)."""
    return bool(tools) and all(t == "etcdutl-bump" for t in tools.values())


def restore_argv(
    tool: str,
    snapshot: str,
    member: Member,
    initial_cluster: Sequence[PeerRef],
    data_dir: str,
    *,
    bump: bool,
) -> list[str]:
    """The restore command for one member (pure)."""
    if tool == "none":
        raise ClusterError(f"{member.ip}: neither etcdutl nor etcdctl is installed")
    head = ["etcdutl"] if tool.startswith("etcdutl") else ["env", "ETCDCTL_API=3", "etcdctl"]
    argv = [
        *head,
        "snapshot",
        "restore",
        snapshot,
        "--name",
        member.name,
        "--initial-cluster",
        ",".join(f"{p.name}={p.peer_url}" for p in initial_cluster),
        "--initial-cluster-token",
        member.cluster,
        "--initial-advertise-peer-urls",
        member.peer_url,
        "--data-dir",
        data_dir,
    ]
    if bump:
        argv += ["--bump-revision", str(BUMP_REVISION), "--mark-compacted"]
    return argv


# Uploads are bounded by a floor rate (a slow WAN link to a DR site still passes) plus
# a base for the ssh round trips and the sha256 on the host; each 1 MiB chunk waits at
# most CHUNK_TIMEOUT for the channel.
UPLOAD_BASE_S = 120.0
UPLOAD_FLOOR_RATE = 1 << 20  # bytes per second
CHUNK_TIMEOUT = 60.0


def upload_deadline(size: int) -> float:
    """Seconds an upload of size bytes may take (pure)."""
    return UPLOAD_BASE_S + size / UPLOAD_FLOOR_RATE


# $1 = size, $2 = data dir: refused (exit 4) unless the upload's file system holds the
# snapshot and the data dir's parent a restored copy of it (twice when they are one),
# then stdin to a temp name (0600), its sha256 printed.
_RECEIVE = r"""
set -e
size=$1; data=$2; tmp="$UPLOAD.part"
install -d -o etcd -g etcd -m 0770 /var/lib/etcd
parent=$(dirname "$data"); mkdir -p "$parent"
free() { df -P -k "$1" | awk 'NR==2 {print $4 * 1024}'; }
need=$size
if [ "$(stat -c %d /var/lib/etcd)" = "$(stat -c %d "$parent")" ]; then need=$((size * 2)); fi
if [ "$(free /var/lib/etcd)" -lt "$need" ] || [ "$(free "$parent")" -lt "$size" ]; then
  echo "not enough free space: $need bytes needed on /var/lib/etcd and $parent" >&2; exit 4
fi
rm -f "$tmp"; (umask 077; cat > "$tmp")
sha256sum "$tmp"
""".replace("$UPLOAD", UPLOAD)


def upload_snapshot(host: RemoteHost, member: Member, snapshot: Path, sha256: str) -> None:
    """The snapshot streamed to UPLOAD (root 0600) under a temp name, its sha256 and the
    free space checked on the host first: nothing is stopped until every host has it."""
    size = snapshot.stat().st_size
    limit = upload_deadline(size)
    try:
        got = host.stream_file(
            snapshot,
            ["sh", "-c", _RECEIVE, "sh", str(size), safe_data_dir(member)],
            chunk_timeout=CHUNK_TIMEOUT,
            deadline=time.monotonic() + limit,
        )
    except ClusterError as exc:
        raise ClusterError(
            f"{host.label}: uploading the snapshot ({size} bytes, {limit:.0f}s allowed) "
            f"failed: {exc.message}",
            details=exc.details,
        ) from None
    if got.stdout.split()[:1] != [sha256]:
        raise ClusterError(f"{host.label}: the uploaded snapshot fails its sha256 check")
    host.run(["mv", "-f", UPLOAD + ".part", UPLOAD], timeout=30)


def restore_member(
    host: RemoteHost, member: Member, argv: Sequence[str], stamp: str, mark: str
) -> str | None:
    """Restore into <data>.restoring-<stamp>, move the old data dir aside, swap, mark the
    host restored; where the old data went (None: there was none)."""
    data = safe_data_dir(member)
    result = host.run(["sh", "-c", _RESTORE, "sh", data, stamp, mark, *argv], timeout=600)
    return _aside_line(result.stdout)


def restoring_dir(member: Member, stamp: str) -> str:
    return f"{safe_data_dir(member)}.restoring-{stamp}"


def read_marker(host: RemoteHost) -> str:
    return host.run(["cat", MARKER], check=False, timeout=20).stdout.strip()


def clear_marker(host: RemoteHost) -> None:
    host.run(["rm", "-f", MARKER, UPLOAD, UPLOAD + ".part"], timeout=20)


def move_aside(host: RemoteHost, member: Member, suffix: str) -> str | None:
    """Rename the member's data dir aside (never delete it); where it went, or None."""
    script = "set -e\n" + _ASIDE + 'aside "$1" "$2"\n'
    result = host.run(["sh", "-c", script, "sh", safe_data_dir(member), suffix], timeout=60)
    return _aside_line(result.stdout)


def _aside_line(stdout: str) -> str | None:
    return next((x[6:] for x in stdout.splitlines() if x.startswith("aside ")), None)


def read_bolt(host: RemoteHost, member: Member) -> bytes:
    """The member's bolt file, read while its etcd is stopped (base64 over the wire)."""
    path = f"{safe_data_dir(member)}/member/snap/db"
    text = host.run(["base64", "-w0", path], timeout=600).stdout
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ClusterError(f"{host.label}: {path} could not be read whole") from exc


def start_forced(host: RemoteHost) -> None:
    host.run(["sh", "-c", _FORCE_START], timeout=90)


def forced(host: RemoteHost) -> bool:
    return host.run(["test", "-e", FORCE_DROPIN], check=False, timeout=20).rc == 0


def clear_forced(host: RemoteHost) -> None:
    """Back to the unit and etcd.conf as they are: the flag stays nowhere."""
    host.run(["sh", "-c", _FORCE_CLEAR], timeout=90)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
