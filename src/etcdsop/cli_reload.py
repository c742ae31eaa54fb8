"""Commands `reload`, `rbac sync` and `env`, registered on the main app by cli.py.

Same patterns as cli.py: options parsed here, one core call, errors mapped to exit
codes in one place, heavy modules imported inside the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from etcdsop.cli_options import (
    DEFAULT_INVENTORY,
    DryRunOpt,
    ExtraOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    PkiOpt,
    StrictOpt,
    TimeoutOpt,
    VerboseOpt,
    WaitOpt,
)

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context


def reload(
    target: Annotated[
        list[str],
        typer.Option(
            "-t",
            "--target",
            metavar="TARGET",
            help="etcd, etcdctl, patroni, vip or all; repeatable or comma-separated.",
        ),
    ],
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Also restart etcd members running an older etcd.conf: one at a time, "
            "healthy before the next, the leader last, never below quorum (exit 3).",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    forks: ForksOpt = 16,
    pki_dir: PkiOpt = None,
    strict_host_keys: StrictOpt = False,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Point every etcd client at the live voters (the SOP's reload): etcd.conf and the root
    password, etcdctl.sh, Patroni's etcd3 section, vip-manager; backups beside each file."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import print_json
        from etcdsop.errors import ClusterError
        from etcdsop.ops.reload import parse_targets
        from etcdsop.ops.reload import reload as run_reload

        targets = parse_targets(target)

        def go(ctx: Context, reporter: RichReporter) -> None:
            result = run_reload(ctx, targets, restart=restart)
            if json_output:
                print_json(result.to_json())
            verb = "would change" if dry_run else "changed"
            hosts = sorted({o.host for o in result.changed})
            restarted = f", {len(result.restarted)} restarted" if result.restarted else ""
            if result.patroni_restarted:
                would = "would be " if dry_run else ""
                restarted += f", Patroni {would}restarted under pause on " + ", ".join(
                    result.patroni_restarted
                )
            reporter.summary(
                f"reload {','.join(targets)}: {len(hosts)} host(s) {verb}{restarted}"
                f", {len(result.failed)} failed"
            )
            if result.failed:
                raise ClusterError(
                    f"{len(result.failed)} host target(s) failed: "
                    + "; ".join(f"{o.host} {o.target}: {o.message}" for o in result.failed)
                )

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=not dry_run,
            wait=wait,
            forks=forks,
            pki_dir=pki_dir,
            strict_host_keys=strict_host_keys,
            dry_run=dry_run,
            wait_timeout=timeout,
        )


def rbac_sync(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = 0.0,
    json_output: JsonOpt = False,
) -> None:
    """One etcd role and user per PostgreSQL cluster: readwrite on <pg_namespace>/<pg_cluster>/.
    A changed pg_etcd_password is refused here: `reload -t patroni,vip` changes it."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.clients import password as pgpassword
        from etcdsop.console import print_json
        from etcdsop.ops import rbac

        def go(ctx: Context, reporter: RichReporter) -> None:
            accounts = rbac.accounts(ctx.inventory)
            if not accounts:
                reporter.info("no PostgreSQL cluster (group with pg_cluster) in the inventory")
            reporter.phase(f"etcd users of {len(accounts)} PostgreSQL cluster(s)")
            client = ctx.voter_client()
            plans = rbac.plan(client, accounts)
            # A new password here would strand Patroni and vip-manager: reload does it.
            pgpassword.guard(ctx.inventory, rbac.password_changes(plans), ())
            results = rbac.sync(client, accounts, reporter, dry_run=dry_run, plans=plans)
            if json_output:
                print_json({"dry_run": dry_run, "clusters": [r.to_json() for r in results]})
            changed = sum(1 for r in results if r.actions)
            verb = "would change" if dry_run else "changed"
            reporter.summary(f"{changed} of {len(results)} cluster account(s) {verb}")

        with_context(
            inventory,
            extra_vars,
            False,
            False,
            go,
            lock=not dry_run,
            wait=wait,
            pki_dir=pki_dir,
            dry_run=dry_run,
        )


def env(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    with_password: Annotated[
        bool,
        typer.Option("--with-password", help="Also export ETCDCTL_USER=root:<password>."),
    ] = False,
) -> None:
    """Print etcdctl's environment for this admin node: eval "$(etcdsop env --with-password)"."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.ops.env import admin_env

        def go(ctx: Context, reporter: RichReporter) -> None:
            typer.echo(admin_env(ctx, with_password=with_password), nl=False)

        with_context(inventory, extra_vars, False, True, go, pki_dir=pki_dir)


def register(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command("reload")(reload)
    rbac_app = typer.Typer(
        help="etcd users and roles of the PostgreSQL clusters.", no_args_is_help=True
    )
    rbac_app.command("sync")(rbac_sync)
    app.add_typer(rbac_app, name="rbac")
    app.command("env")(env)
