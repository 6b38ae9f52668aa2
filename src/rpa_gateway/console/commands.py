"""``rpa-gateway ls / show / watch / logs / cancel / projects`` against a running service.

Tables and progress bars (rich) only on a terminal; ``--json`` prints what the API
returned, one JSON document (``watch --json``: one event per line), for scripts.
Exit status: 0 success, 1 the execution failed, 2 the service could not be reached or
refused the request, 3 cancelled, 4 timed out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from rpa_gateway.console.client import TERMINAL, GatewayClient, JsonObject, StreamEvent
from rpa_gateway.console.untrusted import json_text, visible

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 2
EXIT_CANCELLED = 3
EXIT_TIMED_OUT = 4

_EXIT_BY_STATUS = {
    "SUCCEEDED": EXIT_OK,
    "FAILED": EXIT_FAILED,
    "CANCELLED": EXIT_CANCELLED,
    "TIMED_OUT": EXIT_TIMED_OUT,
}
_STYLE = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "TIMED_OUT": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "blue",
    "ACCEPTED": "blue",
}
_FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


class Output:
    """Where a command writes: stdout for results, stderr for the rest; styled only on
    a terminal."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        # Piped, a table keeps its columns whole rather than fit 80 characters.
        self.console = Console(file=self.out, highlight=False, width=_width(self.out))
        self.messages = Console(file=self.err, highlight=False, width=_width(self.err))

    @property
    def on_terminal(self) -> bool:
        return self.out.isatty()

    def table(
        self,
        columns: tuple[str, ...],
        rows: list[list[str]],
        *,
        caption: str | None = None,
        header: bool = True,
    ) -> None:
        """A table on a terminal; piped, tab-separated lines (a header line first) that
        scripts can cut."""
        if self.on_terminal:
            self.console.print(rich_table(columns, rows, caption=caption, header=header))
            return
        lines = [columns] if header else []
        lines += [tuple(visible(value) for value in row) for row in rows]  # no tab inside
        self.out.write("".join("\t".join(line) + "\n" for line in lines))
        self.out.flush()

    def json(self, value: Any) -> None:
        self.out.write(json_text(value) + "\n")
        self.out.flush()

    def line(self, text: str) -> None:
        """One line of untrusted text on stdout (a log line, a status)."""
        if self.on_terminal:
            self.console.print(Text(visible(text)))
        else:
            self.out.write(visible(text) + "\n")
            self.out.flush()

    def error(self, message: str) -> None:
        self.messages.print(Text(f"rpa-gateway: {visible(message)}", style="red"), soft_wrap=True)


def list_executions(
    client: GatewayClient,
    output: Output,
    *,
    status: str | None,
    project_id: str | None,
    limit: int,
    watch: float | None,
) -> int:
    def fetch() -> list[JsonObject]:
        return client.list_executions(status=status, project_id=project_id, limit=limit)

    if watch is None:
        items = fetch()
        if output.as_json:
            output.json(items)
        else:
            rows, caption = executions_rows(items)
            output.table(_EXECUTION_COLUMNS, rows, caption=caption)
        return EXIT_OK
    if output.as_json:  # every change as it happens, one JSON object a line
        for change in client.changes(time.time()):
            if _wanted(change, status, project_id):
                output.json(change)
        return EXIT_OK
    # On a terminal: the table, redrawn from the feed of changes (at most every `watch` s).
    since = time.time()
    shown = {item["id"]: item for item in fetch()}
    with Live(executions_table(list(shown.values())), console=output.console) as live:
        drawn = time.monotonic()
        for change in client.changes(since):
            shown[change["id"]] = {**shown.get(change["id"], {}), **_as_item(change)}
            if time.monotonic() - drawn >= watch:
                items = [i for i in shown.values() if _wanted(i, status, project_id)]
                items.sort(key=lambda i: i["created_at"], reverse=True)
                live.update(executions_table(items[:limit]), refresh=True)
                drawn = time.monotonic()
    return EXIT_OK


def _wanted(item: JsonObject, status: str | None, project_id: str | None) -> bool:
    return (status is None or item["status"] == status) and (
        project_id is None or item["project_id"] == project_id
    )


def _as_item(change: JsonObject) -> JsonObject:
    """A feed change in the list's form (ISO times, the result's code)."""
    item = {k: v for k, v in change.items() if k not in ("code", "message", "progress")}
    for name in ("created_at", "updated_at", "finished_at"):
        if change.get(name) is not None:
            item[name] = datetime.fromtimestamp(change[name], UTC).isoformat()
    if change.get("code") is not None:
        item["result"] = {"code": change["code"], "message": change.get("message")}
    return item


_EXECUTION_COLUMNS = ("ID", "STATUS", "PROJECT", "SID", "STARTED", "DURATION", "CODE")


def executions_rows(items: list[JsonObject]) -> tuple[list[list[str]], str]:
    """The list's rows, and its caption: the count of each status."""
    counts: dict[str, int] = {}
    rows = []
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
        result = item.get("result") or {}
        rows.append(
            [
                item["id"],
                item["status"],
                item["project_id"],
                item["sid"],
                _when(item["created_at"]),
                _duration(item),
                str(result.get("code", "")),
            ]
        )
    caption = "  ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "none"
    return rows, caption


def executions_table(items: list[JsonObject]) -> Table:
    rows, caption = executions_rows(items)
    return rich_table(_EXECUTION_COLUMNS, rows, caption=caption)


def rich_table(
    columns: tuple[str, ...],
    rows: list[list[str]],
    *,
    caption: str | None = None,
    header: bool = True,
) -> Table:
    """Cells as text, never markup (a caller's sid may hold brackets), control characters
    as escapes; statuses coloured."""
    table = Table(caption=caption, caption_justify="left", show_header=header)
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "STATUS"))
    for row in rows:
        table.add_row(*(Text(visible(value), style=_STYLE.get(value, "")) for value in row))
    return table


def show(client: GatewayClient, output: Output, execution_id: str) -> int:
    view = client.execution(execution_id)
    if output.as_json:
        output.json(view)
        return EXIT_OK
    rows = [
        ["id", view["id"]],
        ["status", view["status"]],
        ["project", view["project_id"]],
        ["sid", view["sid"]],
        ["params", json_text(view["params"])],
        ["started", _when(view["created_at"])],
        ["duration", _duration(view)],
        ["upstream id", view.get("upstream_id") or "-"],
    ]
    if view.get("queue_position") is not None:
        rows.append(["queue position", str(view["queue_position"])])
    result = view.get("result")
    if result is not None:
        rows.append(["code", str(result["code"])])
        rows.append(["message", result["message"]])
        rows.append(["data", json_text(result.get("data"))])
    output.table(("FIELD", "VALUE"), rows, header=False)
    if view.get("logs"):
        if output.on_terminal:
            output.console.print(Text("logs", style="bold"))
        else:
            output.out.write("logs\n")
        for line in view["logs"]:
            output.line(line)
    return EXIT_OK


def watch(client: GatewayClient, output: Output, execution_id: str, reconnect_for: float) -> int:
    """Follows the execution to its end: state changes and progress on stderr (a bar on a
    terminal), the result on stdout; the exit status says how it ended."""
    events = client.events(execution_id, reconnect_for=reconnect_for)
    if output.as_json:
        terminal: JsonObject = {}
        for event in events:
            output.json({"id": event.id, "event": event.kind, **event.data})
            if event.kind == TERMINAL:
                terminal = event.data
        return _exit_of(terminal)
    if not output.messages.is_terminal:
        return _watch_plainly(events, output, execution_id)
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        console=output.messages,
        transient=False,
    )
    bar = progress.add_task(execution_id, total=100, start=False)
    terminal = {}
    with progress:
        for event in events:
            if event.kind == "state":
                progress.console.print(
                    Text(f"{execution_id}: {visible(str(event.data.get('status')))}")
                )
            elif event.kind == "progress":
                percent = event.data.get("percent")
                progress.start_task(bar)
                progress.update(
                    bar,
                    completed=percent if isinstance(percent, int | float) else None,
                    description=visible(str(event.data.get("message", execution_id)))[:60],
                )
            elif event.kind == TERMINAL:
                terminal = event.data
                if terminal.get("code") == 0:
                    progress.update(bar, completed=100)
    return _report_end(output, execution_id, terminal)


def _watch_plainly(events: Iterator[StreamEvent], output: Output, execution_id: str) -> int:
    """Not on a terminal: a line per state change and progress report, no bar."""
    terminal: JsonObject = {}
    for event in events:
        if event.kind == "state":
            output.err.write(f"{execution_id}: {visible(str(event.data.get('status')))}\n")
        elif event.kind == "progress":
            percent = event.data.get("percent")
            shown = f"[{percent:5.1f}%] " if isinstance(percent, int | float) else ""
            message = visible(str(event.data.get("message", "")))
            output.err.write(f"{execution_id}: {shown}{message}\n")
        elif event.kind == TERMINAL:
            terminal = event.data
        output.err.flush()
    return _report_end(output, execution_id, terminal)


def _report_end(output: Output, execution_id: str, terminal: JsonObject) -> int:
    code = _exit_of(terminal)
    if code == EXIT_OK:
        output.json(terminal.get("data"))
    elif terminal:
        output.error(f"{execution_id} ended with {terminal.get('code')}: {terminal.get('message')}")
    else:
        output.error(f"{execution_id}: the stream ended without the execution's end")
    return code


def logs(
    client: GatewayClient, output: Output, execution_id: str, follow: bool, interval: float
) -> int:
    view = client.execution(execution_id)
    shown: list[str] = []
    while True:
        new = _new_lines(shown, view.get("logs") or [])
        for line in new:
            if output.as_json:
                output.json(line)
            else:
                output.line(line)
        shown = view.get("logs") or []
        if not follow or view["status"] in _FINISHED:
            return EXIT_OK
        time.sleep(interval)
        view = client.execution(execution_id)


def cancel(client: GatewayClient, output: Output, execution_id: str) -> int:
    view = client.cancel(execution_id)
    if output.as_json:
        output.json(view)
    else:
        output.line(f"{view['id']}: {view['status']}")
    return EXIT_OK


def projects(client: GatewayClient, output: Output) -> int:
    found = client.projects()
    if output.as_json:
        output.json(found)
        return EXIT_OK
    rows = []
    for project in found:
        timeout = project.get("timeout")
        rows.append(
            [
                project["id"],
                project["name"],
                "-" if timeout is None else f"{timeout:g} s",
                project["description"],
            ]
        )
    output.table(("PROJECT", "NAME", "TIMEOUT", "DESCRIPTION"), rows)
    return EXIT_OK


def _exit_of(terminal: JsonObject) -> int:
    if not terminal:
        return EXIT_UNREACHABLE
    return _EXIT_BY_STATUS.get(str(terminal.get("status")), EXIT_FAILED)


def _new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` after what ``before`` already showed: the service keeps the
    last lines only, so the window slides; the longest overlap is taken as seen."""
    for overlap in range(min(len(before), len(now)), 0, -1):
        if before[-overlap:] == now[:overlap]:
            return now[overlap:]
    return now


def _width(stream: TextIO) -> int | None:
    return None if stream.isatty() else 200


def _when(stamp: str) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(item: JsonObject) -> str:
    start = datetime.fromisoformat(item["created_at"])
    end = datetime.fromisoformat(item["finished_at"]) if item.get("finished_at") else None
    seconds = ((end or datetime.now(start.tzinfo)) - start).total_seconds()
    return f"{seconds:.1f} s" if end else f"{seconds:.0f} s…"
