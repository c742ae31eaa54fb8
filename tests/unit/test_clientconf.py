"""The line-based editors of Patroni and vip-manager configs: data-driven cases."""

from __future__ import annotations

import pytest
import yaml

from etcdsop.clients.confedit import (
    MASK,
    ClientConfError,
    EtcdAccess,
    edit_patroni,
    edit_vip,
    mask_secrets,
    top_level_blocks,
    yaml_quote,
    yaml_scalar,
)

ACCESS = EtcdAccess(
    hosts=("10.0.0.2:2379", "10.0.0.3:2379"),
    cacert="/etc/etcd-client/ca.crt",
    cert="/etc/etcd-client/client.crt",
    key="/etc/etcd-client/client.key",
    username="pg-test",
    password="it's: a #secret",
)
ETCD3 = ACCESS.patroni_etcd3()
BODY = "  hosts: '10.0.0.1:2379'\n  protocol: https\n  username: pg-test\n  password: old\n"

PATRONI = """\
# Patroni of pg-test-1
scope: pg-test
namespace: /pg/
name: pg-test-1

# the DCS
etcd3:
  hosts: '10.0.0.1:2379'
  protocol: https
  username: pg-test
  password: old

# bootstrap settings
bootstrap:
  dcs: {ttl: 30}   # keep
postgresql:
  listen: 0.0.0.0:5432
"""


def _edit(text: str, **kw: str) -> str:
    args = {"scope": "pg-test", "namespace": "/pg", **kw}
    return edit_patroni(text.encode(), ETCD3, **args).decode()


def test_patroni_replaces_only_the_etcd3_block() -> None:
    new = _edit(PATRONI)
    before, after = PATRONI.split("etcd3:\n")[0], PATRONI.split("# bootstrap settings")[1]
    assert new.startswith(before + "etcd3:\n")
    assert new.endswith("\n# bootstrap settings" + after)
    conf = yaml.safe_load(new)
    assert conf["etcd3"] == ETCD3
    assert conf["etcd3"]["password"] == "it's: a #secret"
    assert {k: v for k, v in conf.items() if k != "etcd3"} == {
        k: v for k, v in yaml.safe_load(PATRONI).items() if k != "etcd3"
    }


def test_patroni_unchanged_when_already_right_is_byte_identical() -> None:
    once = _edit(PATRONI)
    assert _edit(once) == once


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "four-space indent",
            PATRONI.replace("\n  hosts", "\n    hosts")
            .replace("\n  protocol", "\n    protocol")
            .replace("\n  username", "\n    username")
            .replace("\n  password", "\n    password"),
        ),
        (
            "flow mapping",
            PATRONI.replace(
                "etcd3:\n  hosts: '10.0.0.1:2379'\n  protocol: https\n  username: pg-test\n"
                "  password: old\n",
                "etcd3: {hosts: '10.0.0.1:2379', protocol: https}\n",
            ),
        ),
        ("header comment", PATRONI.replace("etcd3:\n", "etcd3:   # dcs\n")),
        ("quoted key", PATRONI.replace("etcd3:\n", '"etcd3":\n')),
        ("last block, no final newline", PATRONI.split("\n# bootstrap")[0].rstrip("\n")),
        ("crlf", PATRONI.replace("\n", "\r\n")),
        (
            "indented comment inside",
            PATRONI.replace("  password: old\n", "  # note\n  password: old\n"),
        ),
        ("column-0 comment inside", PATRONI.replace("  password: old\n", "# x\n  password: old\n")),
        (
            "keys it does not own kept",
            PATRONI.replace("  password: old\n", "  password: old\n  key_password: k\n"),
        ),
        (
            "empty etcd3",
            PATRONI.replace(BODY, ""),
        ),
        ("document start", "---\n" + PATRONI),
    ],
)
def test_patroni_layouts(name: str, text: str) -> None:
    new = _edit(text)
    conf = yaml.safe_load(new)
    old = yaml.safe_load(text)
    assert conf["etcd3"] == {**(old["etcd3"] or {}), **ETCD3}, name
    assert {k: v for k, v in conf.items() if k != "etcd3"} == {
        k: v for k, v in old.items() if k != "etcd3"
    }
    # Outside the block, every line is kept.
    for line in text.splitlines():
        if not line.startswith((" ", "#", "etcd3", '"etcd3"')) and line.strip():
            assert line in new.splitlines(), (name, line)
    if "\r\n" in text:
        assert "\n" not in new.replace("\r\n", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scope: pg-test\nnamespace: /pg\netcd3: [unclosed\n", "not valid YAML at line"),
        ("", "is empty"),
        ("- a\n- b\n", "not a mapping"),
        ("scope: pg-test\nnamespace: /pg\n", "has no etcd3: section"),
        ("scope: pg-test\nnamespace: /pg\netcd3: x\n", "not a mapping"),
        ("scope: pg-test\nnamespace: /pg\netcd3: {}\netcd: {}\n", "etcd: section besides"),
        ("scope: other\nnamespace: /pg\netcd3: {}\n", "scope is 'other'"),
        ("scope: pg-test\netcd3: {}\n", "namespace is '/service'"),
        ("scope: pg-test\nnamespace: /pg\netcd3: {}\netcd3: {}\n", "appears 2 times"),
        ("scope: pg-test\nnamespace: /pg\netcd3: {url: 'x:1'}\n", "endpoints with url:"),
        (
            "scope: pg-test\nnamespace: /pg\netcd3: &e {}\nother: *e\n",
            "left as it was",  # the alias would change with it
        ),
    ],
)
def test_patroni_refusals(text: str, message: str) -> None:
    with pytest.raises(ClientConfError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _edit(text)


PIGSTY_V4 = """\
namespace: /pg/
name: pg-test-1
scope: pg-test   # common pgsql cluster

#--------------------------------------------------------------#
# etcd
#--------------------------------------------------------------#
etcd3:
  hosts: '10.0.0.1:2379,10.0.0.9:2379'
  cacert: /pg/cert/ca.crt
  cert:   /pg/cert/server.crt
  key:    /pg/cert/server.key   # dbsu only
  protocol: https
  key_password: 'Key.Pw'
  # no proxy
  use_proxies: false
  username: 'pg-test'
  password: 'Old.Pw'

ctl:
  insecure: true
"""


def test_patroni_pigsty_v4_only_changed_lines_keep_their_layout() -> None:
    access = EtcdAccess(
        hosts=("10.0.0.2:2379", "10.0.0.3:2379"),
        cacert="/pg/cert/ca.crt",
        cert="/pg/cert/server.crt",
        key="/pg/cert/server.key",
        username="pg-test",
        password="New.Pw",
    )
    new = edit_patroni(
        PIGSTY_V4.encode(), access.patroni_etcd3(), scope="pg-test", namespace="/pg"
    ).decode()
    assert new == PIGSTY_V4.replace(
        "'10.0.0.1:2379,10.0.0.9:2379'", "'10.0.0.2:2379,10.0.0.3:2379'"
    ).replace("'Old.Pw'", "New.Pw")
    # The password alone kept (None): only the hosts line changes.
    keep = edit_patroni(
        PIGSTY_V4.encode(),
        {**access.patroni_etcd3(), "password": None},
        scope="pg-test",
        namespace="/pg",
    ).decode()
    assert "  password: 'Old.Pw'\n" in keep and "'10.0.0.2:2379,10.0.0.3:2379'" in keep


def test_patroni_hosts_list_stays_a_list() -> None:
    text = PIGSTY_V4.replace("  hosts: '10.0.0.1:2379,10.0.0.9:2379'\n", "  hosts:\n  - a:1\n")
    conf = yaml.safe_load(_edit(text))
    assert conf["etcd3"]["hosts"] == ["10.0.0.2:2379", "10.0.0.3:2379"]
    assert conf["etcd3"]["key_password"] == "Key.Pw"


def test_patroni_not_utf8() -> None:
    with pytest.raises(ClientConfError, match="not UTF-8"):
        edit_patroni(b"scope: \xff\n", ETCD3, scope="pg-test", namespace="/pg")


VIP = """\
# vip-manager
ip: 10.0.0.99
trigger-key: "/pg/pg-test/leader"
dcs-type: etcd
dcs-endpoints:
  - https://10.0.0.1:2379
etcd-user: pg-test   # user
etcd-password: old
interval: 1000
"""


@pytest.mark.parametrize(
    "text",
    [
        VIP,
        VIP.replace("  - https", "- https"),  # sequence at column 0
        VIP.replace("dcs-endpoints:\n  - https://10.0.0.1:2379\n", "dcs-endpoints: a,b\n"),
        VIP.replace("etcd-password: old\n", ""),  # missing key: appended
        VIP.replace("dcs-type: etcd\n", "").rstrip("\n"),  # no final newline
        VIP.replace("dcs-type: etcd\n", "dcs-type: etcd3\n"),  # vip-manager 2.x accepts it
    ],
)
def test_vip_edits_only_its_keys(text: str) -> None:
    new = edit_vip(text.encode(), ACCESS.vip_settings()).decode()
    conf = yaml.safe_load(new)
    for key, value in ACCESS.vip_settings().items():
        assert conf[key] == value
    assert conf["trigger-key"] == "/pg/pg-test/leader"
    assert conf["interval"] == 1000
    assert new.startswith("# vip-manager\nip: 10.0.0.99\n")
    assert edit_vip(new.encode(), ACCESS.vip_settings()).decode() == new


def test_vip_keeps_unchanged_keys_byte_identical() -> None:
    settings = {**ACCESS.vip_settings(), "etcd-user": "pg-test"}
    new = edit_vip(VIP.encode(), settings).decode()
    assert "etcd-user: pg-test   # user\n" in new


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dcs-type: consul\n", "dcs-type is 'consul'"),
        ("ip: [\n", "not valid YAML"),
        ("etcd-user: a\netcd-user: b\n", "appears 2 times"),
    ],
)
def test_vip_refusals(text: str, message: str) -> None:
    with pytest.raises(ClientConfError, match=message):
        edit_vip(text.encode(), ACCESS.vip_settings())


def test_blocks_skip_trailing_blank_and_comment_lines() -> None:
    lines = PATRONI.splitlines(keepends=True)
    (block,) = top_level_blocks(lines)["etcd3"]
    assert lines[block.start] == "etcd3:\n"
    assert lines[block.end - 1] == "  password: old\n"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("plain", "'plain'"), ("it's", "'it''s'"), ("a: #b", "'a: #b'"), ("", "''")],
)
def test_yaml_quote_round_trips(value: str, quoted: str) -> None:
    assert yaml_quote(value) == quoted
    assert yaml.safe_load(f"k: {quoted}") == {"k": value}


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("https", "https"),
        ("/etc/etcd-client/ca.crt", "/etc/etcd-client/ca.crt"),
        ("pg-test", "pg-test"),
        ("10.0.0.1:2379,10.0.0.2:2379", "'10.0.0.1:2379,10.0.0.2:2379'"),
        ("true", "'true'"),
        ("123", "'123'"),
        ("1e3", "'1e3'"),  # a float to YAML 1.2 parsers (vip-manager is Go)
        ("Y", "'Y'"),
        (".inf", "'.inf'"),
        ("null", "'null'"),
        ("-x", "'-x'"),
        ("a b", "'a b'"),
    ],
)
def test_yaml_scalar_is_plain_only_when_safe(value: str, written: str) -> None:
    assert yaml_scalar(value) == written
    assert yaml.safe_load(f"k: {written}") == {"k": value}


def test_yaml_quote_refuses_control_characters() -> None:
    with pytest.raises(ClientConfError):
        yaml_quote("a\nb")


def test_mask_secrets_in_diffs() -> None:
    diff = (
        "-  password: old-one\n+  password: 'it''s: a #secret'\n etcd-password: x\n"
        "   key: /etc/etcd-client/client.key\n scope: pg-test\n hint Hunter2 here\n"
    )
    masked = mask_secrets(diff, ["Hunter2"])
    assert "old-one" not in masked and "secret" not in masked and "Hunter2" not in masked
    assert f"-  password: {MASK}\n" in masked
    assert f" etcd-password: {MASK}\n" in masked
    assert "   key: /etc/etcd-client/client.key\n" in masked
    assert " scope: pg-test\n" in masked


def test_mask_secrets_in_flow_style() -> None:
    text = "-etcd3: {hosts: 'a:1', password: Old.Pw, username: u}\n+x: {'password': 'N,ew'}\n"
    masked = mask_secrets(text)
    assert "Old.Pw" not in masked and "N,ew" not in masked
    assert f"password: {MASK}, username: u}}" in masked


def test_vip_pigsty_file_with_document_markers_and_no_user() -> None:
    """Pigsty 3.x: `---`/`...` markers, the etcd user commented out: the keys go in before
    `...`, URLs stay plain as Pigsty writes them."""
    text = (
        "---\ninterval: 1000\ndcs-type: etcd\ndcs-endpoints:\n  - https://10.0.0.1:2379\n"
        '#etcd-user: "patroni"\nverbose: false\n...\n'
    )
    new = edit_vip(text.encode(), ACCESS.vip_settings()).decode()
    assert new.endswith("etcd-key-file: /etc/etcd-client/client.key\n...\n")
    assert "  - https://10.0.0.2:2379\n  - https://10.0.0.3:2379\n" in new
    assert yaml.safe_load(new)["etcd-user"] == "pg-test"
