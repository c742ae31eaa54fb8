"""The command line: parse options, call one core function, map errors to exit codes.

Heavy modules (paramiko, cryptography, urllib3, yaml) are imported inside the
commands so that `etcdsop --help` stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from etcdsop.cli_options import (
    DEFAULT_INVENTORY,
    DryRunOpt,
    ExtraOpt,
    ForksOpt,
    InventoryOpt,
    IpsArg,
    JsonOpt,
    LimitOpt,
    PkiOpt,
    PromoteTimeoutOpt,
    StrictOpt,
    TimeoutOpt,
    VerboseOpt,
    WaitOpt,
    YesOpt,
    check_ips,
)
from etcdsop.cli_run import (
    Commands,
    errors_to_exit_codes,
    load_inventory_file,
    report_result,
    with_context,
)

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context

app = typer.Typer(
    name="etcdsop",
    cls=Commands,
    help="Run the whole life of an etcd cluster over SSH, from a Pigsty inventory.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
    add_completion=False,
    rich_markup_mode=None,
)
sandbox_app = typer.Typer(
    help="Local test hosts: systemd-nspawn containers with sshd and etcd.", no_args_is_help=True
)
app.add_typer(sandbox_app, name="sandbox")


# -- commands -------------------------------------------------------------------------
@app.command()
def create(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    limit: LimitOpt = None,
    forks: ForksOpt = 16,
    pki_dir: PkiOpt = None,
    strict_host_keys: StrictOpt = False,
    dry_run: DryRunOpt = False,
    timeout: TimeoutOpt = 60.0,
    promote_timeout: PromoteTimeoutOpt = 300.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Create the cluster, or converge it to the inventory (Pigsty's etcd.yml)."""
    with errors_to_exit_codes():
        from etcdsop.console import print_json
        from etcdsop.ops.create import create as run_create

        def go(ctx: Context, reporter: RichReporter) -> None:
            result = run_create(ctx, promote_timeout=promote_timeout)
            if json_output:
                print_json(result.to_json())
            verb = "would change" if dry_run else "changed"
            changed = [p.member.ip for p in result.plans if p.changed]
            reporter.summary(
                f"cluster {result.cluster}: {len(changed)} host(s) {verb}"
                f"{', no restart' if not result.restarted else ''}"
            )

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=not dry_run,
            wait=wait,
            limit=limit,
            forks=forks,
            pki_dir=pki_dir,
            strict_host_keys=strict_host_keys,
            dry_run=dry_run,
            wait_timeout=timeout,
        )


@app.command()
def status(
    seconds: Annotated[
        float | None,
        typer.Argument(
            metavar="SECONDS", help="With --watch: seconds between refreshes [default: 2]."
        ),
    ] = None,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Redraw the table live until Ctrl-C (exit 130): raft index deltas, leader "
            "changes. `--watch 5` refreshes every 5 s.",
        ),
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Members, leader, raft state, health and quorum; exit 2 when unhealthy."""
    with errors_to_exit_codes():
        interval = _watch_interval(watch, seconds, json_output)
        from etcdsop.console import print_json, status_table, watch_status
        from etcdsop.ops.status import poller
        from etcdsop.ops.status import status as run_status

        def go(ctx: Context, reporter: RichReporter) -> bool:
            if interval is not None:
                try:
                    watch_status(poller(ctx), interval)
                except KeyboardInterrupt:
                    raise typer.Exit(130) from None  # the way out of --watch: no error
            result = run_status(ctx)
            if json_output:
                print_json(result.to_json())
            else:
                status_table(result)
            return result.healthy

        healthy = with_context(inventory, extra_vars, False, True, go, pki_dir=pki_dir)
    if not healthy:
        raise typer.Exit(2)


def _watch_interval(watch: bool, seconds: float | None, json_output: bool) -> float | None:
    """Seconds between --watch refreshes, or None without --watch; bad combinations: exit 1."""
    from etcdsop.errors import InputError

    if not watch:
        if seconds is not None:
            raise InputError(f"status: {seconds:g} is the refresh interval of --watch: add --watch")
        return None
    if json_output:
        raise InputError("status: --watch redraws a table and cannot be combined with --json")
    interval = 2.0 if seconds is None else seconds
    if not 0.2 <= interval <= 3600:
        raise InputError(f"status: --watch {interval:g}: seconds must be between 0.2 and 3600")
    return interval


@app.command("inventory")
def inventory_cmd(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    limit: LimitOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the resolved etcd members and their variables (secrets masked); no host touched."""
    with errors_to_exit_codes():
        from etcdsop.console import out, print_json
        from etcdsop.inventory import masked_vars, select

        inv = load_inventory_file(inventory, extra_vars)
        members = select(inv, limit or None)
        data = {
            "inventory": str(inv.path),
            "cluster": inv.cluster,
            "members": [
                {
                    "ip": m.ip,
                    "name": m.name,
                    "peer_url": m.peer_url,
                    "client_url": m.client_url,
                    "vars": masked_vars(m.vars),
                }
                for m in members
            ],
            "pg_clusters": [
                {"name": c.name, "group": c.group, "hosts": list(c.hosts), "namespace": c.namespace}
                for c in inv.pg_clusters
            ],
            "infra_hosts": [h.name for h in inv.infra_hosts],
        }
        if json_output:
            print_json(data)
            return
        out.print(f"inventory {inv.path}: etcd cluster [bold]{inv.cluster}[/]")
        for m in members:
            out.print(
                f"  {m.name:<12} {m.ip:<16} peer {m.peer_url}  client {m.client_url}"
                f"  data {m.data_dir}  init {m.init}{'  learner' if m.learner else ''}"
            )
        for c in inv.pg_clusters:
            out.print(f"  postgres {c.name}: {', '.join(c.hosts)}")
        if inv.infra_hosts:
            names = ", ".join(h.name for h in inv.infra_hosts)
            out.print(f"  infra (monitoring targets): {names}")


def _confirm(reporter: RichReporter, lines: list[str], seconds: int, yes: bool, what: str) -> None:
    from etcdsop.console import countdown

    for line in lines:
        reporter.info(line)
    if not yes:
        countdown(seconds, what)


@app.command()
def add(
    ips: IpsArg,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    forks: ForksOpt = 16,
    pki_dir: PkiOpt = None,
    strict_host_keys: StrictOpt = False,
    yes: YesOpt = False,
    promote_timeout: PromoteTimeoutOpt = 300.0,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Add members one at a time: learner, catch up, promote (Pigsty's bin/etcd-add)."""
    with errors_to_exit_codes():
        check_ips(ips)
        from etcdsop.inventory import members_for_ips
        from etcdsop.ops.add import add as run_add

        def go(ctx: Context, reporter: RichReporter) -> None:
            members = members_for_ips(ctx.inventory, ips)
            plan = [
                f"add {m.name} ({m.ip}) to cluster {m.cluster}: learner, then "
                f"{'stays a learner (etcd_learner)' if m.learner else 'promoted to voter'}"
                for m in members
            ]
            _confirm(
                reporter,
                ["warning: membership changes, one member at a time", *plan],
                3,
                yes,
                "adding",
            )
            result = run_add(ctx, members, promote_timeout=promote_timeout)
            report_result(reporter, result, json_output)
            reporter.summary(f"{len(result.added)} member(s) added, {len(result.skipped)} skipped")

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=True,
            wait=wait,
            forks=forks,
            pki_dir=pki_dir,
            strict_host_keys=strict_host_keys,
            wait_timeout=timeout,
        )


@app.command()
def promote(
    ip: Annotated[str, typer.Argument(help="IP of the learner to promote.")],
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds the learner may take to catch up.")
    ] = 300.0,
    wait: WaitOpt = 0.0,
    json_output: JsonOpt = False,
) -> None:
    """Promote a learner to a voter once it is in sync (through the leader)."""
    with errors_to_exit_codes():
        check_ips([ip])
        from etcdsop.console import print_json
        from etcdsop.inventory import members_for_ips
        from etcdsop.ops.add import promote as run_promote

        def go(ctx: Context, reporter: RichReporter) -> None:
            member = members_for_ips(ctx.inventory, [ip])[0]
            entry = run_promote(ctx, member, timeout=timeout)
            if json_output:
                print_json({"ip": member.ip, "id": entry.hex_id, "learner": entry.is_learner})
            reporter.summary(f"{member.name} ({member.ip}) is a voter")

        with_context(inventory, extra_vars, False, False, go, lock=True, wait=wait, pki_dir=pki_dir)


@app.command()
def rm(
    ips: Annotated[
        list[str] | None,
        typer.Argument(help="Members to remove; none: destroy the whole cluster."),
    ] = None,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    forks: ForksOpt = 16,
    pki_dir: PkiOpt = None,
    strict_host_keys: StrictOpt = False,
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="DANGEROUS: remove even when the quorum guard refuses."),
    ] = False,
    force_cleanup: Annotated[
        bool,
        typer.Option(
            "--force-cleanup",
            help="Stop and clean a host even when its etcd files do not show they are this "
            "member's (directories holding other things are still kept).",
        ),
    ] = False,
    no_backup: Annotated[
        bool,
        typer.Option("--no-backup", help="Skip the snapshot taken before any destructive step."),
    ] = False,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Remove members, or with no IP destroy the cluster (Pigsty's bin/etcd-rm)."""
    with errors_to_exit_codes():
        check_ips(ips or [])
        from etcdsop.errors import ClusterError
        from etcdsop.guards import check_safeguard
        from etcdsop.inventory import members_for_ips
        from etcdsop.ops.remove import destroy, remove

        def go(ctx: Context, reporter: RichReporter) -> None:
            if ips:
                members = members_for_ips(ctx.inventory, ips)
                check_safeguard(members)
                plan = [
                    f"remove {m.name} ({m.ip}) from cluster {m.cluster}"
                    + ("; delete its config and data" if m.rm_data else "")
                    + ("; uninstall etcd" if m.rm_pkg else "")
                    for m in members
                ]
                _confirm(reporter, ["warning: removing etcd members", *plan], 3, yes, "removing")
                result = remove(
                    ctx, members, force=force, backup=not no_backup, force_cleanup=force_cleanup
                )
            else:
                check_safeguard(ctx.inventory.members)
                hosts = ", ".join(m.ip for m in ctx.inventory.members)
                reporter.warn(
                    f"DESTROYING etcd cluster {ctx.inventory.cluster} on {hosts}: "
                    "ALL DATA IN IT WILL BE DESTROYED"
                )
                _confirm(reporter, [], 5, yes, "destroying the cluster")
                result = destroy(ctx, backup=not no_backup, force_cleanup=force_cleanup)
            report_result(reporter, result, json_output)
            if not ips and result.cleanup_skipped:
                raise ClusterError(
                    f"destroy incomplete: {', '.join(result.cleanup_skipped)} not cleaned "
                    "(unreachable); run etcdsop rm -y again once it answers"
                )
            reporter.summary(f"{len(result.removed)} member(s) removed")

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=True,
            wait=wait,
            forks=forks,
            pki_dir=pki_dir,
            strict_host_keys=strict_host_keys,
            wait_timeout=timeout,
        )


@app.command("log")
def log_cmd(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    last: Annotated[int, typer.Option("-n", "--last", min=1, help="How many entries.")] = 20,
    json_output: JsonOpt = False,
) -> None:
    """The audit trail of changing commands (files/log/etcdsop.jsonl beside the inventory)."""
    with errors_to_exit_codes():
        from etcdsop import audit
        from etcdsop.console import audit_table, print_json

        files = load_inventory_file(inventory, None).files_dir
        records = audit.read(files, last)
        if json_output:
            print_json(records)
        else:
            audit_table(records, files / audit.LOG_NAME)


# -- sandbox --------------------------------------------------------------------------
@sandbox_app.command("up")
def sandbox_up(
    count: Annotated[int, typer.Argument(min=1, max=40, help="How many hosts.")] = 3,
    with_postgres: Annotated[
        bool,
        typer.Option(
            "--with-postgres",
            help="Hosts also carry PostgreSQL 15, Patroni and vip-manager (another base image).",
        ),
    ] = False,
    etcd: Annotated[
        str,
        typer.Option(
            "--etcd",
            metavar="3.4|3.5",
            help="etcd on the hosts: Debian bookworm's 3.4.23 or trixie's 3.5.16.",
        ),
    ] = "3.4",
) -> None:
    """Boot COUNT local hosts and write an inventory for them."""
    with errors_to_exit_codes():
        from etcdsop import sandbox
        from etcdsop.console import err, out
        from etcdsop.sandbox.rootfs import POSTGRES_PACKAGES

        sandbox.check_supported()
        hosts = sandbox.up(
            count,
            progress=lambda line: err.print(f"  {line}"),
            extra_packages=POSTGRES_PACKAGES if with_postgres else (),
            subnet_index=sandbox.subnet_from_env(),
            etcd=etcd,
        )
        paths = sandbox.paths()
        for h in hosts:
            out.print(f"{h.name:<14} {h.ip:<14} {'running' if h.running else 'stopped'}")
        out.print(f"inventory: {paths.inventory}")
        if with_postgres:
            out.print("next: etcdsop create, then etcdsop sandbox postgres (pg-test)")


@sandbox_app.command("postgres")
def sandbox_postgres(wait: WaitOpt = 0.0, verbose: VerboseOpt = False) -> None:
    """Run pg-test (Patroni, PostgreSQL 15, vip-manager) on the sandbox's etcd, as Pigsty's
    pgsql.yml after etcd.yml: run `etcdsop create` first."""
    with errors_to_exit_codes():
        from etcdsop import sandbox
        from etcdsop.console import out
        from etcdsop.sandbox import postgres

        sandbox.check_supported()
        paths = sandbox.paths()
        ips = [h.ip for h in sandbox.status() if h.running]
        if not ips or not paths.inventory.exists():
            raise sandbox_missing(paths.state_dir)

        def go(ctx: Context, reporter: RichReporter) -> None:
            shell = sandbox.Shell(paths)
            for spec in postgres.bring_up(ctx, shell, ips):
                listed = shell.ssh(spec.hosts[0], postgres.PATRONICTL_LIST, check=False)
                out.print(listed.stdout.rstrip() or listed.stderr.rstrip())
            reporter.summary("PostgreSQL running; the SOP can be rehearsed (README)")

        with_context(paths.inventory, None, verbose, False, go, lock=True, wait=wait)


@sandbox_app.command(
    "ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def sandbox_ssh(
    host: Annotated[str, typer.Argument(help="Host name, IP, hN or N.")],
    command: Annotated[list[str] | None, typer.Argument(help="Command (default: a shell).")] = None,
) -> None:
    """A root shell or command on a sandbox host (the sandbox's own key and known_hosts)."""
    with errors_to_exit_codes():
        import subprocess

        from etcdsop import sandbox

        # As ssh does: the words joined by spaces are one command line for the remote shell.
        argv = sandbox.ssh_command(host)
        argv = [*argv, " ".join(command)] if command else [argv[0], "-t", *argv[1:]]
        raise typer.Exit(subprocess.run(argv, check=False).returncode)


def sandbox_missing(state_dir: object) -> Exception:
    from etcdsop.errors import InputError

    return InputError(
        f"no running sandbox in {state_dir}: run `etcdsop sandbox up N --with-postgres`"
    )


@sandbox_app.command("down")
def sandbox_down() -> None:
    """Power off and remove every sandbox host (the base image cache is kept)."""
    with errors_to_exit_codes():
        from etcdsop import sandbox
        from etcdsop.console import err

        sandbox.check_supported()
        sandbox.down(progress=lambda line: err.print(f"  {line}"))


@sandbox_app.command("status")
def sandbox_status() -> None:
    """List sandbox hosts."""
    with errors_to_exit_codes():
        from etcdsop import sandbox
        from etcdsop.console import out

        for h in sandbox.status():
            out.print(f"{h.name:<14} {h.ip:<14} {'running' if h.running else 'stopped'}")


def _register_more_commands() -> None:
    from etcdsop import cli_certs, cli_dr, cli_maint, cli_reload, cli_upgrade

    cli_reload.register(app)
    cli_certs.register(app)
    cli_dr.register(app)
    cli_maint.register(app)
    cli_upgrade.register(app)


_register_more_commands()


def main() -> None:
    if os.environ.get("ETCDSOP_DEBUG"):
        os.environ.setdefault("_TYPER_STANDARD_TRACEBACK", "1")
    app()
