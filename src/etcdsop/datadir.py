"""Which directories may be etcd's data dir: `create` makes it etcd-owned 0700 and
`rm` deletes it, so never a system directory, a shared parent or PostgreSQL's."""

from __future__ import annotations

from pathlib import PurePosixPath

# Directories that hold other things (Pigsty puts PostgreSQL under /data and /pg).
SHARED = frozenset(
    {
        "/data",
        "/pg",
        "/home",
        "/root",
        "/opt",
        "/srv",
        "/mnt",
        "/media",
        "/tmp",
        "/var",
        "/var/lib",
        "/var/log",
        "/var/tmp",
        "/var/cache",
        "/var/opt",
        "/usr/local",
        "/etc/etcd",
        "/var/lib/etcd",
    }
)
# Trees no data dir belongs in, however deep.
SYSTEM_TREES: tuple[str, ...] = (
    *("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys"),
    *("/usr", "/pg", "/data/postgres", "/var/lib/postgresql"),
)


def data_dir_problem(path: str) -> str | None:
    """Why `path` cannot be etcd's data dir, or None (a dedicated directory)."""
    parts = PurePosixPath(path).parts
    if not path.startswith("/") or ".." in parts:
        return "is not an absolute path"
    norm = str(PurePosixPath(path))
    if len(parts) < 3:
        return f"is {norm!r}, a top-level directory: use a dedicated one such as /data/etcd"
    if norm in SHARED:
        return f"is {norm!r}, a directory shared with other data: use e.g. {norm}/etcd"
    for tree in SYSTEM_TREES:
        if norm == tree or norm.startswith(tree + "/"):
            return f"is {norm!r}, inside {tree}: no etcd data belongs there (use /data/etcd)"
    for ours in ("/etc/etcd", "/var/lib/etcd"):
        if ours.startswith(norm + "/"):
            return f"is {norm!r}, a parent of {ours}"
    return None
