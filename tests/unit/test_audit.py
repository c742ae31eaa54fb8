"""The audit trail and the admin-node lock: pure parts and real files, no hosts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import typer.main

from etcdsop import audit
from etcdsop.cli import app
from etcdsop.errors import GuardRefused
from etcdsop.lock import FileLock, Holder


def test_secret_assignments_are_masked_and_nothing_else() -> None:
    argv = ["etcdsop", "create", "-e", "etcd_root_password=Top.Secret", "-e", "etcd_seq=3"]
    argv += ["-e", "pg_etcd_password=x=y", "-i", "pigsty.yml"]
    assert audit.masked_argv(argv) == [
        "etcdsop",
        "create",
        "-e",
        "etcd_root_password=******",
        "-e",
        "etcd_seq=3",
        "-e",
        "pg_etcd_password=******",
        "-i",
        "pigsty.yml",
    ]


SECRET = "Top.Secret-9"
# Every way click hands `etcd_root_password=SECRET` (or a mapping holding it) to -e.
FORMS = [
    ["-e", f"etcd_root_password={SECRET}"],
    [f"-eetcd_root_password={SECRET}"],
    ["--extra-vars", f"etcd_root_password={SECRET}"],
    [f"--extra-vars=etcd_root_password={SECRET}"],
    ["-ye", f"etcd_root_password={SECRET}"],  # flags clustered before -e
    [f"-yeetcd_root_password={SECRET}"],
    ["-e", f"etcd_seq=3 etcd_root_password='{SECRET}' etcd_cluster=etcd"],
    ["-e", f"etcd_root_password={SECRET}", "-e", "etcd_seq=3"],
    ["-e", f'{{"etcd_root_password": "{SECRET}"}}'],
    [f'--extra-vars={{"etcd_root_password": "{SECRET}"}}'],
    ["-e", f"{{etcd_root_password: {SECRET}, etcd_seq: 3}}"],
    [f"-e{{pg_etcd_password: {SECRET}}}"],
    ["-e", f"{{nested: {{ansible_become_pass: {SECRET}}}}}"],
    ["-e", f"my_vault_secret={SECRET}"],
]


def _parsed_extra_vars(words: list[str]) -> list[str]:
    """What the real command tree gives `rm` for -e, parsing these words."""
    # Typer may carry its own copy of click: the objects are used, not click's types.
    command = typer.main.get_command(app).commands["rm"]  # type: ignore[attr-defined]
    return list(command.make_context("rm", [*words, "10.0.0.1"]).params["extra_vars"])


@pytest.mark.parametrize("words", FORMS, ids=lambda w: " ".join(w)[:40])
def test_every_form_click_accepts_is_masked(words: list[str]) -> None:
    # click accepts it and hands the secret on (so it is a form worth masking) ...
    assert SECRET in " ".join(_parsed_extra_vars(words))
    masked = audit.masked_argv(["etcdsop", "rm", *words, "10.0.0.1"])
    # ... the masked line keeps no trace of it, and parses to the same shape.
    assert SECRET not in " ".join(masked), masked
    assert "******" in " ".join(_parsed_extra_vars(masked[2:-1]))
    assert masked[-1] == "10.0.0.1"


def test_options_with_values_are_not_mistaken_for_e() -> None:
    # -i takes a value: in `-ie X`, "e" is the inventory, X a plain word.
    assert audit.masked_argv(["-ie", "x=1", "-l", "etcd_seq=3"]) == [
        "-ie",
        "x=1",
        "-l",
        "etcd_seq=3",
    ]
    # An @file names a file: shown; a value that cannot be read is hidden whole if it
    # names a secret.
    assert audit.masked_argv(["-e", "@vault.yml"]) == ["-e", "@vault.yml"]
    assert audit.masked_argv(["-e", "{etcd_root_password: [x"]) == ["-e", "******"]
    assert audit.masked_argv(["-e", "etcd_seq=3"]) == ["-e", "etcd_seq=3"]


def test_the_option_table_matches_the_real_command_tree() -> None:
    """audit's list of short options that take a value, and -e's names, are the CLI's."""
    takes_value: set[str] = set()
    extra: set[tuple[str, ...]] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            if param.param_type_name == "option" and not param.is_flag:
                takes_value.update(o[1] for o in param.opts if len(o) == 2)
                if param.name == "extra_vars":
                    extra.add(tuple(sorted(param.opts)))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    assert takes_value == set(audit.VALUE_SHORT)
    assert extra == {(audit.EXTRA_LONG, "-" + audit.EXTRA_SHORT)}


def test_lines_are_appended_0600_and_read_back_newest_last(tmp_path: Path) -> None:
    for i in range(5):
        audit.append(tmp_path, {"command": f"etcdsop add {i}", "outcome": "ok"})
    path = tmp_path / audit.LOG_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [r["command"] for r in audit.read(tmp_path, 2)] == ["etcdsop add 3", "etcdsop add 4"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_second_holder_of_the_admin_node_lock_is_named_and_refused(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "l"), FileLock(tmp_path / "l")
    holder = Holder.me("etcdsop add 10.0.0.4")
    first.acquire(holder, wait=0, say=lambda _m: None)
    try:
        with pytest.raises(
            GuardRefused, match=rf"locked by .* \(pid {os.getpid()}\) running `etcdsop add"
        ):
            second.acquire(Holder.me("etcdsop rm"), wait=0.6, say=lambda _m: None)
    finally:
        first.release()
    second.acquire(Holder.me("etcdsop rm"), wait=0, say=lambda _m: None)  # free now
    second.release()


def test_holder_round_trips_and_tolerates_garbage() -> None:
    me = Holder.me("etcdsop create")
    assert Holder.parse(me.to_bytes()) == me
    assert Holder.parse(b"not json") is None
    assert Holder.parse(b'{"host": "h"}') is None
