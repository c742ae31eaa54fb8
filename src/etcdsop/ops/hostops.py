"""Host-side steps shared by add (rollback), rm and destroy: stop (or kill) etcd, wipe it."""

from __future__ import annotations

from pathlib import PurePosixPath

from etcdsop.datadir import data_dir_problem
from etcdsop.errors import InputError
from etcdsop.model import Member
from etcdsop.remote import RemoteHost
from etcdsop.render import PROFILE, UNIT

# Bounded and escalating: a polite stop, then SIGTERM to the unit, then SIGKILL.
_STOP = r"""
systemctl disable --quiet etcd >/dev/null 2>&1
if ! timeout 40 systemctl stop etcd >/dev/null 2>&1; then
  systemctl kill --signal=SIGTERM etcd >/dev/null 2>&1; sleep 3
  systemctl kill --signal=SIGKILL etcd >/dev/null 2>&1; sleep 1
fi
systemctl reset-failed etcd >/dev/null 2>&1
if [ "$(systemctl is-active etcd 2>/dev/null)" = active ]; then
  echo "etcd still active" >&2; exit 1
fi
exit 0
"""


# Destroy only, where the data and unit are deleted right after: no graceful shutdown to
# wait for (bbolt and the WAL are crash-safe anyway). Stopping the killed unit cancels the
# restart that Restart=on-failure would schedule. Disabling skips Debian's SysV sync, as
# enabling does (systemd ignores an init script that has a native unit), and the reload
# that remove_files does once the unit file is gone.
_KILL = r"""
SYSTEMCTL_SKIP_SYSV=1 systemctl disable --no-reload --quiet etcd >/dev/null 2>&1
systemctl kill --signal=SIGKILL etcd >/dev/null 2>&1
timeout 40 systemctl stop etcd >/dev/null 2>&1
systemctl reset-failed etcd >/dev/null 2>&1
if [ "$(systemctl is-active etcd 2>/dev/null)" = active ]; then
  echo "etcd still active" >&2; exit 1
fi
exit 0
"""


def safe_data_dir(member: Member) -> str:
    """Refuse to wipe anything that is not a dedicated data dir (as the inventory does)."""
    problem = data_dir_problem(member.data_dir)
    if problem:
        raise InputError(f"host {member.ip}: etcd_data {problem}: refusing to delete it")
    return str(PurePosixPath(member.data_dir))


def stop_etcd(host: RemoteHost) -> None:
    host.run(["sh", "-c", _STOP], timeout=75)


def kill_etcd(host: RemoteHost) -> None:
    """SIGKILL etcd and disable it: only where remove_files follows at once (destroy)."""
    host.run(["sh", "-c", _KILL], timeout=75)


# The data dir may be a mount point (a disk of its own for etcd): rm then empties it
# but cannot remove it, and an empty mount point is as good as no directory.
_WIPE = r"""
out=$(rm -rf --one-file-system "$1" 2>&1) && exit 0
[ -z "$(ls -A "$1" 2>/dev/null)" ] && exit 0
echo "$out" >&2
exit 1
"""


def wipe_data(host: RemoteHost, member: Member) -> None:
    """Only the data dir: a removed member's data can never rejoin (etcd-rules.md)."""
    host.run(["sh", "-c", _WIPE, "sh", safe_data_dir(member)])


# Our files by name (and reload's backups of them), the data dir the host's etcd.conf
# names, then the directories only when nothing else is left in them.
_REMOVE = r"""
data=$1
rm -f /etc/etcd/ca.crt /etc/etcd/server.crt /etc/etcd/server.key /etc/etcd/etcd.pass \
  /etc/etcd/etcd.conf "$UNIT" "$PROFILE"
find /etc/etcd /etc/profile.d -maxdepth 1 -type f \
  \( -name 'etcd.conf.*.bak' -o -name 'etcd.pass.*.bak' -o -name 'etcdctl.sh.*.bak' \) \
  -delete 2>/dev/null
rm -rf --one-file-system "$data" 2>/dev/null  # a mount point stays, emptied
[ -n "$(ls -A "$data" 2>/dev/null)" ] && echo "kept $data"
if [ -e /var/lib/etcd/.etcdsop-installed ]; then
  rm -rf --one-file-system /var/lib/etcd/default /var/lib/etcd/.etcdsop-installed
fi
rmdir /etc/etcd /var/lib/etcd 2>/dev/null
for d in /etc/etcd /var/lib/etcd; do [ -d "$d" ] && echo "kept $d"; done
systemctl daemon-reload
exit 0
"""


def remove_files(host: RemoteHost, member: Member) -> list[str]:
    """What Pigsty's etcd-rm.yml deletes with etcd_rm_data, but only what is ours:
    a directory that still holds something else is kept (and named)."""
    script = _REMOVE.replace("$UNIT", UNIT).replace("$PROFILE", PROFILE)
    result = host.run(["sh", "-c", script, "sh", safe_data_dir(member)])
    return [
        line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("kept ")
    ]


def remove_package(host: RemoteHost) -> None:
    script = (
        "if command -v apt-get >/dev/null; then "
        "DEBIAN_FRONTEND=noninteractive exec apt-get -o DPkg::Lock::Timeout=120 "
        "remove -y -q etcd-server; "
        "elif command -v dnf >/dev/null; then exec dnf remove -y etcd; "
        "else exec yum remove -y etcd; fi"
    )
    host.run(["sh", "-c", script], timeout=600)
