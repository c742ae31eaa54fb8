"""The monitoring target file: byte for byte what Pigsty's etcd_register writes."""

from __future__ import annotations

from tests.unit.factories import member

from etcdsop.ops.register import target_file


def test_target_file_is_pigstys_format() -> None:
    assert target_file(member("10.10.10.11", 2, cluster="etcd", port=2379)) == (
        b"# etcd-2 @ 10.10.10.11\n"
        b"- labels: { ip: 10.10.10.11 , ins: etcd-2 , cls: etcd }\n"
        b"  targets: [ 10.10.10.11:2379 ]\n"
    )
