"""Everything the user sees: Rich progress on stderr, tables, countdowns, errors."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from etcdsop.events import Status

if TYPE_CHECKING:
    from etcdsop.ops.status import StatusResult

_MARKS: dict[str, str] = {
    "ok": "[green]ok[/]",
    "changed": "[yellow]changed[/]",
    "skipped": "[dim]skipped[/]",
    "failed": "[bold red]failed[/]",
    "info": "[cyan]info[/]",
    "start": "[blue]...[/]",
}

# Piped output is not cut to 80 columns: tables stay readable in logs and CI.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


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
    from rich.table import Table

    table = Table(title=f"etcd cluster {result.cluster} ({result.cluster_id or 'down'})")
    for column in (
        "id",
        "name",
        "peer url",
        "client url",
        "state",
        "role",
        "term",
        "index",
        "db",
        "version",
        "health",
        "ms",
    ):
        table.add_column(column, no_wrap=True)
    for m in result.members:
        role = "learner" if m.learner else ("leader" if m.leader else "follower")
        table.add_row(
            m.id,
            m.name or "-",
            ",".join(m.peer_urls),
            ",".join(m.client_urls) or "-",
            "started" if m.started else "unstarted",
            role,
            _n(m.raft_term),
            _n(m.raft_index),
            _size(m.db_size),
            m.version or "-",
            "[green]healthy[/]" if m.healthy else f"[red]unhealthy[/] {escape(m.error or '')}",
            _n(m.latency_ms),
        )
    out.print(table)
    verdict = "[green]healthy[/]" if result.healthy else "[bold red]UNHEALTHY[/]"
    out.print(
        f"{verdict}: {result.healthy_voters}/{result.voters} voters healthy, quorum "
        f"{result.quorum}, tolerates {result.tolerates} more failure(s)"
    )
    for note in result.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


def _n(value: object) -> str:
    return "-" if value is None else str(value)


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
