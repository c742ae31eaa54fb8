"""Commands `defrag` and `check`, registered on the main app by cli.py.

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

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context


def defrag(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    yes: YesOpt = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Compact the key history to the current revision first (done anyway under "
            "a NOSPACE alarm); without it, what auto-compaction (24h) freed is handed back.",
        ),
    ] = False,
    defrag_timeout: Annotated[
        float,
        typer.Option(
            "--defrag-timeout",
            min=1,
            help="Seconds one member's defragment may take (it blocks that member).",
        ),
    ] = 300.0,
    timeout: TimeoutOpt = 60.0,
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Defragment every member, one at a time, leader last, each healthy before the next;
    then disarm a NOSPACE alarm once back under the quota."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import countdown, print_json
        from etcdsop.ops.defrag import Defrag

        def go(ctx: Context, reporter: RichReporter) -> None:
            run = Defrag(ctx, compact=compact, timeout=defrag_timeout)
            reporter.info(
                "warning: each member serves nothing while it is defragmented; "
                "one at a time, the leader last"
                + ("; the key history is compacted first" if compact else "")
            )
            if not yes:
                countdown(3, "defragmenting")
            result = run.run()
            if json_output:
                print_json(result.to_json())
            before = sum(m.db_before for m in result.members)
            after = sum(m.db_after or 0 for m in result.members)
            disarmed = f", disarmed {', '.join(result.disarmed)}" if result.disarmed else ""
            reporter.summary(
                f"{len(result.members)} member(s) defragmented, db {before / 2**20:.1f} -> "
                f"{after / 2**20:.1f} MiB in all{disarmed}"
            )

        with_context(
            inventory,
            extra_vars,
            verbose,
            False,
            go,
            lock=True,
            nospace_ok=True,
            wait=wait,
            pki_dir=pki_dir,
            wait_timeout=timeout,
        )


def check(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    extra_vars: ExtraOpt = None,
    pki_dir: PkiOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """A doctor: one line per finding with its fix; exit 2 when there is any."""
    from etcdsop.cli_run import errors_to_exit_codes, with_context

    with errors_to_exit_codes():
        from etcdsop.console import out, print_json
        from etcdsop.ops.check import check as run_check

        def go(ctx: Context, reporter: RichReporter) -> bool:
            result = run_check(ctx)
            if json_output:
                print_json(result.to_json())
                return result.ok
            for finding in result.findings:
                out.print(finding.line(), markup=False, highlight=False, soft_wrap=True)
            verdict = "no finding" if result.ok else f"{len(result.findings)} finding(s)"
            reporter.summary(f"check of cluster {result.cluster}: {verdict}")
            return result.ok

        ok = with_context(inventory, extra_vars, False, False, go, pki_dir=pki_dir)
    if not ok:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the commands to the main app."""
    app.command("defrag")(defrag)
    app.command("check")(check)
