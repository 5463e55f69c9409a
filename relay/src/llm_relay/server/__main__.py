"""`llm-relay-server`: run the relay, or validate its configuration, or make secrets for it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from llm_relay import __version__, envelope, tokens

from .config import DEFAULT_CONFIG, ConfigError, load_settings
from .logs import setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llm-relay-server",
        description="OpenAI-compatible relay: token auth, provider key injection, SSE, Fernet envelopes.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("LLM_RELAY_CONFIG", DEFAULT_CONFIG),
        help="TOML config file (default: $LLM_RELAY_CONFIG or %(default)s)",
    )
    parser.add_argument("--listen", default=os.environ.get("LLM_RELAY_LISTEN"), help="host:port override")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="validate config and secret files, then exit")
    action.add_argument("--generate-token", action="store_true", help="print a new client token")
    action.add_argument("--hash-token", metavar="NAME", help="read a token on stdin, print NAME:sha256hex")
    action.add_argument("--generate-fernet-key", action="store_true", help="print a new Fernet key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate_token:
        print(tokens.generate_token())
        return 0
    if args.generate_fernet_key:
        print(envelope.generate_key())
        return 0
    if args.hash_token:
        token = sys.stdin.readline().strip()
        try:
            print(tokens.format_token_line(args.hash_token, token))
        except tokens.TokenLineError as exc:
            print(f"llm-relay-server: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        settings = load_settings(args.config, args.listen)
    except ConfigError as exc:
        print(f"llm-relay-server: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(
            f"ok: {len(settings.providers)} provider(s), {len(settings.token_hashes)} client token(s), "
            f"{len(settings.fernet_keys)} Fernet key(s)"
        )
        return 0
    setup_logging(settings.server.log_level)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    from .runner import RelayServer

    async def serve() -> None:
        server = RelayServer(args.config, args.listen)
        await server.run_forever()

    try:
        runner(serve())
    except ConfigError as exc:
        print(f"llm-relay-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"llm-relay-server: cannot listen: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
