"""Citus (pg_mode: citus): Patroni's scope and the etcd user are pg_shard, vip-manager's
trigger key <pg_namespace>/<pg_shard>/<pg_group>/leader (Pigsty's templates)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from etcdsop.clients import password as pgpassword
from etcdsop.clients.confedit import ClientConfError, edit_patroni, edit_vip
from etcdsop.errors import GuardRefused, InputError
from etcdsop.inventory import load_inventory
from etcdsop.model import Inventory
from etcdsop.ops import rbac

CITUS = """\
etcd: { hosts: { 10.0.0.1: {etcd_seq: 1} } }
pg-citus0:
  hosts:
    10.0.0.5: {pg_seq: 1, pg_role: primary}
    10.0.0.6: {pg_seq: 2, pg_role: replica}
  vars: {pg_cluster: pg-citus0, pg_group: 0}
pg-citus1:
  hosts: {10.0.0.7: {pg_seq: 1, pg_role: primary}}
  vars: {pg_cluster: pg-citus1, pg_group: 1, pg_vip_enabled: true}
pg-plain:
  hosts: {10.0.0.8: {pg_seq: 1, pg_role: primary}}
  vars: {pg_cluster: pg-plain, pg_mode: pgsql}
all:
  vars: {pg_mode: citus, pg_shard: pg-citus, pg_etcd_password: Shard.Pw}
"""


def load(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "pigsty.yml"
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)


def test_citus_clusters_scope_and_leader_key(tmp_path: Path) -> None:
    inv = load(tmp_path, CITUS)
    found = {c.name: (c.scope, c.citus_group, c.leader_key) for c in inv.pg_clusters}
    assert found == {
        "pg-citus0": ("pg-citus", 0, "/pg/pg-citus/0/leader"),
        "pg-citus1": ("pg-citus", 1, "/pg/pg-citus/1/leader"),
        "pg-plain": ("pg-plain", None, "/pg/pg-plain/leader"),
    }


def test_one_etcd_user_per_shard(tmp_path: Path) -> None:
    accounts = rbac.accounts(load(tmp_path, CITUS))
    assert [(a.name, a.members, a.prefix, a.password) for a in accounts] == [
        ("pg-citus", ("pg-citus0", "pg-citus1"), "/pg/pg-citus/", "Shard.Pw"),
        ("pg-plain", ("pg-plain",), "/pg/pg-plain/", "Shard.Pw"),
    ]


def test_shard_groups_must_agree_on_the_password(tmp_path: Path) -> None:
    text = CITUS.replace("pg_group: 1,", "pg_group: 1, pg_etcd_password: Other,")
    with pytest.raises(InputError, match=r"share the etcd user pg-citus .* pg_etcd_password"):
        rbac.accounts(load(tmp_path, text))


def test_citus_needs_shard_and_group(tmp_path: Path) -> None:
    text = CITUS.replace("vars: {pg_cluster: pg-citus0, pg_group: 0}", "vars: {pg_cluster: x}")
    with pytest.raises(InputError, match="pg_group is missing"):
        load(tmp_path, text)


def test_password_guard_names_every_client_of_the_shard(tmp_path: Path) -> None:
    inv = load(tmp_path, CITUS)
    citus = rbac.accounts(inv)[0]
    change = [(citus, rbac.Action("change_password", "update"))]
    # pg-citus1 has a VIP: vip-manager is a client of the shard's user too.
    with pytest.raises(GuardRefused, match=r"pg-citus0, pg-citus1.*reload -t patroni,vip"):
        pgpassword.guard(inv, change, ("patroni",))
    pgpassword.guard(inv, change, ("patroni", "vip"))


PATRONI = """\
namespace: /pg/
name: pg-citus1-1
scope: pg-citus   # citus shard cluster: pg-citus1
citus:
  group: 1
  database: meta
etcd3:
  hosts: '10.0.0.1:2379'
"""
ETCD3 = {"hosts": "10.0.0.2:2379"}


def test_patroni_citus_group_must_match() -> None:
    new = edit_patroni(
        PATRONI.encode(), ETCD3, scope="pg-citus", namespace="/pg", citus_group=1
    ).decode()
    assert "  hosts: '10.0.0.2:2379'\n" in new
    with pytest.raises(ClientConfError, match=r"citus\.group is 1, not the inventory's pg_group 0"):
        edit_patroni(PATRONI.encode(), ETCD3, scope="pg-citus", namespace="/pg", citus_group=0)
    with pytest.raises(ClientConfError, match="pg_mode is not citus"):
        edit_patroni(PATRONI.encode(), ETCD3, scope="pg-citus", namespace="/pg")
    with pytest.raises(ClientConfError, match="not the inventory's pg_shard"):
        edit_patroni(PATRONI.encode(), ETCD3, scope="pg-citus1", namespace="/pg", citus_group=1)


def test_vip_trigger_key_must_be_readable_by_its_user() -> None:
    vip = b'trigger-key: "/pg/pg-citus/1/leader"\ndcs-type: etcd3\netcd-user: pg-citus1\n'
    new = edit_vip(vip, {"etcd-user": "pg-citus"}, readable="/pg/pg-citus/")
    assert b"etcd-user: pg-citus\n" in new
    with pytest.raises(ClientConfError, match="outside /pg/pg-citus1/"):
        edit_vip(vip, {"etcd-user": "pg-citus1"}, readable="/pg/pg-citus1/")
