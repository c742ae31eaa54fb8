"""Everything the user sees: Rich progress on stderr, tables, countdowns, errors."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.markup import escape

from etcdsop.errors import EtcdsopError
from etcdsop.events import Status

if TYPE_CHECKING:
    from etcdsop.ops.status import StatusResult
    from etcdsop.statusview import WatchState

_MARKS: dict[str, str] = {
    "ok": "[green]ok[/]",
    "changed": "[yellow]changed[/]",
    "skipped": "[dim]skipped[/]",
    "failed": "[bold red]failed[/]",
    "info": "[cyan]info[/]",
    "start": "[blue]...[/]",
}

# Piped output is not cut to 80 columns (tables stay readable in logs and CI) unless
# COLUMNS says how wide it should be. Lines on stderr are never broken by us (soft wrap):
# an error stays one line for grep and scripts, and the terminal wraps it for the eye.
_PIPED_WIDTH = None if os.environ.get("COLUMNS", "").isdigit() else 160
err = Console(
    stderr=True,
    highlight=False,
    soft_wrap=True,
    width=None if sys.stderr.isatty() else _PIPED_WIDTH,
)
out = Console(highlight=False, width=None if sys.stdout.isatty() else _PIPED_WIDTH)


class RichReporter:
    """Per-host, per-step lines on stderr; phases carry their elapsed time."""

    def __init__(self, *, verbose: bool = False, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self._started = time.monotonic()
        self._phase_started = self._started
        self._warned: set[str] = set()

    def _elapsed(self) -> str:
        return f"[dim]{time.monotonic() - self._started:6.2f}s[/]"

    def phase(self, title: str) -> None:
        self._phase_started = time.monotonic()
        if not self.quiet:
            err.print(f"{self._elapsed()} [bold]── {escape(title)}[/]")

    def host(self, host: str, message: str, status: Status = "ok") -> None:
        if not self.quiet or status == "failed":
            err.print(f"{self._elapsed()}   {host:<15} {_MARKS[status]:<9} {escape(message)}")

    def info(self, message: str) -> None:
        if not self.quiet:
            err.print(f"{self._elapsed()}   {escape(message)}")

    def warn(self, message: str) -> None:
        if message not in self._warned:  # each warning once per run
            self._warned.add(message)
            err.print(f"[bold yellow]warning:[/] {escape(message)}")

    def command(self, host: str, command: str) -> None:
        if self.verbose:
            err.print(f"[dim]{self._elapsed()}   {host:<15} $ {escape(command)}[/]")

    def summary(self, text: str) -> None:
        if not self.quiet:
            took = time.monotonic() - self._started
            err.print(f"[bold green]{escape(text)}[/] [dim]in {took:.2f}s[/]")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_error(message: str, details: str | None = None) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    if details:
        err.print(escape(details), style="dim")


def countdown(seconds: int, what: str) -> None:
    """Give the operator time to press Ctrl-C (KeyboardInterrupt aborts cleanly)."""
    for left in range(seconds, 0, -1):
        err.print(f"[bold yellow]{escape(what)} in {left}s[/] (Ctrl-C to abort)")
        time.sleep(1)


def status_table(result: StatusResult) -> None:
    from etcdsop.statusview import StatusView

    out.print(StatusView(result))


def watch_status(poll: Callable[[], StatusResult], interval: float) -> None:
    """Redraw the status every `interval` seconds until Ctrl-C (KeyboardInterrupt).

    On a terminal the table is redrawn in place (Rich Live); piped, each refresh is
    printed after the last, so a log keeps the whole history. An error (etcd busy in
    the middle of the maintenance being watched) is shown and the next refresh tried.
    """
    from rich.live import Live

    from etcdsop.statusview import WatchState

    state = WatchState(interval)
    if not out.is_terminal:
        while True:
            out.print(_watch_view(poll, state))
            out.print()
            time.sleep(interval)
    with Live(console=out, auto_refresh=False, redirect_stderr=False) as live:
        while True:
            live.update(_watch_view(poll, state), refresh=True)
            time.sleep(interval)


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024 / 1024:.1f}M" if value >= 1024 * 1024 else f"{value // 1024}K"


def audit_table(records: list[dict[str, Any]], path: Path) -> None:
    """The audit trail, oldest first: who ran what, when, and how it ended."""
    if not records:
        out.print(f"no entries in {path}")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("time (UTC)", "who", "command", "outcome", "exit", "s", "snapshot"):
        table.add_column(column, overflow="fold")
    for r in records:
        outcome = str(r.get("outcome", ""))
        color = {"ok": "green", "refused": "yellow"}.get(outcome, "red")
        table.add_row(
            escape(str(r.get("time", ""))),
            escape(f"{r.get('user', '?')}@{r.get('host', '?')}"),
            escape(str(r.get("command", ""))),
            f"[{color}]{escape(outcome)}[/]",
            str(r.get("exit_code", "")),
            str(r.get("seconds", "")),
            escape(", ".join(Path(p).name for p in r.get("snapshots", []) or [])),
        )
    out.print(table)


def _watch_view(poll: Callable[[], StatusResult], state: WatchState) -> RenderableType:
    from etcdsop.statusview import StatusView

    try:
        result = poll()
    except EtcdsopError as exc:
        stamp = time.strftime("%H:%M:%S")
        return f"[bold red]error:[/] {escape(exc.message)} [dim]({stamp}; trying again)[/]"
    view = StatusView(result, state)  # drawn against the previous result...
    state.advance(result)  # ...which this result then replaces
    return view
