"""What every command does around its core function: load the inventory, build the
context, hold the lock, and turn errors into exit codes. The command modules (cli.py,
cli_reload.py, ...) import this; nothing here imports them, so there is no cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from etcdsop.cli_options import DEFAULT_INVENTORY
from etcdsop.errors import EtcdsopError

if TYPE_CHECKING:
    from etcdsop.console import RichReporter
    from etcdsop.model import Inventory
    from etcdsop.ops.common import Context, RunOptions


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """The one place where exceptions become exit codes (see README, 'Exit codes')."""
    from etcdsop.console import print_error

    try:
        yield
    except EtcdsopError as exc:
        print_error(exc.message, exc.details)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("aborted by the user")
        raise typer.Exit(130) from None


def load_inventory_file(inventory: Path, extra: list[str] | None) -> Inventory:
    from etcdsop.inventory import load_inventory, parse_extra_vars

    if not inventory.exists():
        raise no_inventory(inventory)
    extra_vars = parse_extra_vars(extra or [], Path.cwd())
    return load_inventory(inventory, extra_vars)


def no_inventory(path: Path) -> EtcdsopError:
    """Where the path came from (-i, env, default), where that is, and how to give one."""
    from etcdsop.errors import InputError

    env = os.environ.get("ETCDSOP_INVENTORY")
    if env and Path(env) == path:
        given = f"ETCDSOP_INVENTORY={path}"
    elif path == DEFAULT_INVENTORY:
        given = f"the default {path}"
    else:
        given = f"-i {path}"
    return InputError(
        f"no inventory: {given}: no such file (looked for {path.absolute()}); "
        "give one with -i FILE or ETCDSOP_INVENTORY=FILE"
    )


def build_context(
    inv: Inventory, options: RunOptions, verbose: bool, quiet: bool
) -> tuple[Context, RichReporter]:
    from etcdsop.console import RichReporter
    from etcdsop.ops.common import Context

    reporter = RichReporter(verbose=verbose, quiet=quiet)
    return Context(inv, options, reporter), reporter


def run_options(**kwargs: Any) -> RunOptions:
    from etcdsop.ops.common import RunOptions

    limit = kwargs.pop("limit", None) or []
    return RunOptions(limit=tuple(limit), **kwargs)


def with_context(
    inventory: Path,
    extra: list[str] | None,
    verbose: bool,
    quiet: bool,
    fn: Callable[..., Any],
    *,
    lock: bool = False,
    wait: float = 0.0,
    nospace_ok: bool = False,
    **option_kwargs: Any,
) -> Any:
    """Load, build the context, run fn; a changing command (lock) holds the cluster's
    lock throughout and leaves an audit line. `nospace_ok`: the command that lifts a
    NOSPACE alarm (defrag) runs under the admin-node lock alone while etcd takes no
    writes; every other command is refused then."""
    inv = load_inventory_file(inventory, extra)
    ctx, reporter = build_context(inv, run_options(**option_kwargs), verbose, quiet)
    try:
        if lock:
            from etcdsop.ops.session import run_locked

            return run_locked(ctx, reporter, fn, wait=wait, nospace_ok=nospace_ok)
        return fn(ctx, reporter)
    finally:
        ctx.close()


def report_result(reporter: RichReporter, result: Any, json_output: bool) -> None:
    """What a changing command shows at its end: --json on stdout, then its next steps."""
    from etcdsop.console import print_json

    if json_output:
        print_json(result.to_json())
    for step in result.next_steps:
        reporter.info(f"next: {step}")


# click's UsageError, wherever this Typer takes click from (it may vendor its own).
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


class Commands(TyperGroup):
    """The command group: a usage mistake (unknown option, a value out of range) exits 1
    like every other input error; click's own 2 means "a cluster operation failed" here.
    Subcommands are parsed inside the group's invoke, so both places are covered."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _USAGE_ERROR as exc:
            exc.exit_code = 1  # type: ignore[attr-defined]
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _USAGE_ERROR as exc:
            exc.exit_code = 1  # type: ignore[attr-defined]
            raise
