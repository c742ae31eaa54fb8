"""The shared base root filesystem: debootstrap once, prepare, cache by package list.

A complete base is `<cache>/<key>/rootfs` with `<cache>/<key>/stamp.json`; it is
built in `<cache>/.build-<key>-<pid>` and renamed into place only when complete,
so an interrupted build is never used. A complete base is never modified again:
hosts use it as the lower layer of their overlay (rebuilding under running hosts
breaks them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from etcdsop.errors import ClusterError, InputError

from . import etcdrepo
from ._proc import Progress, file_lock, run, tail, unmount_all_under

SUITE = "bookworm"
VARIANT = "minbase"
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "etcd-server",
    "etcd-client",
    "iproute2",
    "procps",
    "python3-minimal",
    "ca-certificates",
)
# Bump when the preparation below changes, so older bases are not reused.
PREP_VERSION = 3
# What debootstrap leaves out on a base whose etcd comes from the local repository.
ETCD_PACKAGES = ("etcd-server", "etcd-client")
DEFAULT_CACHE = Path("/var/cache/etcdsop/rootfs-bookworm")
BUILD_TIMEOUT = 1800.0
LOCK_TIMEOUT = 2400.0
MASKED_UNITS = (
    "getty.target",
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "container-getty@.service",
)
# Optional real etcd clients (`sandbox up --with-postgres`, the e2e tests): installed in
# the base, never auto-started; `sandbox postgres` (or a test) starts Patroni and
# vip-manager where it lays them out. sudo as on Pigsty's nodes; also the e2e tests'
# non-root logins, so that they and `--with-postgres` share one base image.
POSTGRES_PACKAGES: tuple[str, ...] = ("postgresql-15", "patroni", "vip-manager", "sudo")
CLIENT_UNITS = ("postgresql.service", "patroni.service", "vip-manager.service")
SSHD_DROPIN = "# etcdsop sandbox\nPermitRootLogin prohibit-password\nUseDNS no\n"
JOURNALD_DROPIN = "# etcdsop sandbox\n[Journal]\nStorage=volatile\n"


@dataclass(frozen=True)
class Base:
    """A complete, prepared base rootfs."""

    key: str
    rootfs: Path
    packages: tuple[str, ...]
    etcd: str


def cache_root() -> Path:
    return Path(os.environ.get("ETCDSOP_ROOTFS_CACHE") or DEFAULT_CACHE)


def package_list(extra_packages: Sequence[str] = ()) -> tuple[str, ...]:
    for name in extra_packages:
        if not name or not all(c.isalnum() or c in "+-.:" for c in name) or name[0] == "-":
            raise InputError(f"sandbox: invalid extra package name {name!r}")
    return tuple(sorted(set(BASE_PACKAGES) | set(extra_packages)))


def check_etcd_version(etcd: str) -> None:
    if etcd not in etcdrepo.ETCD_VERSIONS:
        raise InputError(
            f"sandbox: etcd {etcd!r} is not offered; use one of {', '.join(etcdrepo.ETCD_VERSIONS)}"
        )


def cache_key(packages: Sequence[str], etcd: str = etcdrepo.DEFAULT_ETCD) -> str:
    fields: dict[str, object] = {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": sorted(packages),
        "prep": PREP_VERSION,
    }
    if etcd != etcdrepo.DEFAULT_ETCD:
        fields["etcd"] = etcd
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- the Debian mirror, from the machine's own apt sources ---------------------------


def _deb822_mirrors(text: str, suite: str) -> Iterator[str]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0] in " \t" and last:
                fields[last] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                last = name.strip().lower()
                fields[last] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        if suite not in fields.get("suites", "").split():
            continue
        yield from fields.get("uris", "").split()


def _one_line_mirrors(text: str, suite: str) -> Iterator[str]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            yield words[0]


def parse_mirror(sources: Iterable[tuple[str, str]], suite: str = SUITE) -> str | None:
    """First http(s)/file URI serving `suite` in (file name, text) apt source files."""
    for name, text in sources:
        if name.endswith(".sources"):
            uris = _deb822_mirrors(text, suite)
        elif name.endswith(".list"):
            uris = _one_line_mirrors(text, suite)
        else:
            continue
        for uri in uris:
            if uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/")
    return None


def find_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    override = os.environ.get("ETCDSOP_DEBIAN_MIRROR")
    if override:
        return override
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(parts.iterdir())
    sources = []
    for path in files:
        with contextlib.suppress(OSError):
            sources.append((path.name, path.read_text()))
    mirror = parse_mirror(sources)
    if mirror is None:
        raise InputError(
            f"sandbox: no Debian {SUITE} mirror in {apt_dir}/sources.list(.d); "
            "set ETCDSOP_DEBIAN_MIRROR to one"
        )
    return mirror


# --- building ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[int]:
    """Hold the cache lock; yields its fd (children that inherit it keep it held)."""
    with file_lock(
        root / ".lock",
        timeout=LOCK_TIMEOUT,
        interval=1,
        busy=f"sandbox: {root} stays locked by another build",
    ) as fd:
        yield fd


def _read_stamp(unit: Path) -> dict[str, object] | None:
    try:
        data = json.loads((unit / "stamp.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_base(packages: Sequence[str], etcd: str = etcdrepo.DEFAULT_ETCD) -> Base | None:
    key = cache_key(packages, etcd)
    unit = cache_root() / key
    stamp = _read_stamp(unit)
    if stamp is None or stamp.get("packages") != sorted(packages):
        return None
    if stamp.get("etcd", etcdrepo.DEFAULT_ETCD) != etcd:
        return None
    if not (unit / "rootfs" / "usr" / "bin" / "etcd").exists():
        return None
    return Base(key=key, rootfs=unit / "rootfs", packages=tuple(packages), etcd=etcd)


def ensure_base(
    extra_packages: Sequence[str] = (),
    progress: Progress | None = None,
    etcd: str = etcdrepo.DEFAULT_ETCD,
) -> Base:
    """Return the cached base for this package list and etcd, building it when missing."""
    check_etcd_version(etcd)
    packages = package_list(extra_packages)
    base = find_base(packages, etcd)
    if base is not None:
        return base
    root = cache_root()
    with _locked(root) as lock_fd:
        base = find_base(packages, etcd)  # another process may have built it meanwhile
        if base is not None:
            return base
        for stale in root.glob(".build-*"):
            unmount_all_under(stale, what="sandbox: removing an interrupted rootfs build")
            shutil.rmtree(stale, ignore_errors=True)
        key = cache_key(packages, etcd)
        build = root / f".build-{key}-{os.getpid()}"
        unit = root / key
        mirror = find_mirror()
        if progress:
            progress(f"building the etcd {etcd} base rootfs from {mirror} (once; about a minute)")
        started = time.monotonic()
        try:
            build.mkdir(parents=True)
            debs = etcdrepo.fetch(mirror, root / "debs" / etcdrepo.SUITE)
            # A 3.5 base gets etcd from the repository only, as a fresh install.
            from_repo = etcd != etcdrepo.DEFAULT_ETCD
            bootstrap = [p for p in packages if not (from_repo and p in ETCD_PACKAGES)]
            _debootstrap(build / "rootfs", bootstrap, mirror, lock_fd)
            etcdrepo.install_repo(build / "rootfs", debs, preferred=from_repo)
            if from_repo:
                etcdrepo.install_etcd(build / "rootfs", debs)
            prepare(build / "rootfs")
            stamp = {
                "key": key,
                "suite": SUITE,
                "variant": VARIANT,
                "packages": sorted(packages),
                "etcd": etcd,
                "etcd_packages": {d.package: d.version for d in debs},
                "prep": PREP_VERSION,
                "mirror": mirror,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (build / "stamp.json").write_text(json.dumps(stamp, indent=2) + "\n")
            if unit.exists():  # incomplete or outdated leftover under the final name
                unmount_all_under(unit, what="sandbox: replacing a broken base rootfs")
                shutil.rmtree(unit)
            build.rename(unit)
        except BaseException:
            with contextlib.suppress(Exception):
                unmount_all_under(build, what="sandbox: cleaning a failed rootfs build")
                shutil.rmtree(build, ignore_errors=True)
            raise
        if progress:
            progress(f"base rootfs ready in {time.monotonic() - started:.0f} s: {unit}")
    return Base(key=key, rootfs=unit / "rootfs", packages=packages, etcd=etcd)


def _debootstrap(target: Path, packages: Sequence[str], mirror: str, lock_fd: int) -> None:
    # debootstrap inherits the lock: if we are killed it keeps running, and the lock
    # stays held until it ends, so the next build cannot delete the dir under it.
    argv = [
        "debootstrap",
        f"--variant={VARIANT}",
        "--include=" + ",".join(packages),
        SUITE,
        str(target),
        mirror,
    ]
    what = "sandbox: debootstrap"
    proc = run(argv, what=what, timeout=BUILD_TIMEOUT, check=False, pass_fds=[lock_fd])
    if proc.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = tail(log.read_text(errors="replace")) if log.exists() else tail(proc.stderr)
        raise ClusterError(
            f"sandbox: debootstrap {SUITE} from {mirror} failed (exit {proc.returncode})",
            details=detail,
        )


# --- preparing the base --------------------------------------------------------------


def _mask(root: Path, unit: str) -> None:
    link = root / "etc/systemd/system" / unit
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/dev/null")


def _disable(root: Path, unit: str) -> None:
    """Remove every symlink under /etc/systemd/system that enables or aliases unit."""
    for path in (root / "etc/systemd/system").rglob("*"):
        if path.is_symlink() and (path.name == unit or os.readlink(path).endswith("/" + unit)):
            path.unlink()


def prepare(root: Path) -> None:
    """Turn a fresh debootstrap tree into the shared base (see the testbed recipe)."""
    _disable(root, "etcd.service")
    for unit in CLIENT_UNITS:
        _disable(root, unit)
    _drop_default_pg_clusters(root)
    etcd_data = root / "var/lib/etcd"
    if etcd_data.is_dir():
        for child in etcd_data.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    timers = root / "etc/systemd/system/timers.target.wants"
    enabled_timers = sorted(p.name for p in timers.iterdir()) if timers.is_dir() else []
    for unit in (*enabled_timers, *MASKED_UNITS):
        _mask(root, unit)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
    with contextlib.suppress(FileNotFoundError):
        (root / "etc/hostname").unlink()
    sshd_d = root / "etc/ssh/sshd_config.d"
    sshd_d.mkdir(parents=True, exist_ok=True)
    (sshd_d / "etcdsop-sandbox.conf").write_text(SSHD_DROPIN)
    journald_d = root / "etc/systemd/journald.conf.d"
    journald_d.mkdir(parents=True, exist_ok=True)
    (journald_d / "etcdsop-sandbox.conf").write_text(JOURNALD_DROPIN)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        # etcd-server's stays, so a test can uninstall etcd and have apt install it again
        # from the cache (hosts have no network), through etcdsop's own install path.
        if not deb.name.startswith("etcd-server_"):
            deb.unlink()
    if not (root / "usr/bin/etcd").exists():
        raise ClusterError(f"sandbox: the new base rootfs {root} has no /usr/bin/etcd")


def _drop_default_pg_clusters(root: Path) -> None:
    """What pg_dropcluster does to the stopped `main` cluster postgresql's postinst made.

    Without it every host would boot a PostgreSQL (postgresql.service's generator
    starts each cluster under /etc/postgresql): nothing here may run by default.
    """
    for conf in sorted((root / "etc/postgresql").glob("*/*/postgresql.conf")):
        version, cluster = conf.parent.parent.name, conf.parent.name
        shutil.rmtree(conf.parent)
        shutil.rmtree(root / "var/lib/postgresql" / version / cluster, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (root / f"var/log/postgresql/postgresql-{version}-{cluster}.log").unlink()
