"""Commands `backup`, `restore` and `recover` (disaster recovery), registered on the
main app by cli.py. Same patterns as cli.py: options parsed here, one core call,
errors mapped to exit codes in one place, heavy modules imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from etcdsop.cli_options import (
    DEFAULT_INVENTORY,
    ExtraOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    PkiOpt,
    PromoteTimeoutOpt,
    StrictOpt,
    TimeoutOpt,
    VerboseOpt,
    WaitOpt,
    YesOpt,
    check_ips,
)

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context


def backup(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Write here [default: files/backup/<cluster>-<UTC>.db]."
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", min=1, help="Keep the newest N backups of the cluster, delete older ones."
        ),
    ] = None,
    install_timer: Annotated[
        bool,
        typer.Option(
            "--install-timer",
            help="Install a systemd timer on this admin node running `backup --keep N` "
            "(-e values are not carried into it).",
        ),
    ] = False,
    on_calendar: Annotated[
        str, typer.Option("--on-calendar", help="The timer's schedule (systemd OnCalendar).")
    ] = "hourly",
    remove_timer: Annotated[
        bool, typer.Option("--remove-timer", help="Stop and delete the backup timer.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """A verified snapshot from a healthy voter, 0600, with a JSON sidecar (cluster id,
    revision, members, version, sha256); or install/remove the timer that takes them."""
    from etcdsop.cli_run import errors_to_exit_codes, load_inventory_file, with_context

    with errors_to_exit_codes():
        from etcdsop.console import print_json
        from etcdsop.errors import InputError

        if install_timer and remove_timer:
            raise InputError("backup: --install-timer and --remove-timer exclude each other")
        if install_timer or remove_timer:
            from etcdsop.console import err
            from etcdsop.ops import backuptimer

            inv = load_inventory_file(inventory, extra_vars)
            if remove_timer:
                removed = backuptimer.remove(inv.cluster)
                doc: dict[str, object] = {"removed": removed}
                err.print("removed " + (", ".join(removed) if removed else "nothing (no timer)"))
            else:
                if output is not None:
                    raise InputError("backup --install-timer: -o names one file, not a series")
                backuptimer.check_calendar(on_calendar)
                units = backuptimer.render_units(
                    inv.cluster,
                    inventory.resolve(),
                    on_calendar=on_calendar,
                    keep=keep if keep is not None else 48,
                    pki_dir=pki_dir.resolve() if pki_dir else None,
                )
                nxt = backuptimer.install(units)
                doc = {"installed": [units.service, units.timer], "next": nxt}
                err.print(f"installed {units.timer} ({on_calendar}); next run: {nxt or '?'}")
            if json_output:
                print_json(doc)
            return

        from etcdsop.ops.backup import backup as run_backup
        from etcdsop.ops.backup import check_output

        check_output(output)

        def go(ctx: Context, reporter: RichReporter) -> None:
            result = run_backup(ctx, output=output, keep=keep)
            if json_output:
                print_json(result.to_json())
            reporter.summary(f"backup {result.path}")

        with_context(inventory, extra_vars, False, False, go, pki_dir=pki_dir)


def restore(
    file: Annotated[Path, typer.Argument(help="The snapshot (a backup's .db file).")],
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    forks: ForksOpt = 16,
    pki_dir: PkiOpt = None,
    strict_host_keys: StrictOpt = False,
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="DANGEROUS: restore even while a cluster answers on the hosts "
            "(its data is moved aside, not deleted).",
        ),
    ] = False,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Rebuild the inventory's cluster from a snapshot: every member restored from the same
    file into a new data dir (old data moved aside), all started together."""
    from etcdsop.cli_run import errors_to_exit_codes, report_result, with_context

    with errors_to_exit_codes():
        from etcdsop.console import countdown
        from etcdsop.ops.restore import check_file
        from etcdsop.ops.restore import restore as run_restore

        check_file(file)  # exit 1 before the inventory's hosts are even connected to

        def go(ctx: Context, reporter: RichReporter) -> None:
            hosts = ", ".join(m.ip for m in ctx.inventory.members)
            reporter.warn(
                f"RESTORING etcd cluster {ctx.inventory.cluster} on {hosts} from {file}: "
                "what it holds now is replaced (old data dirs kept aside)"
            )

            def confirm() -> None:
                if not yes:
                    countdown(5, "restoring")

            result = run_restore(ctx, file, force=force, confirm=confirm)
            for note in result.notes:
                reporter.warn(note)
            report_result(reporter, result, json_output)
            reporter.summary(
                f"cluster {ctx.inventory.cluster} restored on {len(ctx.inventory.members)} "
                f"member(s), revision {result.revision}"
            )

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


def recover(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    source: Annotated[
        str | None,
        typer.Option("--from", help="The member to rebuild from [default: highest raft index]."),
    ] = None,
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
    """Quorum lost for good: restart the best member once with force-new-cluster (snapshot
    first), then add the other hosts back one at a time (old data moved aside)."""
    from etcdsop.cli_run import errors_to_exit_codes, report_result, with_context

    with errors_to_exit_codes():
        if source is not None:
            check_ips([source])
        from etcdsop.console import countdown
        from etcdsop.ops.recover import recover as run_recover

        def go(ctx: Context, reporter: RichReporter) -> None:
            def confirm(chosen: str) -> None:
                reporter.warn(
                    f"RECOVERING etcd cluster {ctx.inventory.cluster} from {chosen}: it becomes "
                    "a one-member cluster with its data, the others rejoin empty (old data "
                    "moved aside)"
                )
                if not yes:
                    countdown(5, "recovering")

            result = run_recover(
                ctx, from_ip=source, promote_timeout=promote_timeout, confirm=confirm
            )
            report_result(reporter, result, json_output)
            reporter.summary(
                f"recovered from {result.source}: {len(result.added)} member(s) added back"
            )

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


def register(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("recover")(recover)
