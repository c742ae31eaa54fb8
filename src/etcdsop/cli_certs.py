"""`etcdsop certs` (list), `certs renew` and `certs rotate-ca`, registered by cli.py.

Same patterns as cli.py: options parsed here, one core call, errors mapped to exit
codes in one place, heavy modules imported inside the commands.
"""

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
from etcdsop.cli_run import Commands

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context

WithinOpt = Annotated[
    int | None,
    typer.Option(
        "--within",
        min=0,
        help="Days: a certificate ending within them is due [default: 30, pki's RENEW_BEFORE].",
    ),
]

certs_app = typer.Typer(
    cls=Commands,
    help="Certificates of the cluster and its clients: list, renew, rotate the CA.",
    invoke_without_command=True,
    rich_markup_mode=None,
)


@certs_app.callback()
def certs(
    typer_ctx: typer.Context,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    within: WithinOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List every certificate (CA, members, admin, PostgreSQL clients): where it lives,
    who signed it, when it ends and its state. Read only; unreachable hosts are listed."""
    if typer_ctx.invoked_subcommand is not None:
        return
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import out, print_json
        from etcdsop.ops.certs import survey, window

        days = window(within)

        def go(ctx: Context, reporter: RichReporter) -> None:
            result = survey(ctx, days)
            if json_output:
                print_json(result.to_json())
                return
            for e in result.entries:
                end = e.not_after.date().isoformat() if e.not_after else "-"
                left = f"{e.days_left}d" if e.days_left is not None else "-"
                line = (
                    f"{e.state:<11} {e.kind:<11} {e.where}\n"
                    f"            {e.subject or '-'}  signed by {e.issuer or '?'}  "
                    f"ends {end} ({left})"
                )
                if e.sans:
                    line += f"\n            SANs {', '.join(e.sans)}"
                if e.detail:
                    line += f"\n            {e.detail}"
                out.print(line, markup=False, highlight=False, soft_wrap=True)
            problems = sum(1 for e in result.entries if e.state != "ok")
            reporter.summary(
                f"{len(result.entries)} certificate(s), {problems} not ok, "
                f"{len(result.unreachable)} host(s) unreachable"
            )

        with_context(inventory, extra_vars, False, False, go, pki_dir=pki_dir)


@certs_app.command("renew")
def renew(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    within: WithinOpt = None,
    yes: YesOpt = False,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Re-issue the node and client certificates due, signed by the current CA, in place
    (same key, owner and mode; no etcd or Patroni restart), then verify."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import countdown, print_json
        from etcdsop.errors import ClusterError
        from etcdsop.ops.certs import renew as run_renew
        from etcdsop.ops.certs import window

        days = window(within)

        def go(ctx: Context, reporter: RichReporter) -> None:
            if not yes:
                countdown(3, f"re-issuing certificates ending within {days.days} days")
            result = run_renew(ctx, days)
            if json_output:
                print_json(result.to_json())
            reporter.summary(
                f"{len(result.reissued)} certificate(s) re-issued, {len(result.failed)} failed"
            )
            if result.failed:
                raise ClusterError(
                    f"{len(result.failed)} certificate(s) not renewed: {result.failed[0]}",
                    details="\n".join(result.failed[1:]) or None,
                )

        with_context(
            inventory, extra_vars, verbose, False, go, lock=True, wait=wait, pki_dir=pki_dir
        )


@certs_app.command("rotate-ca")
def rotate_ca(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    yes: YesOpt = False,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Replace the CA without downtime: old+new CA trusted everywhere (rolling restart,
    leader last), certificates re-issued by the new CA, then the old CA dropped (rolling
    restart again). Resumable: a re-run continues where an interrupted one stopped."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import countdown, print_json
        from etcdsop.ops.rotateca import rotate

        def go(ctx: Context, reporter: RichReporter) -> None:
            reporter.info(
                "warning: every etcd member restarts twice, one at a time, the leader last "
                "(leadership moved first); Patroni keeps running"
            )
            if not yes:
                countdown(5, "rotating the CA")
            result = rotate(ctx)
            if json_output:
                print_json(result.to_json())
            reporter.summary(f"CA {result.old} replaced by {result.new}")

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
    """Add the commands to the main app."""
    app.add_typer(certs_app, name="certs")
