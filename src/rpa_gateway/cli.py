"""The command line: ``rpa-gateway serve`` and ``rpa-gateway keygen``."""

from __future__ import annotations

import argparse
import sys

from rpa_gateway.config import ConfigError, load_settings


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
        return 2
    configure_logging(settings)
    serve(create_app(settings), settings)
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from rpa_gateway.security import new_key

    print(new_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpa-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="listen address (default: SERVICE_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default: SERVICE_PORT or 19999)")
    serve.set_defaults(handler=_serve)
    keygen = commands.add_parser("keygen", help="print a new RPA_TOKEN_KEY")
    keygen.set_defaults(handler=_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.handler(args)
    return result
