"""The sandbox's etcd 3.5 packages: which index hash and which stanzas are trusted."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdsop.errors import ClusterError
from etcdsop.sandbox import etcdrepo

RELEASE = """Origin: Debian
Suite: stable
MD5Sum:
 d41d8cd98f00b204e9800998ecf8427e 10 main/binary-amd64/Packages.xz
SHA256:
 aaaa 10 main/binary-arm64/Packages.xz
 bbbb 10 main/binary-amd64/Packages.xz
"""


def test_the_index_hash_is_the_sha256_line_of_that_file_only() -> None:
    assert etcdrepo._index_hash(RELEASE, "main/binary-amd64/Packages.xz") == "bbbb"
    with pytest.raises(ClusterError, match="lists no main/binary-i386"):
        etcdrepo._index_hash(RELEASE, "main/binary-i386/Packages.xz")


def test_only_the_etcd_packages_are_picked_from_the_index() -> None:
    text = (
        "Package: etcd-discovery\nVersion: 1\n\n"
        "Package: etcd-server\nVersion: 3.5.16-4\nFilename: pool/e/etcd-server.deb\n"
        "Description: x\n continued line\n\n"
        "Package: etcd-client\nVersion: 3.5.16-4\n"
    )
    found = etcdrepo._stanzas(text)
    assert [(s["Package"], s["Version"]) for s in found] == [
        ("etcd-server", "3.5.16-4"),
        ("etcd-client", "3.5.16-4"),
    ]


def test_a_cache_counts_only_when_both_packages_of_3_5_are_there(tmp_path: Path) -> None:
    (tmp_path / "etcd-server_3.5.16-4_amd64.deb").write_bytes(b"")
    assert etcdrepo._cached(tmp_path) == []
    (tmp_path / "etcd-client_3.4.23-4_amd64.deb").write_bytes(b"")
    assert etcdrepo._cached(tmp_path) == []
    (tmp_path / "etcd-client_3.5.16-4_amd64.deb").write_bytes(b"")
    assert [(d.package, d.version) for d in etcdrepo._cached(tmp_path)] == [
        ("etcd-client", "3.5.16-4"),
        ("etcd-server", "3.5.16-4"),
    ]
