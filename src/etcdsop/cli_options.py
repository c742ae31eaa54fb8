"""Options shared by the commands (cli.py, cli_reload.py): one definition each."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from etcdsop.errors import InputError

InventoryOpt = Annotated[
    Path,
    typer.Option(
        "-i",
        "--inventory",
        envvar="ETCDSOP_INVENTORY",
        help="Pigsty/Ansible YAML inventory (env ETCDSOP_INVENTORY).",
    ),
]
ExtraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "-e", "--extra-vars", help="key=value or @file.yml; overrides the inventory (repeatable)."
    ),
]
LimitOpt = Annotated[
    list[str] | None,
    typer.Option("-l", "--limit", help="Only these hosts (IPs, comma lists; repeatable)."),
]
ForksOpt = Annotated[int, typer.Option("-f", "--forks", min=1, help="Hosts handled at once.")]
PkiOpt = Annotated[
    Path | None,
    typer.Option("--pki-dir", help="Certificates dir [default: files/pki beside the inventory]."),
]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict-host-keys", help="Refuse hosts whose key is not in known_hosts yet."),
]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Show remote commands.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds to wait for etcd to become healthy.")
]
PromoteTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--promote-timeout",
        min=1,
        help="Seconds a joining learner may take to start, receive the data and catch up.",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another etcdsop holding this cluster's lock (default: none).",
    ),
]
DEFAULT_INVENTORY = Path("pigsty.yml")
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change (diffs, secrets masked).")
]
YesOpt = Annotated[bool, typer.Option("-y", "--yes", help="Skip the countdown.")]
IpsArg = Annotated[list[str], typer.Argument(help="IP addresses of etcd group hosts.")]


def check_ips(args: Sequence[str]) -> None:
    """IP arguments are IP addresses: said before the inventory is even read (exit 1)."""
    for arg in args:
        try:
            ipaddress.ip_address(arg.strip())
        except ValueError:
            raise InputError(
                f"{arg!r} is not an IP address: give the IP addresses of etcd group hosts"
            ) from None
