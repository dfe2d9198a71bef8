"""What ``ajc`` prints: upstream's layouts (boxed tables, right-aligned ``key: value`` blocks), JSON, progress.

Colour and progress bars appear only when stdout is a terminal; piped output is plain text (the tables keep their
box lines) and never wraps, so ``grep`` and ``awk`` see whole rows. ``--json`` prints one JSON document, or one
JSON line per item for streams (``tasks watch``).
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

KEY_WIDTH: Final = 21
"""Keys of a task or schedule view are right-aligned to this width, as upstream's are."""
STORE_KEY_WIDTH: Final = 16
"""Keys of a store or queue view (``info``, ``queues info``) are right-aligned to this width."""
PIPE_WIDTH: Final = 250
"""Columns assumed when stdout is not a terminal: wide enough that no table row wraps."""
TIME_FORMAT: Final = "%d %b %y %H:%M:%S UTC"
"""Go's ``time.RFC822`` in UTC (``01 Dec 26 06:12:51 UTC``), which upstream's ``ajc`` prints."""

TIME_CELL_WIDTH: Final = 9
"""A column of two-line times is never narrower than a line of one (``01 Dec 26``, ``07:04:53``)."""
_UTC_CELL: Final = re.compile(r"^(\d\d \w{3} \d\d) (\d\d:\d\d:\d\d) UTC$")

STATE_STYLES: Final = {
    "new": "cyan",
    "active": "blue",
    "retry": "yellow",
    "complete": "green",
    "expired": "red",
    "terminated": "red",
    "blocked": "magenta",
    "unreachable": "red",
    "queue_error": "red",
    "running": "blue",
    "pending": "dim",
    "waiting": "dim",
    "failed": "red",
    "cancelled": "red",
    "skipped": "dim",
    "paused": "yellow",
}
"""Colours of task, step and run states on a terminal."""


def _console(stream: Any) -> Console:
    # A pipe gets every row whole, whatever COLUMNS says (rich would squeeze the columns to fit it).
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False, emoji=False)


class Output:
    """Where a command prints: a rich console on stdout, one on stderr, and whether ``--json`` was asked for."""

    def __init__(self, *, json: bool = False) -> None:
        self.json = json
        self.console = _console(sys.stdout)
        self.err = _console(sys.stderr)

    @property
    def interactive(self) -> bool:
        """Whether stdout is a terminal (colour, live views and progress bars)."""
        return self.console.is_terminal

    # ---- plain and JSON ---------------------------------------------------------------------------------------

    def line(self, text: str = "", *, style: str | None = None) -> None:
        """Print one line as it is (no markup)."""
        self.console.print(Text(text, style=style or ""), overflow="ignore", crop=False)

    def print_json(self, value: Any, *, lines: bool = False) -> None:
        """Print a JSON document (indented), or one compact line with ``lines=True``."""
        option = orjson.OPT_NON_STR_KEYS | (0 if lines else orjson.OPT_INDENT_2)
        sys.stdout.write(orjson.dumps(value, option=option, default=str).decode() + "\n")
        sys.stdout.flush()

    def print_json_bytes(self, data: bytes) -> None:
        """Print stored JSON bytes re-indented, keeping every key and value as stored."""
        self.print_json(orjson.loads(data))

    # ---- layouts ----------------------------------------------------------------------------------------------

    def table(
        self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, whole: Sequence[int] = (0,)
    ) -> None:
        """A rounded, boxed table with its title boxed above the header, as upstream draws its lists.

        On a terminal narrower than the table, cells wrap, except those of the ``whole`` columns (the first, an
        id or a name, by default), which an operator copies.
        """
        cells = [[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row] for row in rows]
        table = self._table(headers, cells, whole)
        if self.interactive and table_width(headers, cells) > self.console.width:
            # Too wide for this terminal: before any cell is cut up, times go on two lines (date, then time) under a
            # header that names their zone, and the table loses its outer padding.
            times = {i for i in range(len(headers)) if cells and all(_UTC_CELL.match(r[i].plain) for r in cells)}
            headers = [f"{h} (UTC)" if i in times else h for i, h in enumerate(headers)]
            cells = [[_two_line_time(c) if i in times else c for i, c in enumerate(row)] for row in cells]
            if _least_width(headers, cells, whole) > self.console.width:
                whole = ()  # even so it cannot fit whole ids: better folded than a broken table
            table = self._table(headers, cells, whole, narrow=True)
        with self.console.capture() as captured:
            self.console.print(table)
        lines = captured.get().splitlines()
        top = Text.from_ansi(lines[0]).plain if lines else ""
        if len(top) >= 2:
            inner = len(top) - 2
            heading = title if len(title) <= inner - 2 else title[: max(inner - 3, 0)] + "…"
            self.line(f"╭{'─' * inner}╮")
            self.console.print(Text("│") + Text(heading.center(inner), style="bold" if self.interactive else "")
                               + Text("│"), overflow="ignore", crop=False)  # fmt: skip
            lines[0] = "├" + top[1:-1] + "┤"
        for line in lines:
            self.console.print(Text.from_ansi(line), overflow="ignore", crop=False)
        self.console.print()

    def _table(
        self, headers: Sequence[str], cells: list[list[Text]], whole: Sequence[int], *, narrow: bool = False
    ) -> Table:
        style = "bold" if self.interactive else ""
        table = Table(box=box.ROUNDED, show_lines=False, header_style=style, pad_edge=not narrow)
        for index, header in enumerate(headers):
            column = [row[index] for row in cells if index < len(row)]
            if not self.interactive:
                table.add_column(header, overflow="ignore", no_wrap=True)
            elif index in whole:
                table.add_column(header, no_wrap=True, min_width=max([len(header), *(c.cell_len for c in column)]))
            elif any("\n" in cell.plain for cell in column):  # two-line times: never cut further
                table.add_column(header, overflow="fold", min_width=TIME_CELL_WIDTH)
            else:
                table.add_column(header, overflow="fold")
        for row in cells:
            table.add_row(*row)
        return table

    def block(self, title: str | None, rows: Sequence[tuple[str, Any]], *, width: int = KEY_WIDTH) -> None:
        """A heading line, a blank line, then ``key: value`` rows with the keys right-aligned (upstream's views).

        Upstream aligns the keys of task and schedule views to 21 columns and those of stores and queues to 16.
        """
        if title is not None:
            self.line(title)
            self.line()
        for key, value in rows:
            text = Text(f"{key:>{width}}: ")
            text.append(value if isinstance(value, Text) else Text(str(value)))
            self.console.print(text, overflow="ignore", crop=False)

    def state(self, state: str) -> Text:
        """A state name, coloured on a terminal."""
        return Text(state, style=STATE_STYLES.get(state, "") if self.interactive else "")

    # ---- interaction ------------------------------------------------------------------------------------------

    def confirm(self, question: str, *, force: bool) -> None:
        """Ask before a destructive change unless ``force``; without a terminal to ask on, refuse.

        Raises:
            click.exceptions.Exit: 2 when there is no terminal to ask on and ``-f`` was not given, 1 when the user
                said no (the message is printed).
        """
        if force:
            return
        if not sys.stdin.isatty():
            what = question.rstrip("?")
            message = f"{what[:1].lower()}{what[1:]}: not confirmed (no terminal to ask on): pass -f"
            click.echo(f"ajc: error: {message}", err=True)
            raise click.exceptions.Exit(2)
        if not click.confirm(question, default=False):
            click.echo("ajc: nothing was changed", err=True)
            raise click.exceptions.Exit(1)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressBar]:
        """A progress bar on a terminal (nothing when piped or with ``--json``); ``advance()`` it as work is done."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        enabled = self.interactive and not self.json
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err if not self.console.is_terminal else self.console,
            disable=not enabled,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield ProgressBar(progress, task)


def _least_width(headers: Sequence[str], cells: Sequence[Sequence[Text]], whole: Sequence[int]) -> int:
    """The narrowest a narrow table can be drawn: whole columns at their widest, others at their longest word."""
    total = 3 * len(headers) - 1  # borders and padding, without the outer padding
    for index, header in enumerate(headers):
        column = [row[index].plain for row in cells if index < len(row)]
        if index in whole:
            total += max([len(header), *(len(text) for text in column)])
        else:
            total += max([len(word) for text in [header, *column] for word in text.split()] or [1])
    return total


def _two_line_time(cell: Text) -> Text:
    match = _UTC_CELL.match(cell.plain)
    return Text(f"{match[1]}\n{match[2]}", style=cell.style) if match else cell


def table_width(headers: Sequence[str], rows: Sequence[Sequence[Text | str]]) -> int:
    """Columns a boxed table takes with no cell wrapped: each column's widest cell, its padding and the borders."""
    widths = [len(header) for header in headers]
    for row in rows:
        for index, cell in enumerate(row[: len(widths)]):
            text = cell.plain if isinstance(cell, Text) else str(cell)
            widths[index] = max(widths[index], *(len(line) for line in text.splitlines() or [""]))
    return sum(widths) + 3 * len(widths) + 1


class ProgressBar:
    """One bar of a :meth:`Output.progress`."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task
        self.done = 0

    def advance(self, amount: int = 1) -> None:
        """Count ``amount`` more units done."""
        self.done += amount
        self._progress.update(self._task, advance=amount)

    def total(self, total: int | None) -> None:
        """Change the total (when it becomes known)."""
        self._progress.update(self._task, total=total)


# ---- formatting, as upstream's ajc formats ------------------------------------------------------------------------


def when(value: datetime | None) -> str:
    """A time as upstream prints one (``01 Dec 26 06:12:51 UTC``); ``never`` for none."""
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def since(value: datetime, now: datetime | None = None) -> str:
    """How long ago ``value`` was, as upstream's views say it: ``0.10s``, ``2m16s``, ``2d2h0m0s``."""
    from asyncjobs.cli.ajc.durations import humanize_duration

    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    return humanize_duration(seconds) if seconds else "0.00s"


def when_since(value: datetime | None, now: datetime | None = None) -> str:
    """``01 Dec 26 06:12:51 UTC (0.10s)``."""
    if value is None:
        return "never"
    return f"{when(value)} ({since(value, now)})"


def go_duration(seconds: float | timedelta | None) -> str:
    """A duration as Go's ``time.Duration.String`` writes one: ``1h0m0s``, ``10m0s``, ``1.5s``, ``0s``."""
    if seconds is None:
        return "forever"
    total = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 1:
        ms = total * 1000
        return f"{sign}{_trim(ms)}ms" if ms >= 1 else f"{sign}{_trim(ms * 1000)}µs"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim(secs)}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return sign + text


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") or "0"


def size(count: int) -> str:
    """Bytes in IEC units as upstream prints them: ``0 B``, ``181 B``, ``1.5 KiB``, ``12 MiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def limit(value: int | None, *, unlimited: int | None = None) -> str:
    """A count, or ``unlimited`` for ``None`` (and for ``unlimited`` when given, such as ``-1``)."""
    if value is None or (unlimited is not None and value == unlimited):
        return "unlimited"
    return str(value)
