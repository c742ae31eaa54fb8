"""Inventory parsing: precedence, shapes, validation messages, limits, masking, Pigsty files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdsop.errors import InputError
from etcdsop.inventory import MASK, load_inventory, masked_vars, parse_extra_vars, select
from etcdsop.model import Inventory, SshTarget

DATA = Path(__file__).parent / "data" / "inventory"

SOP = """
etcd:
  hosts:
    10.10.10.12: { etcd_seq: 3 }
    10.10.10.10: { etcd_seq: 1 }
    10.10.10.11: { etcd_seq: 2 }
  vars: { etcd_cluster: etcd }
"""


def write(tmp_path: Path, text: str, name: str = "pigsty.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, extra: dict[str, Any] | None = None) -> Inventory:
    return load_inventory(write(tmp_path, text), extra)


def load_error(tmp_path: Path, text: str, extra: dict[str, Any] | None = None) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_inventory(path, extra)
    assert info.value.message.startswith(f"{path}: "), info.value.message
    assert "\n" not in info.value.message
    return info.value


# ---------------------------------------------------------------- shapes


def test_sop_document_with_top_level_etcd_group(tmp_path: Path) -> None:
    inv = load(tmp_path, SOP)
    assert [(m.ip, m.seq, m.name) for m in inv.members] == [
        ("10.10.10.10", 1, "etcd-1"),
        ("10.10.10.11", 2, "etcd-2"),
        ("10.10.10.12", 3, "etcd-3"),
    ]
    first = inv.members[0]
    assert (first.data_dir, first.port, first.peer_port, first.init) == (
        "/data/etcd",
        2379,
        2380,
        "new",
    )
    assert (first.election_timeout, first.heartbeat_interval) == (1000, 100)
    assert (first.learner, first.safeguard, first.rm_data, first.rm_pkg) == (
        False,
        False,
        True,
        False,
    )
    assert first.root_password == "Etcd.Root"
    assert first.cert_validity_days == 7300
    assert first.ssh == SshTarget(address="10.10.10.10")
    assert first.peer_url == "https://10.10.10.10:2380"
    assert inv.cluster == "etcd"
    assert inv.pg_clusters == ()


def test_full_shape_with_nested_children_and_all_hosts(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        all:
          hosts:
            10.0.0.1: { etcd_seq: 1, ansible_user: admin }
          children:
            dcs:
              vars: { etcd_port: 3379 }
              children:
                etcd:
                  hosts:
                    10.0.0.1:
                  children:
                    etcd-east:
                      hosts: { 10.0.0.3: { etcd_seq: 3 } }
                    etcd-west:
                      hosts: { 10.0.0.2: { etcd_seq: 2 } }
            pg-test:
              hosts: { 10.0.0.9: { pg_seq: 1, pg_role: primary } }
              vars: { pg_cluster: pg-test }
          vars:
            etcd_root_password: Secret.1
        """,
    )
    assert [(m.ip, m.seq, m.port) for m in inv.members] == [
        ("10.0.0.1", 1, 3379),
        ("10.0.0.2", 2, 3379),
        ("10.0.0.3", 3, 3379),
    ]
    assert inv.members[0].ssh.user == "admin"
    assert inv.root_password == "Secret.1"
    assert [(c.name, c.group, c.hosts) for c in inv.pg_clusters] == [
        ("pg-test", "pg-test", ("10.0.0.9",))
    ]


def test_hosts_sorted_numerically_ipv6_and_normalised(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        etcd:
          hosts:
            10.0.0.10: { etcd_seq: 3 }
            10.0.0.9: { etcd_seq: 2 }
            "2001:DB8:0::1": { etcd_seq: 4 }
            10.0.0.100: { etcd_seq: 5 }
            10.0.0.2: { etcd_seq: 1 }
        """,
    )
    assert [m.ip for m in inv.members] == [
        "10.0.0.2",
        "10.0.0.9",
        "10.0.0.10",
        "10.0.0.100",
        "2001:db8::1",
    ]
    assert inv.members[-1].client_url == "https://[2001:db8::1]:2379"


def test_null_host_vars_null_group_sections_and_digit_string_seq(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        etcd:
          hosts:
            10.0.0.1:
          vars:
            etcd_seq: "7"
        other:
        pg-x:
          hosts:
          vars:
        """,
    )
    assert [(m.ip, m.seq) for m in inv.members] == [("10.0.0.1", 7)]


def test_anchors_aliases_and_merge_keys(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        all:
          vars:
            common: &common { etcd_cluster: meta, etcd_port: 2479 }
          children:
            etcd:
              hosts:
                10.0.0.1: { <<: *common, etcd_seq: 1 }
                10.0.0.2: { <<: *common, etcd_seq: 2, etcd_port: 2579 }
        """,
    )
    assert [(m.cluster, m.port) for m in inv.members] == [("meta", 2479), ("meta", 2579)]


def test_jinja_strings_are_kept_verbatim(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        etcd:
          hosts: { 10.0.0.1: { etcd_seq: 1 } }
          vars:
            node_name: '{{ etcd_cluster }}-{{ etcd_seq }}'
        """,
    )
    assert inv.members[0].vars["node_name"] == "{{ etcd_cluster }}-{{ etcd_seq }}"


def test_member_vars_hold_every_resolved_variable(tmp_path: Path) -> None:
    inv = load(tmp_path, SOP + "\nall: { vars: { region: china } }\n")
    values = inv.members[0].vars
    assert values["region"] == "china"
    assert values["etcd_seq"] == 1
    assert values["etcd_api"] == "v3"  # a role default


# ---------------------------------------------------------------- precedence

LAYERED = """
all:
  vars: { etcd_port: 3001 }
  children:
    dcs:
      vars: { etcd_port: 3002 }
      children:
        etcd:
          hosts:
            10.0.0.1: { etcd_seq: 1, etcd_port: 3004 }
            10.0.0.2: { etcd_seq: 2 }
          vars: { etcd_port: 3003 }
"""


@pytest.mark.parametrize(
    ("drop", "extra", "expected"),
    [
        ([], {"etcd_port": 3005}, 3005),  # -e beats everything
        ([], {"etcd_port": "3005"}, 3005),
        ([], None, 3004),  # host vars beat group vars
        (["3004"], None, 3003),  # the etcd group beats its parent group
        (["3004", "3003"], None, 3002),  # the parent group beats all.vars
        (["3004", "3003", "3002"], None, 3001),  # all.vars beat role defaults
        (["3004", "3003", "3002", "3001"], None, 2379),  # role default
    ],
)
def test_precedence_levels(
    tmp_path: Path, drop: list[str], extra: dict[str, Any] | None, expected: int
) -> None:
    text = LAYERED
    for port in drop:
        text = text.replace(f"etcd_port: {port}", "unused: 0")
    inv = load(tmp_path, text, extra)
    assert inv.members[0].port == expected


def test_host_without_host_var_gets_group_value(tmp_path: Path) -> None:
    inv = load(tmp_path, LAYERED)
    assert [m.port for m in inv.members] == [3004, 3003]


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        # same depth: Ansible applies groups sorted by name, the last one wins
        ({"aaa": {}, "zzz": {}}, "zzz"),
        ({"zzz": {}, "aaa": {}}, "zzz"),
        # ansible_group_priority outranks the name order
        ({"aaa": {"ansible_group_priority": 10}, "zzz": {}}, "aaa"),
    ],
)
def test_sibling_groups_order(tmp_path: Path, groups: dict[str, Any], expected: str) -> None:
    doc: dict[str, Any] = {"etcd": {"hosts": {"10.0.0.1": {"etcd_seq": 1}}}}
    for name, extra_vars in groups.items():
        doc[name] = {"hosts": {"10.0.0.1": None}, "vars": {"etcd_cluster": name, **extra_vars}}
    inv = load(tmp_path, yaml.safe_dump(doc, sort_keys=False))
    assert inv.cluster == expected


def test_deeper_group_beats_shallower_whatever_the_name(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        zzz:
          hosts: { 10.0.0.1: }
          vars: { etcd_cluster: shallow }
        aaa:
          children:
            etcd:
              hosts: { 10.0.0.1: { etcd_seq: 1 } }
              vars: { etcd_cluster: deep }
        """,
    )
    assert inv.cluster == "deep"


def test_host_vars_from_several_groups_merge(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        nodes:
          hosts:
            10.0.0.1: { etcd_seq: 1, etcd_port: 2479, ansible_user: ops }
        etcd:
          hosts:
            10.0.0.1: { etcd_port: 2579 }
        """,
    )
    member = inv.members[0]
    assert (member.seq, member.port, member.ssh.user) == (1, 2579, "ops")


def test_extra_vars_from_file_override_inventory(tmp_path: Path) -> None:
    (tmp_path / "override.yml").write_text("etcd_init: existing\netcd_learner: true\n")
    extra = parse_extra_vars(["@override.yml", "etcd_safeguard=true"], tmp_path)
    inv = load(tmp_path, SOP + "\nall: { vars: { etcd_init: new } }\n", extra)
    assert {(m.init, m.learner, m.safeguard) for m in inv.members} == {("existing", True, True)}
    assert inv.extra_vars == {
        "etcd_init": "existing",
        "etcd_learner": True,
        "etcd_safeguard": True,
    }


# ---------------------------------------------------------------- extra vars


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["etcd_safeguard=false"], {"etcd_safeguard": False}),
        (["etcd_safeguard=True"], {"etcd_safeguard": True}),
        (["etcd_heartbeat_interval=200"], {"etcd_heartbeat_interval": 200}),
        (["a=1 b='x y' c=no"], {"a": 1, "b": "x y", "c": False}),
        (["etcd_init=existing"], {"etcd_init": "existing"}),
        (["x=-5"], {"x": -5}),
        (["x=0123"], {"x": "0123"}),  # not octal
        (["x=1:30"], {"x": "1:30"}),  # not sexagesimal
        (["x=2024-01-01"], {"x": "2024-01-01"}),  # not a date
        (["x="], {"x": ""}),
        (["etcd_root_password=12345"], {"etcd_root_password": "12345"}),  # secrets stay text
        (["etcd_root_password=yes"], {"etcd_root_password": "yes"}),
        (["x=1", "x=2"], {"x": 2}),  # later items win
        (['{"etcd_seq": 3, "tags": [1, 2]}'], {"etcd_seq": 3, "tags": [1, 2]}),
        (
            ["{etcd_init: existing, etcd_learner: yes}"],
            {"etcd_init": "existing", "etcd_learner": True},
        ),
        ([], {}),
    ],
)
def test_parse_extra_vars(tmp_path: Path, items: list[str], expected: dict[str, Any]) -> None:
    assert parse_extra_vars(items, tmp_path) == expected


def test_parse_extra_vars_file_relative_and_absolute(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vars.yml").write_text("etcd_seq: 4\n")
    (tmp_path / "empty.yml").write_text("")
    absolute = tmp_path / "sub" / "vars.yml"
    assert parse_extra_vars(["@sub/vars.yml"], tmp_path) == {"etcd_seq": 4}
    assert parse_extra_vars([f"@{absolute}"], Path("/nonexistent")) == {"etcd_seq": 4}
    assert parse_extra_vars(["@empty.yml"], tmp_path) == {}


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ("novalue", "-e 'novalue': not a key=value pair"),
        ("=x", "-e '': not a key=value pair"),
        ("1a=2", "-e '1a': not a key=value pair"),
        ("a=1 loose", "-e 'loose': not a key=value pair"),
        ("a='unterminated", "cannot be split"),
        ("   ", "empty"),
        ("@missing.yml", "-e @missing.yml: no such file"),
        ("@list.yml", "-e @list.yml: must be a mapping of variables, not a list"),
        ("@bad.yml", "-e @bad.yml: not valid YAML: line 1"),
        ("{bad: [", "not valid YAML"),
    ],
)
def test_parse_extra_vars_errors(tmp_path: Path, item: str, fragment: str) -> None:
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    (tmp_path / "bad.yml").write_text("a: b: c\n")
    with pytest.raises(InputError) as info:
        parse_extra_vars([item], tmp_path)
    assert fragment in info.value.message
    assert "\n" not in info.value.message


# ---------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("'false'", False),  # a string "false" must not be truthy
        ("'False'", False),
        ("'no'", False),
        ("'YES'", True),
        ("'on'", True),
        ("off", False),
        ("1", True),
        ("0", False),
        ("'0'", False),
    ],
)
def test_bool_values(tmp_path: Path, value: str, expected: bool) -> None:
    inv = load(tmp_path, SOP + f"\nall: {{ vars: {{ etcd_safeguard: {value} }} }}\n")
    assert {m.safeguard for m in inv.members} == {expected}


# ---------------------------------------------------------------- ssh target


@pytest.mark.parametrize(
    ("host_vars", "expected"),
    [
        ({}, SshTarget(address="10.0.0.1")),
        (
            {"ansible_host": "node-1", "ansible_port": 2222, "ansible_user": "admin"},
            SshTarget(address="node-1", port=2222, user="admin"),
        ),
        ({"ansible_port": "22"}, SshTarget(address="10.0.0.1", port=22)),
        (
            {"ansible_ssh_host": "old", "ansible_ssh_port": 23, "ansible_ssh_user": "u"},
            SshTarget(address="old", port=23, user="u"),
        ),
        (
            {
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no"
                " -o UserKnownHostsFile=/dev/null"
            },
            SshTarget(
                address="10.0.0.1", known_hosts_file="/dev/null", strict_host_key_checking="no"
            ),
        ),
        (
            {"ansible_ssh_common_args": "-oStrictHostKeyChecking=accept-new"},
            SshTarget(address="10.0.0.1", strict_host_key_checking="accept-new"),
        ),
        (
            {"ansible_ssh_common_args": "-o 'StrictHostKeyChecking yes' -C -v"},
            SshTarget(address="10.0.0.1", strict_host_key_checking="yes"),
        ),
        (
            {"ansible_ssh_extra_args": "-o stricthostkeychecking=OFF"},
            SshTarget(address="10.0.0.1", strict_host_key_checking="no"),
        ),
        (
            # ssh keeps the first value; common args come before extra args
            {
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes",
                "ansible_ssh_extra_args": "-o StrictHostKeyChecking=no",
            },
            SshTarget(address="10.0.0.1", strict_host_key_checking="yes"),
        ),
        (
            {"ansible_ssh_common_args": "-o UserKnownHostsFile='/etc/kh one' -o ProxyJump=x"},
            SshTarget(address="10.0.0.1", known_hosts_file="/etc/kh"),
        ),
    ],
)
def test_ssh_target(tmp_path: Path, host_vars: dict[str, Any], expected: SshTarget) -> None:
    doc = {"etcd": {"hosts": {"10.0.0.1": {"etcd_seq": 1, **host_vars}}}}
    inv = load(tmp_path, yaml.safe_dump(doc))
    assert inv.members[0].ssh == expected


def test_ssh_relative_paths_resolve_against_inventory_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    (tmp_path / "conf").mkdir()
    path = write(
        tmp_path,
        """
        etcd:
          hosts:
            10.0.0.1:
              etcd_seq: 1
              ansible_ssh_private_key_file: keys/id_ed25519
              ansible_ssh_common_args: -o UserKnownHostsFile=known_hosts
            10.0.0.2:
              etcd_seq: 2
              ansible_ssh_private_key_file: ~/.ssh/id_rsa
              ansible_ssh_common_args: -o UserKnownHostsFile=~/.ssh/kh
        """,
        name="conf/pigsty.yml",
    )
    monkeypatch.chdir(tmp_path)
    inv = load_inventory(Path("conf/pigsty.yml"))
    first, second = (m.ssh for m in inv.members)
    assert first.key_file == str(path.parent / "keys" / "id_ed25519")
    assert first.known_hosts_file == str(path.parent / "known_hosts")
    assert second.key_file == "/home/tester/.ssh/id_rsa"
    assert second.known_hosts_file == "/home/tester/.ssh/kh"


# ---------------------------------------------------------------- bad input


def host(ip: str, **values: Any) -> dict[str, Any]:
    return {ip: {"etcd_seq": int(ip.rsplit(".", 1)[1]), **values}}


def etcd_doc(*hosts: dict[str, Any], **group_vars: Any) -> str:
    merged: dict[str, Any] = {}
    for item in hosts:
        merged.update(item)
    return yaml.safe_dump({"etcd": {"hosts": merged, "vars": group_vars}})


A, B = "10.0.0.1", "10.0.0.2"


def pg_doc(hosts: str, group_vars: str) -> str:
    """One etcd member plus a group `pg` with the given flow-style hosts and vars."""
    etcd = "etcd: { hosts: { 10.0.0.1: {etcd_seq: 1} } }\n"
    return etcd + f"pg: {{ hosts: {{ {hosts} }}, vars: {{ {group_vars} }} }}\n"


BAD_CASES: list[tuple[str, str, dict[str, Any] | None, list[str]]] = [
    ("empty file", "", None, ["the inventory is empty"]),
    ("top level list", "- a\n- b\n", None, ["top level must be a mapping", "a list"]),
    ("top level scalar", "hello\n", None, ["top level must be a mapping"]),
    ("no etcd group", "pg-meta: { hosts: { 10.0.0.1: } }\n", None, ["no etcd group"]),
    (
        "etcd without hosts",
        "etcd: { vars: { etcd_cluster: x } }\n",
        None,
        ["group etcd", "empty group"],
    ),
    ("etcd null", "etcd:\n", None, ["group etcd", "empty group"]),
    ("group not mapping", "etcd: [1, 2]\n", None, ["group etcd", "must be a mapping"]),
    ("hosts not mapping", "etcd: { hosts: [10.0.0.1] }\n", None, ["group etcd: hosts", "mapping"]),
    ("vars not mapping", "etcd: { hosts: {10.0.0.1: }, vars: [x] }\n", None, ["group etcd: vars"]),
    (
        "unexpected key",
        "etcd: { host: { 10.0.0.1: } }\n",
        None,
        ["group etcd", "unexpected key 'host'"],
    ),
    (
        "host vars scalar",
        "etcd: { hosts: { 10.0.0.1: 5 } }\n",
        None,
        ["host 10.0.0.1", "vars must be a mapping"],
    ),
    (
        "group cycle",
        "a: { children: { b: { children: { a: } } } }\netcd: { hosts: {10.0.0.1: } }\n",
        None,
        ["group a", "its own ancestor"],
    ),
    (
        "host not ip",
        "etcd: { hosts: { etcd-1: { etcd_seq: 1 } } }\n",
        None,
        ["host etcd-1", "not an IP address"],
    ),
    (
        "numeric host key",
        "etcd: { hosts: { 167772161: { etcd_seq: 1 } } }\n",
        None,
        ["host 167772161", "not an IP address"],
    ),
    (
        "v4 leading zero",
        "etcd: { hosts: { 10.0.0.01: { etcd_seq: 1 } } }\n",
        None,
        ["host 10.0.0.01", "not an IP"],
    ),
    (
        "seq missing",
        "etcd: { hosts: { 10.0.0.1: } }\n",
        None,
        ["host 10.0.0.1", "etcd_seq is missing", "unique in the etcd group"],
    ),
    ("seq null", etcd_doc(host(A, etcd_seq=None)), None, ["host 10.0.0.1", "etcd_seq is null"]),
    (
        "seq text",
        etcd_doc(host(A, etcd_seq="one")),
        None,
        ["host 10.0.0.1", "etcd_seq is 'one'", "an integer >= 0"],
    ),
    ("seq bool", etcd_doc(host(A, etcd_seq=True)), None, ["etcd_seq is true"]),
    ("seq float", etcd_doc(host(A, etcd_seq=1.5)), None, ["etcd_seq is 1.5"]),
    ("seq negative", etcd_doc(host(A, etcd_seq=-1)), None, ["etcd_seq is -1"]),
    (
        "seq duplicate",
        etcd_doc(host(A, etcd_seq=1), host(B, etcd_seq=1)),
        None,
        ["host 10.0.0.2", "etcd_seq is 1, also used by host 10.0.0.1"],
    ),
    (
        "seq duplicate by -e",
        etcd_doc(host(A), host(B)),
        {"etcd_seq": 1},
        ["host 10.0.0.2", "etcd_seq (from -e) is 1, also used by host 10.0.0.1"],
    ),
    (
        "port zero",
        etcd_doc(host(A, etcd_port=0)),
        None,
        ["host 10.0.0.1", "etcd_port is 0", "1..65535"],
    ),
    (
        "port too big",
        etcd_doc(host(A), etcd_port=70000),
        None,
        ["host 10.0.0.1", "etcd_port is 70000"],
    ),
    ("peer port text", etcd_doc(host(A, etcd_peer_port="x")), None, ["etcd_peer_port is 'x'"]),
    (
        "ports equal",
        etcd_doc(host(A, etcd_port=2380)),
        None,
        [
            "host 10.0.0.1",
            "etcd_peer_port is 2380, the same as etcd_port (client and peer ports must differ)",
        ],
    ),
    (
        "ansible port",
        etcd_doc(host(A, ansible_port=0)),
        None,
        ["host 10.0.0.1", "ansible_port is 0", "1..65535"],
    ),
    (
        "port from -e",
        etcd_doc(host(A)),
        {"etcd_port": 0},
        ["host 10.0.0.1", "etcd_port (from -e) is 0"],
    ),
    (
        "jinja port",
        etcd_doc(host(A, etcd_port="{{ p }}")),
        None,
        ["etcd_port is a Jinja template (an integer 1..65535; Jinja templates are not evaluated)"],
    ),
    (
        "jinja password",
        etcd_doc(host(A), etcd_root_password="{{ vault_etcd }}"),
        None,
        ["host 10.0.0.1", "etcd_root_password is a Jinja template"],
    ),
    (
        "jinja ansible_host",
        etcd_doc(host(A, ansible_host="{% if x %}a{% endif %}")),
        None,
        ["host 10.0.0.1", "ansible_host is a Jinja template"],
    ),
    (
        "init unknown",
        etcd_doc(host(A, etcd_init="join")),
        None,
        ["host 10.0.0.1", "etcd_init is 'join'", "new or existing"],
    ),
    (
        "init from -e",
        etcd_doc(host(A)),
        {"etcd_init": "Existing"},
        ["etcd_init (from -e) is 'Existing'"],
    ),
    (
        "cluster charset",
        etcd_doc(host(A), etcd_cluster="etcd_1"),
        None,
        ["host 10.0.0.1", "etcd_cluster is 'etcd_1'", "letters, digits and '-'"],
    ),
    ("cluster empty", etcd_doc(host(A), etcd_cluster=""), None, ["etcd_cluster is ''"]),
    (
        "cluster differs",
        etcd_doc(host(A), host(B, etcd_cluster="other")),
        None,
        [
            "host 10.0.0.2",
            "etcd_cluster is 'other' but 'etcd' on host 10.0.0.1",
            "the same on every member",
        ],
    ),
    (
        "election zero",
        etcd_doc(host(A, etcd_election_timeout=0)),
        None,
        ["etcd_election_timeout is 0", "milliseconds"],
    ),
    (
        "election too long",
        etcd_doc(host(A, etcd_election_timeout=60000)),
        None,
        ["etcd_election_timeout is 60000", "1..50000"],
    ),
    (
        "heartbeat negative",
        etcd_doc(host(A, etcd_heartbeat_interval=-1)),
        None,
        ["etcd_heartbeat_interval is -1", "positive"],
    ),
    (
        "election < 5 heartbeats",
        etcd_doc(host(A, etcd_election_timeout=400, etcd_heartbeat_interval=100)),
        None,
        [
            "host 10.0.0.1",
            "etcd_election_timeout is 400, less than 5 × etcd_heartbeat_interval 100",
        ],
    ),
    (
        "heartbeat from -e",
        etcd_doc(host(A)),
        {"etcd_heartbeat_interval": 300},
        ["etcd_election_timeout is 1000, less than 5 × etcd_heartbeat_interval 300"],
    ),
    (
        "password empty",
        etcd_doc(host(A), etcd_root_password=""),
        None,
        ["host 10.0.0.1", "etcd_root_password is empty", "etcd does not support empty passwords"],
    ),
    (
        "password null",
        etcd_doc(host(A), etcd_root_password=None),
        None,
        ["etcd_root_password is null"],
    ),
    (
        "password list",
        etcd_doc(host(A), etcd_root_password=["a"]),
        None,
        ["etcd_root_password is a list"],
    ),
    (
        "password newline",
        etcd_doc(host(A), etcd_root_password="a\nb"),
        None,
        ["etcd_root_password has a line break"],
    ),
    (
        "password differs",
        etcd_doc(host(A), host(B, etcd_root_password="Other.Pass")),
        None,
        ["host 10.0.0.2", "etcd_root_password differs from the one of host 10.0.0.1"],
    ),
    (
        "password empty from -e",
        etcd_doc(host(A)),
        {"etcd_root_password": ""},
        ["etcd_root_password (from -e) is empty"],
    ),
    (
        "cert validity",
        etcd_doc(host(A), cert_validity="20y"),
        None,
        ["host 10.0.0.1", "cert_validity is '20y'", "7300d"],
    ),
    ("cert validity zero", etcd_doc(host(A), cert_validity="0d"), None, ["cert_validity is '0d'"]),
    (
        "data relative",
        etcd_doc(host(A), etcd_data="data/etcd"),
        None,
        ["host 10.0.0.1", "etcd_data is 'data/etcd'", "absolute"],
    ),
    ("data root", etcd_doc(host(A), etcd_data="/"), None, ["etcd_data is '/'"]),
    (
        "data dotdot",
        etcd_doc(host(A), etcd_data="/data/../etc"),
        None,
        ["etcd_data is '/data/../etc'"],
    ),
    (
        "data space",
        etcd_doc(host(A), etcd_data="/data/my etcd"),
        None,
        ["etcd_data is '/data/my etcd'"],
    ),
    (
        "bool word",
        etcd_doc(host(A), etcd_safeguard="maybe"),
        None,
        ["host 10.0.0.1", "etcd_safeguard is 'maybe'", "true or false"],
    ),
    ("bool number", etcd_doc(host(A), etcd_rm_data=2), None, ["etcd_rm_data is 2"]),
    (
        "bool from -e",
        etcd_doc(host(A)),
        {"etcd_learner": "sure"},
        ["etcd_learner (from -e) is 'sure'"],
    ),
    (
        "ssh args quote",
        etcd_doc(host(A, ansible_ssh_common_args="-o 'x")),
        None,
        ["host 10.0.0.1", "ansible_ssh_common_args cannot be split"],
    ),
    (
        "ssh strict value",
        etcd_doc(host(A, ansible_ssh_extra_args="-o StrictHostKeyChecking=maybe")),
        None,
        ["host 10.0.0.1", "ansible_ssh_extra_args sets StrictHostKeyChecking=maybe"],
    ),
    (
        "ssh dangling -o",
        etcd_doc(host(A, ansible_ssh_common_args="-C -o")),
        None,
        ["ansible_ssh_common_args ends with -o"],
    ),
    (
        "ssh option no value",
        etcd_doc(host(A, ansible_ssh_common_args="-o Compression")),
        None,
        ["-o option without a value"],
    ),
    ("ansible_host empty", etcd_doc(host(A, ansible_host="")), None, ["ansible_host is empty"]),
    (
        "pg cluster empty",
        pg_doc("10.0.0.9:", "pg_cluster: ''"),
        None,
        ["host 10.0.0.9", "pg_cluster is ''"],
    ),
    (
        "pg cluster charset",
        pg_doc("10.0.0.9:", "pg_cluster: 'pg test'"),
        None,
        ["host 10.0.0.9", "pg_cluster is 'pg test'"],
    ),
    (
        "pg host not ip",
        pg_doc("db1:", "pg_cluster: pg-a"),
        None,
        ["host db1", "not an IP address", "pg cluster pg-a"],
    ),
    (
        "pg namespace differs",
        pg_doc("10.0.0.8: , 10.0.0.9: {pg_namespace: /x}", "pg_cluster: pg-a"),
        None,
        ["host 10.0.0.9", "pg_namespace is '/x' but '/pg' on host 10.0.0.8", "pg cluster pg-a"],
    ),
    (
        "pg namespace relative",
        pg_doc("10.0.0.9:", "pg_cluster: pg-a, pg_namespace: pg"),
        None,
        ["host 10.0.0.9", "pg_namespace is 'pg'"],
    ),
    (
        "pg password differs",
        pg_doc(
            "10.0.0.8: , 10.0.0.9: {pg_etcd_password: b}", "pg_cluster: pg-a, pg_etcd_password: a"
        ),
        None,
        ["host 10.0.0.9", "pg_etcd_password differs from the one of host 10.0.0.8"],
    ),
    (
        "pg vip word",
        pg_doc("10.0.0.9:", "pg_cluster: pg-a, pg_vip_enabled: sometimes"),
        None,
        ["host 10.0.0.9", "pg_vip_enabled is 'sometimes'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "extra", "fragments"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_input_names_file_host_and_key(
    tmp_path: Path, text: str, extra: dict[str, Any] | None, fragments: list[str]
) -> None:
    error = load_error(tmp_path, text, extra)
    for fragment in fragments:
        assert fragment in error.message


def test_secret_values_never_appear_in_messages(tmp_path: Path) -> None:
    text = etcd_doc(
        host(A), host(B, etcd_root_password="Very.Secret"), etcd_root_password="Top.Secret"
    )
    error = load_error(tmp_path, text)
    everything = error.message + (error.details or "")
    assert "Secret" not in everything


def test_every_problem_is_reported_first_as_message_rest_as_details(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        etcd_doc(host(A, etcd_port=0), host(B, etcd_init="bogus", etcd_seq=1)),
    )
    assert "host 10.0.0.1: etcd_port is 0" in error.message
    assert error.details is not None
    lines = error.details.splitlines()
    assert any("host 10.0.0.2: etcd_init is 'bogus'" in line for line in lines)
    assert any("host 10.0.0.2: etcd_seq is 1, also used by host 10.0.0.1" in line for line in lines)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("etcd:\n  hosts: [\n", ["not valid YAML", "line 3"]),
        (
            "etcd:\n  hosts:\n    10.0.0.1: {etcd_seq: 1}\n   bad: indent\n",
            ["not valid YAML", "line 4"],
        ),
        ("a: 1\n---\nb: 2\n", ["not valid YAML"]),
    ],
)
def test_yaml_errors_name_the_line(tmp_path: Path, content: str, fragments: list[str]) -> None:
    error = load_error(tmp_path, content)
    for fragment in fragments:
        assert fragment in error.message


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(InputError, match=r"nope\.yml: no such file"):
        load_inventory(missing)
    with pytest.raises(InputError, match="is a directory"):
        load_inventory(tmp_path)
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00etcd")
    with pytest.raises(InputError, match="not UTF-8"):
        load_inventory(binary)
    assert InputError.exit_code == 1


# ---------------------------------------------------------------- pg clusters


def test_pg_clusters_fields(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        all:
          children:
            etcd: { hosts: { 10.0.0.1: { etcd_seq: 1 } } }
            pg-test:
              hosts:
                10.0.0.12: { pg_seq: 2, pg_role: replica }
                10.0.0.11: { pg_seq: 1, pg_role: primary, ansible_port: 2200 }
              vars:
                pg_cluster: pg-test
                pg_namespace: /service
                pg_etcd_password: 1234
                pg_vip_enabled: "yes"
            pg-meta:
              hosts: { 10.0.0.1: { pg_seq: 1, pg_role: primary } }
              vars: { pg_cluster: pg-meta }
        """,
    )
    meta, test = inv.pg_clusters
    assert (test.name, test.group, test.hosts) == ("pg-test", "pg-test", ("10.0.0.11", "10.0.0.12"))
    assert (test.namespace, test.etcd_password, test.vip_enabled) == ("/service", "1234", True)
    assert test.host_vars["10.0.0.11"]["pg_role"] == "primary"
    assert test.ssh["10.0.0.11"] == SshTarget(address="10.0.0.11", port=2200)
    assert (meta.name, meta.namespace, meta.etcd_password, meta.vip_enabled) == (
        "pg-meta",
        "/pg",
        "",
        False,
    )


def test_pg_clusters_set_per_host_like_citus(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        etcd: { hosts: { 10.0.0.1: { etcd_seq: 1 } } }
        nodes: { hosts: { 10.0.0.50: , 10.0.0.51: , 10.0.0.52: , 10.0.0.7: { pg_cluster: pg-x } } }
        pg-citus:
          hosts:
            10.0.0.51: { pg_cluster: pg-citus0 }
            10.0.0.50: { pg_cluster: pg-citus0 }
            10.0.0.52: { pg_cluster: pg-citus1 }
          vars: { pg_vip_enabled: true }
        """,
    )
    assert [(c.name, c.group, c.hosts, c.vip_enabled) for c in inv.pg_clusters] == [
        ("pg-citus0", "pg-citus", ("10.0.0.50", "10.0.0.51"), True),
        ("pg-citus1", "pg-citus", ("10.0.0.52",), True),
        ("pg-x", "nodes", ("10.0.0.7",), False),
    ]


# ---------------------------------------------------------------- limit


@pytest.fixture
def sop_inventory(tmp_path: Path) -> Inventory:
    return load(tmp_path, SOP)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (None, ["10.10.10.10", "10.10.10.11", "10.10.10.12"]),
        ("all", ["10.10.10.10", "10.10.10.11", "10.10.10.12"]),
        ("etcd", ["10.10.10.10", "10.10.10.11", "10.10.10.12"]),
        ("10.10.10.11", ["10.10.10.11"]),
        ("10.10.10.12,10.10.10.10", ["10.10.10.10", "10.10.10.12"]),
        (" 10.10.10.12 , 10.10.10.10 ,", ["10.10.10.10", "10.10.10.12"]),
        ("10.10.10.12:10.10.10.11", ["10.10.10.11", "10.10.10.12"]),
        (["10.10.10.12", "10.10.10.11,10.10.10.12"], ["10.10.10.11", "10.10.10.12"]),
        (("10.10.10.11", "all"), ["10.10.10.10", "10.10.10.11", "10.10.10.12"]),
    ],
)
def test_select(sop_inventory: Inventory, limit: Any, expected: list[str]) -> None:
    assert [m.ip for m in select(sop_inventory, limit)] == expected


@pytest.mark.parametrize(
    ("limit", "named"),
    [
        ("10.10.10.13", "'10.10.10.13'"),
        ("10.10.10.10,10.10.10.99", "'10.10.10.99'"),
        ("pg-meta", "'pg-meta'"),
        ("10.10.10.1x", "'10.10.10.1x'"),
        (["all", "10.0.0.1"], "'10.0.0.1'"),
    ],
)
def test_select_unknown_host(sop_inventory: Inventory, limit: Any, named: str) -> None:
    with pytest.raises(InputError) as info:
        select(sop_inventory, limit)
    assert info.value.message == (
        f"limit {named} names no host of the etcd group in {sop_inventory.path}"
    )


@pytest.mark.parametrize("limit", ["", " , ", []])
def test_select_empty_limit(sop_inventory: Inventory, limit: Any) -> None:
    with pytest.raises(InputError, match="limit is empty"):
        select(sop_inventory, limit)


def test_select_ipv6_is_not_split_on_colons(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        'etcd: { hosts: { "2001:db8::1": {etcd_seq: 1}, "2001:db8::2": {etcd_seq: 2} } }\n',
    )
    assert [m.ip for m in select(inv, "2001:DB8:0::2")] == ["2001:db8::2"]
    assert [m.ip for m in select(inv, "[2001:db8::1],2001:db8::2")] == [
        "2001:db8::1",
        "2001:db8::2",
    ]


# ---------------------------------------------------------------- masking


def test_masked_vars_of_member(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        SOP
        + """
all:
  vars:
    etcd_root_password: Top.Secret
    pg_etcd_password: ''
    ansible_become_password: sudo-pw
    minio_secret_key: minio-secret
    cipher_pass: aes
    pg_users:
      - { name: dbuser_meta, password: DBUser.Meta }
    apps: { pgadmin: { conf: { PGADMIN_DEFAULT_PASSWORD: pigsty, EMAIL: a@b.c } } }
    region: china
""",
    )
    member = inv.members[0]
    masked = masked_vars(member)
    assert masked["etcd_root_password"] == MASK
    assert masked["ansible_become_password"] == MASK
    assert masked["minio_secret_key"] == MASK
    assert masked["cipher_pass"] == MASK
    assert masked["pg_etcd_password"] == ""  # empty: nothing to hide, and worth seeing
    assert masked["pg_users"] == [{"name": "dbuser_meta", "password": MASK}]
    assert masked["apps"]["pgadmin"]["conf"] == {"PGADMIN_DEFAULT_PASSWORD": MASK, "EMAIL": "a@b.c"}
    assert masked["region"] == "china"
    assert masked["etcd_seq"] == 1
    # the member itself is untouched
    assert member.vars["etcd_root_password"] == "Top.Secret"
    assert member.vars["pg_users"][0]["password"] == "DBUser.Meta"


def test_masked_vars_of_mapping_handles_shared_and_cyclic_values() -> None:
    shared = {"password": "x", "user": "u"}
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    masked = masked_vars({"a": shared, "b": shared, "c": cyclic, "ansible_ssh_pass": "p", 7: 1})
    assert masked["a"] == masked["b"] == {"password": MASK, "user": "u"}
    assert masked["ansible_ssh_pass"] == MASK
    assert masked["c"][0] is masked["c"]
    assert masked["7"] == 1
    assert shared["password"] == "x"


# ---------------------------------------------------------------- Pigsty's own files


PIGSTY_FILES = [
    (
        "pigsty-meta.yml",
        [("10.10.10.10", 1)],
        [("pg-meta", "pg-meta", ("10.10.10.10",), False)],
    ),
    (
        "pigsty-trio.yml",
        [("10.10.10.10", 1), ("10.10.10.11", 2), ("10.10.10.12", 3)],
        [("pg-meta", "pg-meta", ("10.10.10.10", "10.10.10.11", "10.10.10.12"), True)],
    ),
    (
        "pigsty-v2-default.yml",
        [("10.10.10.10", 1)],
        [
            ("pg-meta", "pg-meta", ("10.10.10.10",), False),
            ("pg-test", "pg-test", ("10.10.10.11", "10.10.10.12", "10.10.10.13"), False),
        ],
    ),
    (
        "pigsty-simu.yml",
        [(f"10.10.10.2{i}", i) for i in range(1, 6)],
        [  # sorted by name; the citus clusters set pg_cluster per host
            *[
                (
                    f"pg-citus{g}",
                    "pg-citus",
                    (f"10.10.10.{50 + 2 * g}", f"10.10.10.{51 + 2 * g}"),
                    True,
                )
                for g in range(5)
            ],
            ("pg-dst", "pg-dst", ("10.10.10.48", "10.10.10.49"), True),
            ("pg-meta", "pg-meta", ("10.10.10.10", "10.10.10.11"), True),
            ("pg-pitr", "pg-pitr", ("10.10.10.40",), False),
            ("pg-src", "pg-src", ("10.10.10.45", "10.10.10.46", "10.10.10.47"), True),
            ("pg-test", "pg-test", tuple(f"10.10.10.4{i}" for i in range(1, 5)), True),
            *[(f"pg-v{v}", f"pg-v{v}", (f"10.10.10.{v}",), False) for v in range(12, 18)],
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "members", "clusters"), PIGSTY_FILES, ids=[f[0] for f in PIGSTY_FILES]
)
def test_pigsty_shipped_inventories(
    name: str,
    members: list[tuple[str, int]],
    clusters: list[tuple[str, str, tuple[str, ...], bool]],
) -> None:
    inv = load_inventory(DATA / name)
    assert [(m.ip, m.seq) for m in inv.members] == members
    assert {(m.cluster, m.port, m.peer_port, m.safeguard) for m in inv.members} == {
        ("etcd", 2379, 2380, False)
    }
    assert {(m.root_password, m.cert_validity_days, m.data_dir) for m in inv.members} == {
        ("Etcd.Root", 7300, "/data/etcd")
    }
    got = [(c.name, c.group, c.hosts, c.vip_enabled) for c in inv.pg_clusters]
    assert got == clusters
    assert {c.namespace for c in inv.pg_clusters} == {"/pg"}


def test_pigsty_all_vars_are_kept(tmp_path: Path) -> None:
    inv = load_inventory(DATA / "pigsty-v2-default.yml")
    values = inv.members[0].vars
    assert len(values) > 200
    assert values["etcd_api"] == 2  # Pigsty's all.vars beat our role default
    assert values["patroni_watchdog_mode"] is False  # `off` from group infra, a YAML bool
    assert values["pg_services"][0]["name"] == "primary"


def test_pigsty_with_extra_vars_like_bin_etcd_add() -> None:
    extra = parse_extra_vars(["etcd_init=existing"], Path.cwd())
    inv = load_inventory(DATA / "pigsty-trio.yml", extra)
    chosen = select(inv, "10.10.10.12")
    assert [(m.name, m.init) for m in chosen] == [("etcd-3", "existing")]


def test_large_inventory_resolves_every_cluster(tmp_path: Path) -> None:
    # 600 pg clusters behind a `nodes` group, the shape that once took minutes (a
    # quadratic walk); its load time is measured by bench/bench_inventory.py, not here.
    path = write(tmp_path, yaml.safe_dump(large_inventory(600)))
    inv = load_inventory(path)
    assert len(inv.pg_clusters) == 600
    assert {c.group for c in inv.pg_clusters} == {f"pg-c{i}" for i in range(600)}
    assert len(inv.members) == 5


def large_inventory(clusters: int) -> dict[str, Any]:
    children: dict[str, Any] = {
        "etcd": {"hosts": {f"10.0.0.{i}": {"etcd_seq": i} for i in range(1, 6)}},
        "nodes": {"hosts": {}},
    }
    for index in range(clusters):
        hosts = {f"10.{1 + index // 200}.{index % 200}.{j}": {"pg_seq": j} for j in (1, 2, 3)}
        children[f"pg-c{index}"] = {"hosts": hosts, "vars": {"pg_cluster": f"pg-c{index}"}}
        children["nodes"]["hosts"].update(dict.fromkeys(hosts))
    return {"all": {"children": children, "vars": {f"key{i}": i for i in range(300)}}}


# ---------------------------------------------------------------- infra hosts


def test_infra_hosts_of_pigsty_files() -> None:
    data = Path(__file__).parent / "data" / "inventory"
    simu = load_inventory(data / "pigsty-simu.yml")
    assert [h.name for h in simu.infra_hosts] == ["10.10.10.10", "10.10.10.11"]
    meta = load_inventory(data / "pigsty-meta.yml")
    assert [h.name for h in meta.infra_hosts] == ["10.10.10.10"]


def test_infra_hosts_connection_vars_and_no_infra_group(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        """
        all:
          children:
            infra:
              hosts: { mon.example: { ansible_port: 2222 } }
              vars: { ansible_user: ops }
            etcd: { hosts: { 10.10.10.10: { etcd_seq: 1 } } }
          vars: { ansible_host_key_checking: false }
        """,
    )
    assert [(h.name, h.ssh) for h in inv.infra_hosts] == [
        ("mon.example", SshTarget(address="mon.example", port=2222, user="ops"))
    ]
    assert load(tmp_path, SOP).infra_hosts == ()


# ---------------------------------------------------------------- group_vars/ and host_vars/

TRIO_FILE = """
all:
  children:
    etcd:
      hosts:
        10.10.10.10: { etcd_seq: 1, etcd_rm_data: true }
        10.10.10.11: { etcd_seq: 2 }
      vars: { etcd_cluster: etcd, etcd_safeguard: false, etcd_port: 2379 }
  vars: { etcd_learner: false }
"""


def put(tmp_path: Path, relative: str, text: str) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_var_dirs_follow_ansibles_precedence(tmp_path: Path) -> None:
    put(tmp_path, "group_vars/all/main.yml", "etcd_safeguard: true\netcd_learner: true\n")
    put(tmp_path, "group_vars/all/z-later.yaml", "etcd_learner: false\n")
    put(tmp_path, "group_vars/all/.hidden.yml", "etcd_cluster: hidden\n")
    put(tmp_path, "group_vars/etcd.yml", "etcd_root_password: From.Group.Vars\netcd_port: 2479\n")
    put(tmp_path, "group_vars/pgsql.yml", "etcd_port: 1\n")  # not a group of these hosts
    put(tmp_path, "host_vars/10.10.10.10", "etcd_rm_data: false\n")
    put(tmp_path, "host_vars/10.10.10.11.json", '{"etcd_port": 2579}')
    inv = load(tmp_path, TRIO_FILE)
    first, second = inv.members
    # group_vars/all beats the group's vars in the file (Ansible's VARIABLE_PRECEDENCE).
    assert (first.safeguard, first.learner, first.cluster) == (True, False, "etcd")
    assert (first.root_password, first.port, first.rm_data) == ("From.Group.Vars", 2479, False)
    assert (second.port, second.rm_data) == (2579, True)
    assert load(tmp_path, TRIO_FILE, {"etcd_port": 2679}).members[1].port == 2679


def test_var_dir_errors_name_the_file(tmp_path: Path) -> None:
    put(tmp_path, "host_vars/10.10.10.11.yml", "etcd_seq: -2\n")
    error = load_error(tmp_path, TRIO_FILE)
    assert "host 10.10.10.11: etcd_seq (from host_vars/10.10.10.11.yml)" in error.message

    put(tmp_path, "host_vars/10.10.10.11.yml", "etcd_seq: [1\n")
    with pytest.raises(InputError, match=r"host_vars/10.10.10.11.yml: not valid YAML: line 2"):
        load(tmp_path, TRIO_FILE)

    put(tmp_path, "host_vars/10.10.10.11.yml", "- etcd_seq\n")
    with pytest.raises(InputError, match=r"10.10.10.11.yml: must be a mapping of variables"):
        load(tmp_path, TRIO_FILE)

    (tmp_path / "host_vars/10.10.10.11.yml").unlink()
    put(tmp_path, "group_vars/all/vault.yml", "$ANSIBLE_VAULT;1.1;AES256\n6162636465\n")
    with pytest.raises(InputError, match=r"group_vars/all/vault.yml: encrypted with ansible-vault"):
        load(tmp_path, TRIO_FILE)


def test_quota_backend_bytes_default_override_and_bad_values(tmp_path: Path) -> None:
    from etcdsop.render import PeerRef, render_etcd_conf

    assert load(tmp_path, LAYERED).members[0].quota_backend_bytes == 8 * 1024**3
    small = load(tmp_path, LAYERED, {"etcd_quota_backend_bytes": "16777216"}).members[0]
    conf = render_etcd_conf(small, [PeerRef(small.name, small.peer_url)], "new").decode()
    assert "\nquota-backend-bytes: 16777216\n" in conf
    for bad in (0, 1024, "8GiB", True):
        error = load_error(tmp_path, LAYERED, {"etcd_quota_backend_bytes": bad})
        assert "etcd_quota_backend_bytes" in error.message and "bytes, an integer" in error.message
