"""etcd_data rules: create makes the dir etcd-owned 0700 and rm deletes it."""

from __future__ import annotations

import pytest
from tests.unit.factories import member

from etcdsop.datadir import data_dir_problem
from etcdsop.errors import InputError
from etcdsop.ops.hostops import safe_data_dir


@pytest.mark.parametrize(
    "path",
    ["/data/etcd", "/data/etcd-main", "/var/lib/etcd/default", "/srv/etcd/data", "/data1/etcd"],
)
def test_dedicated_directories_are_accepted(path: str) -> None:
    assert data_dir_problem(path) is None


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/", "top-level"),
        ("/data", "top-level"),
        ("/var/lib", "shared"),
        ("/var/lib/etcd", "shared"),
        ("/etc/etcd", "shared"),
        ("/usr/local", "shared"),
        ("/etc/etcd-data", "inside /etc"),
        ("/usr/share/etcd", "inside /usr"),
        ("/pg/data", "inside /pg"),
        ("/data/postgres", "inside /data/postgres"),
        ("/data/postgres/pg-test-15", "inside /data/postgres"),
        ("/var/lib/postgresql/etcd", "inside /var/lib/postgresql"),
        ("/proc/1", "inside /proc"),
        ("data/etcd", "absolute"),
        ("/data/../etc/x", "absolute"),
    ],
)
def test_system_shared_and_parent_directories_are_refused(path: str, words: str) -> None:
    problem = data_dir_problem(path)
    assert problem is not None and words in problem


def test_wiping_refuses_a_shared_directory_even_past_the_inventory() -> None:
    # hostops re-checks what it deletes: a Member built by hand cannot slip through.
    with pytest.raises(InputError, match="etcd_data"):
        safe_data_dir(member("10.0.0.1", 1, data_dir="/data"))
    assert safe_data_dir(member("10.0.0.1", 1, data_dir="/data/etcd/")) == "/data/etcd"
