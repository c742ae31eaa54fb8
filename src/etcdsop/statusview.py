"""The `status` table, sized for the terminal it is drawn on.

Cells hold short words (`down: refused`, `timeout`, `tls`); the full errors go below
the table. No column is ever squeezed: the table drops whole columns instead, least
useful first (peer URL, version, db size, latency, term, id), after shortening the
ids, and says which it hid. The db cell says how full the quota is once it is half
full; an alarm shows in the health cell and below the table. A member's name and
client URL are always shown whole.
In `--watch` mode the previous result adds raft index deltas and leader changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table

from etcdsop.ops.status import MemberRow, StatusResult

DB_SHOW = 0.5  # from this share of its quota on, the db cell says how full it is
DB_WARN = 0.8  # and from this one on, in red (check reports it too)
SHORT_ID = 8  # hex digits of a member id when the full 16 do not fit
# Dropped in this order when the table is too wide; name, client url, role, index and
# health always stay.
OPTIONAL = ("peer url", "version", "db", "ms", "term", "id")
EVENTS_SHOWN = 5
_CONNECTION = re.compile(r"HTTPS?Connection\(host='[^']*', port=\d+\): ")


@dataclass
class WatchState:
    """What `--watch` remembers between refreshes: the last result, leader changes."""

    interval: float
    previous: StatusResult | None = None
    events: list[str] = field(default_factory=list)

    def advance(self, result: StatusResult, now: float | None = None) -> StatusResult | None:
        """Record leader changes against the last result; return that last result."""
        previous, self.previous = self.previous, result
        if previous is None:
            return None
        before, after = _leader(previous), _leader(result)
        if before != after:
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            self.events.append(
                f"{stamp} leader {before[0] if before else 'none'} (term {_term(before)}) -> "
                f"{after[0] if after else 'none'} (term {_term(after)})"
            )
        return previous


def _leader(result: StatusResult) -> tuple[str, int | None] | None:
    row = next((m for m in result.members if m.leader), None)
    return None if row is None else (row.name or row.id, row.raft_term)


def _term(leader: tuple[str, int | None] | None) -> str:
    return "-" if leader is None or leader[1] is None else str(leader[1])


class StatusView:
    """A Rich renderable: title, table fitted to the width, verdict, details, notes."""

    def __init__(self, result: StatusResult, watch: WatchState | None = None) -> None:
        self.result = result
        self.watch = watch
        self.previous = watch.previous if watch else None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        result = self.result
        title = f"etcd cluster [bold]{escape(result.cluster)}[/] ({result.cluster_id or 'down'})"
        if result.cluster_version:
            title += f", cluster version {escape(result.cluster_version)}"
        yield title
        if result.members:
            table, hidden = fit_table(result, options.max_width, console, self.previous)
            yield table
            if hidden:
                names = ", ".join(hidden)
                yield f"[dim]hidden at {options.max_width} columns: {names} (see --json)[/]"
        verdict = "[green]healthy[/]" if result.healthy else "[bold red]UNHEALTHY[/]"
        yield (
            f"{verdict}: {result.healthy_voters}/{result.voters} voters healthy, quorum "
            f"{result.quorum}, tolerates {result.tolerates} more failure(s)"
        )
        for line in details(result.members):
            yield f"[red]{escape(line)}[/]"
        for note in result.notes:
            yield f"[yellow]note:[/] {escape(note)}"
        if self.watch is not None:
            for event in self.watch.events[-EVENTS_SHOWN:]:
                yield f"[cyan]{escape(event)}[/]"
            stamp = time.strftime("%H:%M:%S")
            yield f"[dim]{stamp}, every {self.watch.interval:g}s; Ctrl-C to stop[/]"


def details(members: Iterable[MemberRow]) -> Iterator[str]:
    """One line per member that is not healthy: its full error, without repetitions."""
    for m in members:
        if not m.healthy and m.error:
            where = m.client_urls[0] if m.client_urls else (m.peer_urls or ["?"])[0]
            error = m.error.removeprefix(f"{where}: ")
            error = _CONNECTION.sub("", error)  # urllib3 names the host we already named
            yield f"{m.name or m.id} {where}: {error}"


def fit_table(
    result: StatusResult,
    width: int,
    console: Console,
    previous: StatusResult | None = None,
) -> tuple[Table, list[str]]:
    """The fullest table that fits `width` without squeezing a column; the hidden ones.

    Full ids and every column if they fit; else short ids, the essential columns, and
    each optional one, most useful first, that still fits.
    """
    short = _unique_short_ids([m.id for m in result.members])
    options = console.options.update(width=10_000)

    def fits(table: Table) -> bool:
        return console.measure(table, options=options).maximum <= width

    table = _table(result, short, False, (), previous)
    if fits(table):
        return table, []
    hidden = list(OPTIONAL)
    table = _table(result, short, True, hidden, previous)
    for column in reversed(OPTIONAL):  # most useful first
        trial = [c for c in hidden if c != column]
        candidate = _table(result, short, True, trial, previous)
        if fits(candidate):
            hidden, table = trial, candidate
    # Narrower than the essentials: Rich crops the lines, it never squeezes a column.
    return table, [c for c in OPTIONAL if c in hidden]


def _unique_short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Ids cut to SHORT_ID hex digits, longer where two would look the same."""
    n = SHORT_ID
    while n < 16 and len({i[:n] for i in ids}) < len(set(ids)):
        n += 1
    return {i: i[:n] for i in ids}


def _table(
    result: StatusResult,
    short: dict[str, str],
    short_ids: bool,
    hidden: Sequence[str],
    previous: StatusResult | None,
) -> Table:
    before = {m.id: m.raft_index for m in previous.members} if previous else None
    columns = [
        "id",
        "name",
        "peer url",
        "client url",
        "role",
        "term",
        "index",
        *(["+index"] if before is not None else []),
        "db",
        "version",
        "health",
        "ms",
    ]
    shown = [c for c in columns if c not in hidden]
    rows = [_cells(m, short, short_ids, "peer url" in hidden, before) for m in result.members]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in shown:
        cells = [row[name][0] for row in rows]
        wide = max([len(name), *(len(c) for c in cells)])
        right = name in ("term", "index", "+index", "db", "ms")
        table.add_column(name, no_wrap=True, min_width=wide, justify="right" if right else "left")
    for row in rows:
        table.add_row(*(_styled(*row[name]) for name in shown))
    return table


def _cells(
    m: MemberRow,
    short: dict[str, str],
    short_ids: bool,
    no_peer_column: bool,
    before: dict[str, int | None] | None,
) -> dict[str, tuple[str, str]]:
    """Plain text and style of every cell of one member."""
    if not m.started:
        role = "unstarted"
    elif m.learner:
        role = "learner"
    elif m.leader:
        role = "leader"
    else:  # a voter that did not answer may be anything
        role = "follower" if m.raft_term is not None else "voter"
    client = ",".join(m.client_urls) or "-"
    if not m.client_urls and no_peer_column:  # an unstarted member is known by its peer URL
        client = "peer " + ",".join(m.peer_urls)
    delta = ""
    if before is not None and m.raft_index is not None and before.get(m.id) is not None:
        delta = f"+{m.raft_index - (before[m.id] or 0)}"
    health = "healthy" if m.healthy else (m.problem or "unhealthy")
    if m.healthy and m.alarms:  # answers, but NOSPACE refuses writes
        health = "alarm: " + ",".join(m.alarms)
    return {
        "id": (short[m.id] if short_ids else m.id, ""),
        "name": (m.name or "-", ""),
        "peer url": (",".join(m.peer_urls), ""),
        "client url": (client, ""),
        "role": (role, "bold" if m.leader else ""),
        "term": (_n(m.raft_term), ""),
        "index": (_n(m.raft_index), ""),
        "+index": (delta or "-", ""),
        "db": (_db(m), "bold red" if (m.quota_used or 0) >= DB_WARN else ""),
        "version": (m.version or "-", ""),
        "health": (health, "green" if m.healthy and not m.alarms else "bold red"),
        "ms": (_n(m.latency_ms), ""),
    }


def _styled(text: str, style: str) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _n(value: object) -> str:
    return "-" if value is None else str(value)


def _db(m: MemberRow) -> str:
    """Its db size and, once it holds half its quota, how full that is: `15.9M 99%`
    (only then: a wider db column would be left out at 100 columns)."""
    used = m.quota_used
    return _size(m.db_size) + ("" if used is None or used < DB_SHOW else f" {used:.0%}")


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024 / 1024:.1f}M" if value >= 1024 * 1024 else f"{value // 1024}K"
