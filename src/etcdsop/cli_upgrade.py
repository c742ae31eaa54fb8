"""Command `upgrade`, registered on the main app by cli.py (patterns as in cli_maint.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from etcdsop.cli_options import (
    DEFAULT_INVENTORY,
    ExtraOpt,
    InventoryOpt,
    JsonOpt,
    PkiOpt,
    TimeoutOpt,
    VerboseOpt,
    WaitOpt,
    YesOpt,
)

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context


def upgrade(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="3.5 (its highest patch every host can install) or 3.5.30 [default: the "
            "minor after the cluster version].",
        ),
    ] = None,
    yes: YesOpt = False,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Rolling upgrade to the next minor version (or a patch release of the current one):
    a verified snapshot, then one member at a time, leader last."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.cli_run import report_result
        from etcdsop.console import countdown
        from etcdsop.ops.upgrade import Upgrade
        from etcdsop.versions import parse_target

        if to is not None:
            parse_target(to)  # a bad --to: exit 1 before the inventory is even read

        def go(ctx: Context, reporter: RichReporter) -> None:
            run = Upgrade(ctx, to=to)
            plan = run.prepare()
            versions = sorted({m.from_version for m in plan.members})
            reporter.info(
                f"cluster {plan.cluster}: version {plan.cluster_version_before}, members on "
                f"{', '.join(versions)}; target {plan.target} ({', '.join(plan.packages)} "
                f"{plan.package_version})"
            )
            if plan.todo:
                order = ", ".join(plan.order)
                reporter.info(
                    f"a snapshot first, then one member at a time, the leader last: {order}"
                )
                if not yes:
                    countdown(3, "upgrading")
            result = run.apply()
            report_result(reporter, result, json_output)
            changed = [m for m in result.members if m.done]
            reporter.summary(
                f"{len(changed)} member(s) upgraded to {result.target}, "
                f"{len(result.members) - len(changed)} already on it; cluster version "
                f"{result.cluster_version_after}; leader {result.leader_after}"
            )

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=True,
            wait=wait,
            pki_dir=pki_dir,
            wait_timeout=timeout,
        )


def register(app: typer.Typer) -> None:
    """Add the command to the main app."""
    app.command("upgrade")(upgrade)
