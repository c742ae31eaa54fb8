"""Atomic writes of client files on a host, the old file kept beside it as a backup.

Used by reload for the members' files (ops/memberfiles.py) and the clients' (clients/host.py).
"""

from __future__ import annotations

import time

from etcdsop.remote import RemoteHost

# $1 path, $2 backup path, $3 owner:group or "keep", $4 mode ("keep": the old file's;
# else for chmod: 0600, o-rwx...), $5 "secret": the backup is made 0600 (it holds the old
# secret). Content on stdin. The temp file sits beside $1: the rename is atomic and a
# link's target must be passed as $1 (a rename over a link replaces the link).
_WRITE = r"""
set -e
if [ -e "$1" ]; then
  cp -p -- "$1" "$2"
  if [ "$5" = secret ]; then chmod 0600 "$2"; fi
fi
t=$(mktemp "$1.etcdsop.XXXXXX"); trap 'rm -f "$t"' EXIT
cat > "$t"
if [ "$3" = keep ] && [ -e "$1" ]; then
  chown --reference="$1" "$t"; chmod --reference="$1" "$t"
else
  chown "$3" "$t"
fi
if [ "$4" != keep ]; then chmod "$4" "$t"; fi
mv -f "$t" "$1"; trap - EXIT
"""


def backup_path(path: str, stamp: str) -> str:
    # Never ends in .sh or .yml: /etc/profile.d/*.sh must not source a backup.
    return f"{path}.{stamp}.bak"


def run_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_with_backup(
    host: RemoteHost,
    path: str,
    content: bytes,
    stamp: str,
    *,
    owner: str | None = None,
    group: str | None = None,
    mode: int | str | None = None,
    existed: bool = True,
    secret: bool = False,
) -> str | None:
    """Atomic write keeping the old file as <path>.<stamp>.bak (0600 when secret);
    owner None keeps the old owner, and the old mode unless mode says otherwise (an int,
    or chmod's symbolic form). Returns the backup path (None when there was no file)."""
    backup = backup_path(path, stamp)
    own = "keep" if owner is None else f"{owner}:{group}"
    if isinstance(mode, int):
        chmod = f"{mode:04o}"
    else:
        chmod = mode or ("keep" if owner is None else "0600")
    argv = ["sh", "-c", _WRITE, "sh", path, backup, own, chmod, "secret" if secret else "plain"]
    host.run(argv, stdin=content)
    return backup if existed else None


# $1 backup, $2 path: the content only; owner and mode stay as $2 has them.
_RESTORE = (
    't=$(mktemp "$2.etcdsop.XXXXXX") && cat -- "$1" > "$t" && '
    'chown --reference="$2" "$t" && chmod --reference="$2" "$t" && mv -f "$t" "$2"'
)


def restore_backup(host: RemoteHost, path: str, stamp: str) -> None:
    """Put back what write_with_backup(path, stamp) replaced, from its backup."""
    host.run(["sh", "-c", _RESTORE, "sh", backup_path(path, stamp), path])
