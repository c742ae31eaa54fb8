"""etcd 3.5 for the sandbox: Debian's packages, verified, in a local apt repository.

Debian bookworm ships etcd 3.4.23 only. The 3.5 packages come from Debian trixie
(3.5.16): their only dependencies are libc6 >= 2.34 and adduser, so they install on
bookworm hosts, which keep bookworm's systemd that boots cleanly under systemd-nspawn
here. sid's 3.5.30 would carry the learner fixes of 3.5.20 and 3.5.26, but its
postinst runs a sysusers.d file (`u!`) that bookworm's systemd-sysusers rejects, so
it can neither install nor upgrade a bookworm host. Trust is Debian's: InRelease
checked with gpgv against the machine's Debian archive keyring, then the Packages
index and every .deb by SHA-256.

Every base carries the packages as a flat apt repository at /srv/etcdsop-apt, so a
host with no network can install them the way an operator's host installs from its
mirror (`etcdsop upgrade` on a 3.4 sandbox). On 3.4 bases it is pinned below
bookworm, so a plain `apt-get install etcd-server` still installs 3.4.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from etcdsop.errors import ClusterError

from ._proc import run

SUITE = "trixie"
VERSION_PREFIX = "3.5."
PACKAGES = ("etcd-server", "etcd-client")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
REPO_IN_ROOTFS = "srv/etcdsop-apt"
ORIGIN = "etcdsop-sandbox"
DOWNLOAD_TIMEOUT = 300.0
DEFAULT_ETCD = "3.4"
ETCD_VERSIONS = ("3.4", "3.5")


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    path: Path


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data: bytes = response.read()
            return data
    except OSError as exc:
        raise ClusterError(f"sandbox: cannot download {url}: {exc}") from exc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_release(mirror: str, work: Path) -> str:
    """The text of the suite's InRelease once gpgv accepted its signature."""
    signed = work / "InRelease"
    signed.write_bytes(_get(f"{mirror}/dists/{SUITE}/InRelease"))
    if not KEYRING.exists():
        raise ClusterError(f"sandbox: no Debian archive keyring at {KEYRING}")
    run(
        ["gpgv", "--keyring", str(KEYRING), "--output", str(work / "Release"), str(signed)],
        what=f"sandbox: checking the signature of Debian {SUITE}'s InRelease",
    )
    return (work / "Release").read_text()


def _index_hash(release: str, name: str) -> str:
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        words = line.split()
        if in_sha256 and len(words) == 3 and words[2] == name:
            return words[0]
    raise ClusterError(f"sandbox: Debian {SUITE}'s Release lists no {name}")


def _stanzas(packages_text: str) -> list[dict[str, str]]:
    found = []
    for block in packages_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and line[0] not in " \t":
                name, _, value = line.partition(":")
                fields[name] = value.strip()
        if fields.get("Package") in PACKAGES:
            found.append(fields)
    return found


def _architecture() -> str:
    return run(["dpkg", "--print-architecture"], what="sandbox: dpkg").stdout.strip()


def fetch(mirror: str, cache: Path) -> list[Deb]:
    """trixie's etcd-server and etcd-client debs, downloaded once and verified."""
    cache.mkdir(parents=True, exist_ok=True)
    cached = _cached(cache)
    if cached:
        return cached
    arch = _architecture()
    work = cache / f".download-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        release = _verified_release(mirror, work)
        index_name = f"main/binary-{arch}/Packages.xz"
        index = _get(f"{mirror}/dists/{SUITE}/{index_name}")
        if _sha256(index) != _index_hash(release, index_name):
            raise ClusterError(f"sandbox: {index_name} of Debian {SUITE} fails its SHA-256")
        stanzas = _stanzas(lzma.decompress(index).decode())
        debs = []
        for package in PACKAGES:
            fields = next((s for s in stanzas if s["Package"] == package), None)
            if fields is None or not fields.get("Version", "").startswith(VERSION_PREFIX):
                raise ClusterError(
                    f"sandbox: Debian {SUITE} has no {package} {VERSION_PREFIX}x "
                    f"(it has {fields.get('Version') if fields else 'none'})"
                )
            data = _get(f"{mirror}/{fields['Filename']}")
            if _sha256(data) != fields.get("SHA256"):
                raise ClusterError(f"sandbox: {fields['Filename']} fails its SHA-256")
            target = work / Path(fields["Filename"]).name
            target.write_bytes(data)
            debs.append(target)
        for path in debs:
            path.rename(cache / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _cached(cache)


_DEB_NAME = re.compile(r"(?P<package>[a-z0-9.+-]+)_(?P<version>[^_]+)_[a-z0-9]+\.deb")


def _cached(cache: Path) -> list[Deb]:
    debs = []
    for path in sorted(cache.glob("*.deb")):
        m = _DEB_NAME.fullmatch(path.name)
        if m and m["package"] in PACKAGES and m["version"].startswith(VERSION_PREFIX):
            debs.append(Deb(m["package"], m["version"], path))
    return debs if {d.package for d in debs} == set(PACKAGES) else []


# --- the repository inside a rootfs --------------------------------------------------


def _control(deb: Path) -> str:
    text = run(["dpkg-deb", "--field", str(deb)], what=f"sandbox: reading {deb.name}").stdout
    return text.rstrip("\n")


def install_repo(root: Path, debs: list[Deb], *, preferred: bool) -> None:
    """Write the flat repository, its apt source and pin, and apt's lists for it."""
    repo = root / REPO_IN_ROOTFS
    repo.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for deb in debs:
        shutil.copy2(deb.path, repo / deb.path.name)
        data = deb.path.read_bytes()
        stanzas.append(
            f"{_control(deb.path)}\nFilename: ./{deb.path.name}\nSize: {len(data)}\n"
            f"SHA256: {_sha256(data)}\n"
        )
    packages = "\n".join(stanzas).encode()
    (repo / "Packages").write_bytes(packages)
    date = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
    (repo / "Release").write_text(
        f"Origin: {ORIGIN}\nLabel: {ORIGIN}\nDate: {date}\n"
        f"SHA256:\n {_sha256(packages)} {len(packages)} Packages\n"
    )
    sources = root / "etc/apt/sources.list.d/etcdsop-sandbox.list"
    sources.write_text(f"deb [trusted=yes] file:/{REPO_IN_ROOTFS} ./\n")
    # 3.4 bases: below bookworm (500), so etcd 3.5 is installed only when asked for by
    # version. 3.5 bases: above it, so a reinstall keeps 3.5.
    priority = 600 if preferred else 100
    (root / "etc/apt/preferences.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/apt/preferences.d/etcdsop-sandbox").write_text(
        f"Package: *\nPin: release o={ORIGIN}\nPin-Priority: {priority}\n"
    )
    _chroot_apt(
        root,
        "update",
        "-o",
        f"Dir::Etc::sourcelist={sources.relative_to(root / 'etc/apt')}",
        "-o",
        "Dir::Etc::sourceparts=-",
        "-o",
        "APT::Get::List-Cleanup=0",
    )


def install_etcd(root: Path, debs: list[Deb]) -> None:
    """Install the repository's etcd into the rootfs the way apt does on a host."""
    _chroot_apt(
        root,
        "install",
        "-y",
        "--no-install-recommends",
        *(f"{d.package}={d.version}" for d in debs),
    )


def _chroot_apt(root: Path, *args: str) -> None:
    run(
        ["chroot", str(root), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", *args],
        what=f"sandbox: apt-get {args[0]} in the base rootfs",
        timeout=DOWNLOAD_TIMEOUT,
    )
