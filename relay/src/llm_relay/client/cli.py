"""`llm-relay`: the command line of the client (keygen, ask, embed, serve-local, usage, doctor).

Secrets never come from the command line (argv is visible to every user of the machine): the token and
Fernet key come from the config file, `*_file` keys or LLM_RELAY_TOKEN / LLM_RELAY_FERNET_KEY.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llm_relay import __version__, envelope

from .config import ConfigError, Profile, default_config_path, load_profile

EXIT_FAILED, EXIT_CONFIG = 1, 2


def _connection_options(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The relay-selection flags, on `parser` (the top level: before the command) or on a parent for
    each command (after it). A command's copy defaults to SUPPRESS, so `llm-relay --profile P ask ...`
    keeps P instead of the command's default overwriting it."""
    common = parser or argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("relay selection (override the config file and environment)")
    group.add_argument(
        "--profile", help="profile from the config file (default: LLM_RELAY_PROFILE / default_profile)"
    )
    group.add_argument("--config", help=f"config file (default: {default_config_path()})")
    group.add_argument("--url", help="relay URL (default: `url` / LLM_RELAY_URL)")
    group.add_argument("--proxy", help="corporate proxy URL, '' for direct (default: `proxy` / HTTPS_PROXY)")
    group.add_argument(
        "--no-proxy", dest="no_proxy", help="hosts reached without the proxy (comma-separated)"
    )
    group.add_argument("--ca-bundle", dest="ca_bundle", help="PEM bundle to verify the relay's certificate")
    group.add_argument("--timeout", type=float, help="seconds to wait for an answer")
    group.add_argument(
        "--encrypt",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS if parser is None else None,
        help="wrap requests in encrypted envelopes (default: on when a fernet_key is configured)",
    )
    group.add_argument(
        "--envelope",
        choices=("auto", "v2", "v1"),
        help="envelope version (default: auto = v2 only; v1 only for a relay that speaks nothing else)",
    )
    group.add_argument(
        "--token-channel",
        dest="token_channel",
        choices=("path", "header", "bearer"),
        help="how the token travels in plain mode (default: path)",
    )
    return common


def _profile(args: argparse.Namespace) -> Profile:
    overrides = {
        k: getattr(args, k)
        for k in ("url", "proxy", "no_proxy", "ca_bundle", "timeout", "encrypt", "envelope", "token_channel")
    }
    return load_profile(args.profile, config_path=args.config, **overrides)


def _parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="llm-relay",
        description="Reach an OpenAI-compatible API through your llm-relay, past a header-stripping proxy.",
        epilog="Configuration: see `llm-relay doctor` for the effective values and relay/docs/client.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _connection_options(parser)  # also accepted before the command: llm-relay --profile work ask ...
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = sub.add_parser(
        "keygen",
        help="new client token + Fernet key, ready to paste",
        description="Print a new client token and Fernet key: the relay side (token hash "
        "line, key) for the inventory vault and the client side for the config file.",
    )
    keygen.add_argument("--name", default="laptop", help="token name the relay logs show (default: laptop)")
    keygen.add_argument(
        "--profile",
        default=argparse.SUPPRESS,
        help="profile name in the printed client snippet (default: default)",
    )
    keygen.add_argument("--format", choices=("text", "json", "env"), default="text")
    keygen.add_argument("--url", default="", help="relay URL for the printed client snippet")

    ask = sub.add_parser(
        "ask",
        parents=[common],
        help="ask one question (answer streamed with --stream)",
        description="Send one chat completion through the relay and print the answer.",
    )
    ask.add_argument("prompt", help="the question; '-' reads it from stdin")
    ask.add_argument("--model", help="model id (default: `model` in the config)")
    ask.add_argument("--system", help="system prompt")
    ask.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    ask.add_argument("--max-tokens", dest="max_tokens", type=int)
    ask.add_argument(
        "--json", action="store_true", help="print the API response as JSON (JSON lines if streaming)"
    )

    embed = sub.add_parser(
        "embed",
        parents=[common],
        help="embeddings of one or more texts",
        description="Print one embedding vector (JSON array) per text.",
    )
    embed.add_argument("texts", nargs="+", help="texts to embed; '-' reads one from stdin")
    embed.add_argument("--model", help="embedding model id (default: `embedding_model` in the config)")
    embed.add_argument("--json", action="store_true", help="print the whole API response as JSON")

    serve = sub.add_parser(
        "serve-local",
        parents=[common],
        help="local OpenAI-compatible endpoint on 127.0.0.1",
        description="Serve http://127.0.0.1:PORT/v1 and forward every request to the relay "
        "(token added; with --encrypt, sealed in encrypted envelopes). Point tools at it with "
        "OPENAI_API_BASE=http://127.0.0.1:8788/v1 (Anthropic SDKs: ANTHROPIC_BASE_URL="
        "http://127.0.0.1:8788/<provider>) and any API key.",
    )
    serve.add_argument("--port", type=int, default=8788, help="local port (default 8788; 0 = any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web page origin (scheme://host[:port]) whose requests are served; repeatable. Requests "
        "carrying any other Origin header get 403 (tools send none)",
    )
    serve.add_argument(
        "--local-key-file",
        metavar="PATH",
        help="a 0600 file holding a key every tool must send as its API key (Bearer or x-api-key)",
    )

    usage = sub.add_parser(
        "usage",
        parents=[common],
        help="this client's token usage and daily budget",
        description="Print the tokens the relay counted for this client's token (today and since the "
        "relay started, per provider and model) and its daily budget, if any.",
    )
    usage.add_argument("--json", action="store_true", help="the relay's report as JSON")

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="diagnose config, proxy, TLS, relay and upstream",
        description="Print the effective configuration (secrets masked), then check DNS, "
        "proxy, TLS, relay /healthz, envelope, token and upstream in order. Exit 1 if any "
        "check fails.",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable report")
    return parser


def _stdin_or(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def _run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        from .keygen import generate, render

        profile = args.profile or "default"
        sys.stdout.write(render(generate(args.name), args.format, profile, args.url))
        return 0
    if args.command == "doctor":
        from .doctor import report, report_config_error, run_checks

        try:
            profile = _profile(args)
        except ConfigError as exc:  # a doctor reports a broken config as its first failed check
            return report_config_error(str(exc), sys.stdout, args.json)
        return report(profile, run_checks(profile), sys.stdout, args.json)
    if args.command == "usage":
        from .usage import UsageError, usage

        try:
            return usage(_profile(args), as_json=args.json, out=sys.stdout)
        except UsageError as exc:
            print(f"llm-relay usage: {exc} (run `llm-relay doctor` for a diagnosis)", file=sys.stderr)
            return EXIT_FAILED
    if args.command == "serve-local":
        from .serve_local import serve

        return serve(_profile(args), args.host, args.port, args.allow_origin, args.local_key_file)
    from .commands import ask, embed

    profile = _profile(args)
    if args.command == "ask":
        return ask(
            profile,
            _stdin_or(args.prompt),
            model=args.model,
            system=args.system,
            stream=args.stream,
            as_json=args.json,
            max_tokens=args.max_tokens,
        )
    return embed(profile, [_stdin_or(t) for t in args.texts], model=args.model, as_json=args.json)


def _api_error_message(exc: Exception) -> str | None:
    """A one-line explanation of an OpenAI SDK error, or None if `exc` is not one."""
    try:
        import openai
    except ImportError:
        return None
    if isinstance(exc, openai.APIStatusError):
        from .access import refusal_message, relay_denied_message

        body = exc.response.content
        refused = refusal_message(exc.response, body) or relay_denied_message(body)
        if refused is not None:
            return refused
    if isinstance(exc, openai.APIStatusError) and exc.status_code == 407:
        return "the proxy requires authentication (407): use proxy = http://user:password@host:port"
    if isinstance(exc, openai.APIStatusError) and exc.status_code == 401:
        from .doctor_relay import RELAY_TOKEN_CODES, error_of

        code, message = error_of(exc.response)
        if code in RELAY_TOKEN_CODES:
            return f"the relay rejected the client token ({code}: {message})"
        return f"the upstream provider rejected the relay's API key (401: {message})"
    if isinstance(exc, openai.APIStatusError):
        return f"the relay answered {exc.status_code}: {exc.message}"
    sealed = _envelope_cause(exc)
    if sealed is not None:
        return f"cannot use the relay's sealed answer ({sealed}): is fernet_key this client's key?"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        from .codec_v2 import EnvelopeRefused

        if isinstance(cause, EnvelopeRefused):
            return str(cause)
        return f"cannot reach the relay: {type(cause).__name__}: {cause}"
    return None


def _envelope_cause(exc: BaseException) -> BaseException | None:
    """The EnvelopeError behind an SDK or transport error (a reply that failed to open or to check)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, envelope.EnvelopeError):
            return exc
        exc, seen = exc.__cause__, seen + 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"llm-relay: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # serve-local's loopback check, bad stdin, ...
        print(f"llm-relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        message = _api_error_message(exc)
        if message is None:
            raise
        print(
            f"llm-relay {args.command}: {message} (run `llm-relay doctor` for a diagnosis)", file=sys.stderr
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
