"""One disaster-recovery run at a time, claimed on the hosts themselves.

`recover` and `restore` run when etcd has no quorum, so the cluster lock (a key in
etcd) cannot be taken, and the admin-node lock only stops a second run from the same
`files/`. Two admin nodes (or two copies of `files/`) recovering at once could each
force a new cluster from a different member: two clusters, the data forked. So before
its countdown a DR run claims every reachable inventory host: `/run/etcdsop/dr-claim`,
linked into place whole and only where absent. A host claimed by another admin
directory refuses the run (exit 3) before anything changed, and the claims this run
made are taken back.

A claim names its admin directory (`host:/path/to/files`; told apart by host name,
machine id, path and inode, so a copy of `files/` elsewhere is another directory). A
re-run from the same directory takes its own claims over (the admin-node lock already
keeps two runs there apart), so an interrupted run resumes. The claims go when the run
ends before changing anything, or when it is done (the caller releases them); an
interrupted run keeps them until it is run again. They live in /run: a reboot drops a
claim that its admin node can no longer finish.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.model import Member
from etcdsop.ops.common import Context

CLAIM = "/run/etcdsop/dr-claim"

# $1 = claim file, $2 = our id, $3 = the line to write. Prints "new", "ours" or
# "other <their line>". The line is written to a file of our own first, then linked
# to the claim's name: a link never replaces a file, and a claim never exists empty.
_CLAIM = r"""
mkdir -p "$(dirname "$1")"
tmp="$1.$$"
printf '%s\n' "$3" > "$tmp" || exit 1
if ln "$tmp" "$1" 2>/dev/null; then rm -f "$tmp"; echo new; exit 0; fi
rm -f "$tmp"
[ -f "$1" ] || { echo "cannot create $1" >&2; exit 1; }
cur=$(head -n 1 "$1" 2>/dev/null)
case "$cur" in
  "$2 "*) echo ours ;;
  *) printf 'other %s\n' "${cur:-(an empty claim file)}" ;;
esac
"""
# $1 = claim file, $2 = our id: remove the claim only when it is ours.
_RELEASE = r"""
[ -e "$1" ] || exit 0
cur=$(head -n 1 "$1")
case "$cur" in "$2 "*) rm -f "$1" ;; esac
"""


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip()
    except OSError:
        return ""


def claim_id(files_dir: Path) -> str:
    """This admin directory, the same on every run from it: the host (its name and
    machine id, so that two clones with one name and one path differ) and the
    directory (its path, and its inode, so that a copy of it elsewhere differs)."""
    resolved = files_dir.resolve()
    try:
        inode = resolved.stat().st_ino
    except OSError:
        inode = 0
    where = f"{socket.gethostname()}:{_machine_id()}:{resolved}:{inode}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


class DrClaim:
    """The claims of one DR run (`what`: recover or restore) on the inventory hosts.
    `resuming`: an interrupted run of this directory is being continued, so hosts may
    already have changed (and a refusal must not say nothing did)."""

    def __init__(self, ctx: Context, what: str, *, resuming: bool) -> None:
        self.ctx = ctx
        self.what = what
        self.resuming = resuming
        files = ctx.inventory.files_dir  # resolved already
        self.id = claim_id(files)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.line = f"{self.id} {self.what} from {socket.gethostname()}:{files} since {started}"

    @contextlib.contextmanager
    def until_first_change(self, members: Sequence[Member]) -> Iterator[None]:
        """Claim the hosts, then run the block (the countdown, the last looks): if it
        ends by an exception (a refusal, Ctrl-C) the claims are taken back, unless
        this run resumes one that changed hosts already."""
        try:
            self.take(members)
            yield
        except BaseException:
            if not self.resuming:
                self.release(members)  # ours only, also where an answer was lost
            raise

    def take(self, members: Sequence[Member]) -> None:
        """Claim every host given; refused (exit 3) when one is claimed from another
        admin directory, or cannot be claimed, or answers anything but new or ours."""
        argv = ["sh", "-c", _CLAIM, "sh", CLAIM, self.id, self.line]
        found = self.ctx.parallel(
            members, lambda m: self.ctx.host(m).run(argv, timeout=20).stdout.strip()
        )
        refused = {ip: a for ip, a in found.items() if a not in ("new", "ours")}
        if not refused:
            return
        changed = (
            f"this run resumes an interrupted {self.what}: hosts may be mid-change, "
            f"finish it from one admin directory"
            if self.resuming
            else "nothing was changed"
        )
        others = {
            ip: a[6:] for ip, a in refused.items() if isinstance(a, str) and a.startswith("other ")
        }
        if others:
            ip, theirs = sorted(others.items())[0]
            line = re.fullmatch(r"[0-9a-f]{16} (.+)", theirs)
            who = line.group(1) if line else theirs
            raise GuardRefused(
                f"{ip}: another disaster-recovery run holds this cluster's hosts ({who}); "
                "finish it there, or, if that admin node is gone for good, delete "
                f"{CLAIM} on every etcd host (a reboot drops it too); {changed}"
            )
        ip, error = sorted(refused.items())[0]
        why = error.message if isinstance(error, ClusterError) else f"answered {error!r}"
        raise GuardRefused(f"{ip}: could not claim the host for {self.what}: {why}; {changed}")

    def release(self, members: Sequence[Member]) -> None:
        """Take our claims back; another's claim is never touched. A host where that
        fails is named: its claim stays until it is run again or the host reboots."""
        argv = ["sh", "-c", _RELEASE, "sh", CLAIM, self.id]
        done = self.ctx.parallel(members, lambda m: self.ctx.host(m).run(argv, timeout=20))
        kept = sorted(ip for ip, d in done.items() if isinstance(d, BaseException))
        if kept:
            self.ctx.report.warn(
                f"{', '.join(kept)}: this run's claim ({CLAIM}) could not be removed: a "
                "run from another admin directory is refused there until it is"
            )
