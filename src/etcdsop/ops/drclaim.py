"""One disaster-recovery run at a time, claimed on the hosts themselves.

`recover` and `restore` run when etcd has no quorum, so the cluster lock (a key in
etcd) cannot be taken, and the admin-node lock only stops a second run from the same
`files/`. Two admin nodes (or two copies of `files/`) recovering at once could each
force a new cluster from a different member: two clusters, the data forked. So before
its countdown a DR run claims every reachable inventory host: `/run/etcdsop/dr-claim`,
created only when absent (noclobber). A host already claimed by another admin
directory refuses the run (exit 3) before anything changed, and the claims this run
made are taken back.

A claim names its admin directory (`host:/path/to/files`). A re-run from the same
directory takes its own claims over (the admin-node lock already keeps two runs there
apart), so an interrupted run resumes. The claims go when the run ends before changing
anything, or when it completes; an interrupted run keeps them until it is run again.
They live in /run: a reboot drops a claim that its admin node can no longer finish.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from etcdsop.errors import ClusterError, GuardRefused
from etcdsop.model import Member
from etcdsop.ops.common import Context

CLAIM = "/run/etcdsop/dr-claim"

# $1 = claim file, $2 = our id, $3 = the line to write. Prints "new", "ours" or
# "other <their line>"; the file is created only where absent (set -C).
_CLAIM = r"""
mkdir -p "$(dirname "$1")"
if (set -C; printf '%s\n' "$3" > "$1") 2>/dev/null; then echo new; exit 0; fi
[ -f "$1" ] || { echo "cannot create $1" >&2; exit 1; }
cur=$(head -n 1 "$1" 2>/dev/null)
case "$cur" in
  "$2 "*) echo ours ;;
  *) printf 'other %s\n' "$cur" ;;
esac
"""
# $1 = claim file, $2 = our id: remove the claim only when it is ours.
_RELEASE = r"""
cur=$(head -n 1 "$1" 2>/dev/null) || exit 0
case "$cur" in "$2 "*) rm -f "$1" ;; esac
"""


def claim_id(files_dir: Path) -> str:
    """This admin directory, the same on every run from it."""
    where = f"{socket.gethostname()}:{files_dir.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


class DrClaim:
    """The claims of one DR run (`what`: recover or restore) on the inventory hosts."""

    def __init__(self, ctx: Context, what: str) -> None:
        self.ctx = ctx
        self.what = what
        files = ctx.inventory.files_dir.resolve()
        self.id = claim_id(files)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.line = f"{self.id} {self.what} from {socket.gethostname()}:{files} since {started}"

    def take(self, members: Sequence[Member]) -> None:
        """Claim every host given; refused (exit 3, our new claims taken back) when one
        is claimed from another admin directory or cannot be claimed."""
        argv = ["sh", "-c", _CLAIM, "sh", CLAIM, self.id, self.line]
        found = self.ctx.parallel(
            members, lambda m: self.ctx.host(m).run(argv, timeout=20).stdout.strip()
        )
        new = [m for m in members if found[m.ip] == "new"]
        others = {
            ip: a[6:] for ip, a in found.items() if isinstance(a, str) and a.startswith("other ")
        }
        failed = {ip: a for ip, a in found.items() if isinstance(a, ClusterError)}
        if not others and not failed:
            return
        self.release(new)
        if others:
            ip, theirs = sorted(others.items())[0]
            who = theirs.partition(" ")[2] or "its claim is being written"
            raise GuardRefused(
                f"{ip}: another disaster-recovery run holds this cluster's hosts ({who}); "
                "finish it there, or, if that admin node is gone for good, delete "
                f"{CLAIM} on every etcd host (a reboot drops it too); nothing was changed"
            )
        ip, error = sorted(failed.items())[0]
        raise GuardRefused(f"{ip}: could not claim the host for {self.what}: {error}")

    def release(self, members: Sequence[Member]) -> None:
        """Take our claims back (best effort: another's claim is never touched)."""
        argv = ["sh", "-c", _RELEASE, "sh", CLAIM, self.id]
        self.ctx.parallel(members, lambda m: self.ctx.host(m).run(argv, timeout=20))
