"""The command line: ``rpa-gateway serve``; against a running service ``run``, ``ls``,
``show``, ``watch``, ``logs``, ``cancel``, ``projects``, ``webhooks`` and ``mcp``;
``keygen`` and ``apikey``."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any

from rpa_gateway.config import ConfigError, load_settings

EXIT_SETTINGS = 2  # serve: a setting is invalid (one line names it)
EXIT_CANNOT_START = 3  # serve: the data directory is held, or the store cannot be opened


def _serve(args: argparse.Namespace) -> int:
    from rpa_gateway.app import create_app
    from rpa_gateway.logging_setup import configure_logging
    from rpa_gateway.server import serve

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["service_host"] = args.host
    if args.port is not None:
        overrides["service_port"] = args.port
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"rpa-gateway: configuration error: {line}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(settings)
    if not settings.redis_seeds:
        from rpa_gateway.app import DATABASE_FILE
        from rpa_gateway.store.base import StoreError
        from rpa_gateway.store.sqlite import ensure_free

        try:
            ensure_free(settings.rpa_data_dir / DATABASE_FILE)
        except StoreError as exc:
            print(f"rpa-gateway: cannot start: {exc}", file=sys.stderr)
            return EXIT_CANNOT_START
    serve(create_app(settings), settings)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from rpa_gateway.doctor import run_doctor

    return run_doctor(args.token)


def _keygen(args: argparse.Namespace) -> int:
    from rpa_gateway.security import new_key

    print(new_key())
    return 0


def _apikey(args: argparse.Namespace) -> int:
    from rpa_gateway.access import new_key

    key, entry = new_key()
    print(f"key (give it to the caller):   {key}")
    print(f"RPA_API_KEYS entry (for the service): {entry}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from rpa_gateway.run_command import EXIT_UNREACHABLE, parse_param, run_project

    params: dict[str, object] = {}
    try:
        if args.params_json:
            loaded = json.loads(args.params_json)
            if not isinstance(loaded, dict):
                raise ValueError("--params-json must be a JSON object")
            params.update(loaded)
        for item in args.param:
            key, value = parse_param(item)
            params[key] = value
    except ValueError as exc:
        print(f"rpa-gateway run: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not args.url.startswith(("http://", "https://")):
        print("rpa-gateway run: --url must be an http:// or https:// URL", file=sys.stderr)
        return EXIT_UNREACHABLE
    return run_project(args.url, args.token, args.project, params, args.sid, as_json=args.json)


def _mcp(args: argparse.Namespace) -> int:
    from rpa_gateway.mcp.stdio_bridge import serve_stdio

    if not args.url.startswith(("http://", "https://")):
        print("rpa-gateway mcp: --url must be an http:// or https:// URL", file=sys.stderr)
        return 2
    try:
        return serve_stdio(args.url, args.token)
    except KeyboardInterrupt:
        return 130


def _webhooks(args: argparse.Namespace) -> int:
    from rpa_gateway.console import commands, webhooks
    from rpa_gateway.console.client import GatewayClient, GatewayError

    output = commands.Output(args.json)
    try:
        with GatewayClient(args.url, args.token) as client:
            if args.action == "ls":
                return webhooks.endpoints(client, output)
            if args.action == "add":
                return webhooks.add(
                    client, output, args.endpoint_url, args.event, args.project, args.description
                )
            if args.action == "rm":
                return webhooks.remove(client, output, args.id)
            if args.action == "test":
                return webhooks.test(client, output, args.id)
            if args.action == "deliveries":
                return webhooks.deliveries(client, output, args.id, args.status, args.limit)
            return webhooks.retry(client, output, args.id, args.delivery_id)
    except GatewayError as exc:
        output.error(str(exc))
        return commands.EXIT_UNREACHABLE


def _console(args: argparse.Namespace) -> int:
    from rpa_gateway.console import commands
    from rpa_gateway.console.client import GatewayClient, GatewayError

    output = commands.Output(args.json)
    try:
        with GatewayClient(args.url, args.token) as client:
            if args.command == "ls":
                return commands.list_executions(
                    client,
                    output,
                    status=args.status,
                    project_id=args.project,
                    limit=args.limit,
                    watch=args.watch,
                )
            if args.command == "show":
                return commands.show(client, output, args.id)
            if args.command == "watch":
                return commands.watch(client, output, args.id, args.reconnect_for)
            if args.command == "logs":
                return commands.logs(client, output, args.id, args.follow, args.interval)
            if args.command == "cancel":
                return commands.cancel(client, output, args.id)
            return commands.projects(client, output)
    except GatewayError as exc:
        output.error(str(exc))
        return commands.EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130


# Not a secret: the caller name of the README's examples, so they see each other's runs.
DEFAULT_TOKEN = "local-cli"  # noqa: S105


def _setting(name: str, default: str) -> str:
    """A setting as ``serve`` reads it: the environment, then ``config.env`` here."""
    if name in os.environ:
        return os.environ[name]
    return _config_file().get(name) or default


@functools.cache
def _config_file() -> dict[str, str | None]:
    """``config.env`` in this folder, read once; empty when there is none."""
    from dotenv import dotenv_values

    return dotenv_values("config.env") if os.path.isfile("config.env") else {}


def _service_options() -> argparse.ArgumentParser:
    """--url and --token (and their environment variables), shared by the client commands."""
    options = argparse.ArgumentParser(add_help=False)
    port = _setting("SERVICE_PORT", "19999")
    options.add_argument(
        "--url",
        default=_setting("RPA_GATEWAY_URL", f"http://127.0.0.1:{port}"),
        help="the service (default: RPA_GATEWAY_URL, else http://127.0.0.1:SERVICE_PORT; both"
        " read from the environment, then config.env, as serve reads its settings)",
    )
    options.add_argument(
        "--token",
        default=_setting("RPA_GATEWAY_TOKEN", DEFAULT_TOKEN),
        help=f"the caller token (default: RPA_GATEWAY_TOKEN, else {DEFAULT_TOKEN!r}, the token"
        " of the README's examples); give a key that starts with '-' as --token=KEY",
    )
    return options


def _add_console_commands(commands: Any, service: argparse.ArgumentParser) -> None:
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON, for scripts")
    parents = [service, as_json]
    ls = commands.add_parser("ls", parents=parents, help="list executions, newest first")
    ls.add_argument(
        "--status",
        type=str.upper,
        choices=["ACCEPTED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"],
    )
    ls.add_argument("--project", help="only this project_id")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    ls.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=1.0,
        metavar="SECONDS",
        help="keep the table up to date from the live feed (redrawn at most every SECONDS,"
        " default 1) until Ctrl-C; with --json, print each change as it happens",
    )
    show = commands.add_parser("show", parents=parents, help="one execution in full")
    show.add_argument("id")
    watch = commands.add_parser(
        "watch",
        parents=parents,
        help="follow an execution to its end: progress, then the result; exit status by outcome"
        " (0 succeeded, 1 failed, 2 unreachable, 3 cancelled, 4 timed out)",
    )
    watch.add_argument("id")
    watch.add_argument(
        "--reconnect-for",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to keep re-attaching while the service cannot be reached (default 60)",
    )
    logs = commands.add_parser("logs", parents=parents, help="a local run's log lines")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="until the execution ends")
    logs.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    cancel = commands.add_parser("cancel", parents=parents, help="cancel an execution")
    cancel.add_argument("id")
    commands.add_parser("projects", parents=parents, help="the projects the service can run")
    for name in ("ls", "show", "watch", "logs", "cancel", "projects"):
        commands.choices[name].set_defaults(handler=_console)
    _add_webhook_commands(commands, parents)


def _add_webhook_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    hooks = commands.add_parser("webhooks", help="webhook endpoints and their deliveries")
    actions = hooks.add_subparsers(dest="action", required=True)
    actions.add_parser("ls", parents=parents, help="this caller's endpoints and their health")
    add = actions.add_parser("add", parents=parents, help="register an endpoint")
    add.add_argument("endpoint_url", metavar="URL")
    add.add_argument(
        "--event",
        action="append",
        help="an event to send (repeatable; default: the four terminal ones)",
    )
    add.add_argument("--project", help="only this project_id's executions")
    add.add_argument("--description", default="")
    for name, what in (("rm", "remove an endpoint"), ("test", "send it a webhook.test event")):
        actions.add_parser(name, parents=parents, help=what).add_argument("id")
    deliveries = actions.add_parser(
        "deliveries", parents=parents, help="an endpoint's deliveries, newest first"
    )
    deliveries.add_argument("id")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--limit", type=int, default=50, help="at most this many (1-200)")
    retry = actions.add_parser("retry", parents=parents, help="send a delivery again now")
    retry.add_argument("id")
    retry.add_argument("delivery_id")
    hooks.set_defaults(handler=_webhooks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpa-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    service = _service_options()
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument(
        "--host",
        help="listen address (default: SERVICE_HOST, else 0.0.0.0 - or 127.0.0.1 for the local "
        "backend without RPA_API_KEYS)",
    )
    serve.add_argument("--port", type=int, help="listen port (default: SERVICE_PORT or 19999)")
    serve.set_defaults(handler=_serve)
    run = commands.add_parser(
        "run", parents=[service], help="run a project on a running service and watch it"
    )
    run.add_argument("project", help="the project_id")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (repeatable); JSON values are parsed: -p n=3",
    )
    run.add_argument("--params-json", help="all parameters as one JSON object")
    run.add_argument("--sid", help="the sid to send (default: generated by the service)")
    run.add_argument(
        "--json", action="store_true", help="print the terminal frame as one JSON line"
    )
    run.set_defaults(handler=_run)
    _add_console_commands(commands, service)
    mcp = commands.add_parser(
        "mcp",
        parents=[service],
        help="speak MCP on stdin/stdout, forwarded to a running service (for MCP clients"
        " that launch their servers as processes)",
    )
    mcp.set_defaults(handler=_mcp)
    doctor = commands.add_parser(
        "doctor",
        help="check what stands between a caller and its robots (settings, store, platform"
        " or projects), a line each; exit 0 only when all pass",
    )
    doctor.add_argument(
        "--token",
        default=_setting("RPA_GATEWAY_TOKEN", DEFAULT_TOKEN),
        help="the caller's key to check the platform with (default: RPA_GATEWAY_TOKEN)",
    )
    doctor.set_defaults(handler=_doctor)
    keygen = commands.add_parser("keygen", help="print a new RPA_TOKEN_KEY")
    keygen.set_defaults(handler=_keygen)
    apikey = commands.add_parser(
        "apikey", help="print a new caller key and the RPA_API_KEYS entry that admits it"
    )
    apikey.set_defaults(handler=_apikey)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result
