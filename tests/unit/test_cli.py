"""The CLI layer: exit codes, one-line errors, masked output; no host is contacted.

Inventories here name hosts in 198.18.99.0/24, a test range nothing answers on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etcdsop.cli import app

runner = CliRunner()

INVENTORY = """\
etcd:
  hosts:
    198.18.99.11: { etcd_seq: 1 }
    198.18.99.12: { etcd_seq: 2, etcd_safeguard: true }
  vars: { etcd_cluster: meta, etcd_root_password: 'Very.Secret.1' }
pg-test:
  hosts:
    198.18.99.21: { pg_seq: 1, pg_role: primary }
  vars: { pg_cluster: pg-test, pg_etcd_password: 'Pg.Secret.2' }
infra:
  hosts: { 198.18.99.31: {} }
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "pigsty.yml"
    path.write_text(INVENTORY)
    return path


def test_inventory_json_masks_secrets(inventory: Path) -> None:
    result = runner.invoke(app, ["inventory", "-i", str(inventory), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [m["name"] for m in data["members"]] == ["meta-1", "meta-2"]
    assert data["members"][0]["peer_url"] == "https://198.18.99.11:2380"
    assert data["members"][0]["vars"]["etcd_root_password"] == "******"
    assert data["pg_clusters"][0]["name"] == "pg-test"
    assert data["infra_hosts"] == ["198.18.99.31"]
    assert "Very.Secret.1" not in result.output and "Pg.Secret.2" not in result.output


def test_extra_vars_override_inventory(inventory: Path) -> None:
    result = runner.invoke(
        app,
        ["inventory", "-i", str(inventory), "--json", "-e", "etcd_port=3379", "-l", "198.18.99.12"],
    )
    assert result.exit_code == 0, result.output
    members = json.loads(result.stdout)["members"]
    assert [m["client_url"] for m in members] == ["https://198.18.99.12:3379"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["create", "-l", "198.18.99.99"], "198.18.99.99"),
        (["create", "-e", "etcd_init=maybe"], "etcd_init"),
        (["add", "198.18.99.40", "-y"], "198.18.99.40"),
        (["add", "999.1.1.1", "-y"], "999.1.1.1"),
        (["rm", "not-an-ip", "-y"], "not-an-ip"),
        (["promote", "198.18.99.77"], "198.18.99.77"),
        (["recover", "--from", "198.18.99.41", "-y"], "--from 198.18.99.41: not a host"),
        (["status", "-e", "etcd_port=0"], "etcd_port"),
    ],
)
def test_bad_input_is_one_line_exit_1(inventory: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, [*args, "-i", str(inventory)])
    assert result.exit_code == 1, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1


def test_missing_inventory_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    result = runner.invoke(app, ["create", "-i", str(missing)])
    assert result.exit_code == 1
    assert f"-i {missing}: no such file" in result.output and "Traceback" not in result.output


def test_no_inventory_says_where_it_looked_and_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ETCDSOP_INVENTORY", raising=False)
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    line = " ".join(result.output.split())  # Rich may wrap the line
    assert "the default pigsty.yml: no such file" in line
    assert str(tmp_path / "pigsty.yml") in line
    assert "-i FILE" in line and "ETCDSOP_INVENTORY=FILE" in line
    assert result.output.count("error:") == 1

    monkeypatch.setenv("ETCDSOP_INVENTORY", str(tmp_path / "env.yml"))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert f"ETCDSOP_INVENTORY={tmp_path / 'env.yml'}: no such file" in " ".join(
        result.output.split()
    )


@pytest.mark.parametrize(
    "args",
    [["rm", "10.0.0.x", "-y"], ["add", "198.18.99.11", "etcd-2", "-y"], ["promote", "host1"]],
)
def test_an_ip_argument_that_is_no_ip_is_named_before_the_inventory_is_read(
    tmp_path: Path, args: list[str]
) -> None:
    broken = tmp_path / "pigsty.yml"
    broken.write_text("etcd: [unclosed\n")  # reading it would be an error of its own
    result = runner.invoke(app, [*args, "-i", str(broken)])
    assert result.exit_code == 1
    bad = next(a for a in args[1:] if a not in ("-y", "198.18.99.11"))
    assert f"'{bad}' is not an IP address" in result.output
    assert "YAML" not in result.output and result.output.count("error:") == 1


def test_safeguard_refuses_rm_before_any_host_is_touched(inventory: Path) -> None:
    result = runner.invoke(app, ["rm", "198.18.99.12", "-y", "-i", str(inventory)])
    assert result.exit_code == 3
    assert "meta-2" in result.output and "-e etcd_safeguard=false" in result.output
    result = runner.invoke(app, ["rm", "-y", "-i", str(inventory)])  # destroy: same guard
    assert result.exit_code == 3


def test_help_lists_every_command() -> None:
    expected = {"create", "add", "promote", "rm", "status", "inventory", "reload", "rbac"}
    expected |= {"env", "sandbox", "log"}
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1].splitlines()
    listed = {line.split()[0] for line in commands if line.startswith("  ")}
    assert expected <= listed, expected - listed


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status", "--watch", "--json"], "cannot be combined with --json"),
        (["status", "5"], "add --watch"),
        (["status", "--watch", "0"], "between 0.2 and 3600"),
    ],
)
def test_status_watch_misuse_is_one_line_exit_1_before_the_inventory(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = runner.invoke(app, [*args, "-i", str(tmp_path / "absent.yml")])
    assert result.exit_code == 1
    assert needle in result.output and "absent.yml" not in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["backup", "--keep", "0"],  # out of range
        ["status", "--no-such-option"],
        ["rbac", "sync", "--no-such-option"],  # a nested group's command
        ["sandbox", "up", "0"],
        ["no-such-command"],
    ],
)
def test_a_usage_mistake_is_an_input_error_exit_1(args: list[str]) -> None:
    # click's own code for these is 2, which here means "a cluster operation failed".
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(
    ("path", "says"), [("/dev/null", "not a regular file"), ("/no/such.db", "no such file")]
)
def test_restore_of_what_is_not_a_snapshot_file_is_named(
    inventory: Path, path: str, says: str
) -> None:
    result = runner.invoke(app, ["restore", path, "-i", str(inventory), "-y"])
    assert result.exit_code == 1
    assert f"restore: {path}: {says}" in result.output
