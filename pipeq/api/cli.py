"""``pipeq api``: serve the HTTP API, make a token, print the OpenAPI schema."""

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable
from typing import Any

from pipeq.api.tokens import new_token
from pipeq.config.settings import Settings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def add_cli(subparsers: Any) -> None:
    """Add ``api serve | new-token | openapi`` to the ``pipeq`` command's subparsers."""
    api = subparsers.add_parser("api", help="the HTTP API: serve it, make tokens, print its OpenAPI schema")
    actions = api.add_subparsers(dest="api_action", required=True)
    serve = actions.add_parser("serve", help="serve the API and the job console (uvicorn)")
    serve.add_argument("--host", help="address to listen on (default: api.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: api.port, 8000)")
    serve.add_argument("--log-level", default="info")
    token = actions.add_parser("new-token", help="print a new token and the lines to paste into the config")
    token.add_argument("--name", required=True, help="names the token and owns its jobs (a-z, 0-9, _ and -)")
    token.add_argument("--model", action="append", help="a model it may use (repeat; default: any)")
    token.add_argument("--task", action="append", help="a task it may submit (repeat; default: any)")
    token.add_argument("--input-prefix", action="append", help="an s3:// prefix its jobs may read (repeat)")
    actions.add_parser("openapi", help="print the OpenAPI schema (docs/openapi.json)")


def run_cli(args: argparse.Namespace, load_settings: Callable[[], Settings]) -> int:
    if args.api_action == "new-token":
        return _new_token(args)
    if args.api_action == "openapi":
        sys.stdout.write(openapi_json())
        return 0
    settings = load_settings()
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    refusal = open_api_refusal(host, settings)
    if refusal:
        print(f"pipeq api: {refusal}", file=sys.stderr)
        return 2
    import uvicorn

    from pipeq.api.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level, proxy_headers=False)
    return 0


def open_api_refusal(host: str, settings: Settings) -> str | None:
    """Why the API may not listen on ``host`` (no token configured, and not loopback), or None."""
    if settings.api.tokens or is_loopback(host):
        return None
    return (
        f"no API token is configured, so the API would let anyone on the network submit jobs: it listens on {host}"
        " only with tokens. Make one with `pipeq api new-token --name NAME` and add it to the config, or listen on"
        " 127.0.0.1"
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def openapi_json() -> str:
    """The API's OpenAPI schema as committed in docs/openapi.json (it does not depend on the settings)."""
    from pipeq.api.app import create_app
    from pipeq.config.settings import Settings

    return json.dumps(create_app(Settings()).openapi(), indent=2, sort_keys=True) + "\n"


def _new_token(args: argparse.Namespace) -> int:
    from pipeq.config.api import ApiToken

    secret, digest = new_token()
    try:
        ApiToken(
            name=args.name, sha256=digest, models=args.model, tasks=args.task, input_prefixes=args.input_prefix or []
        )
    except ValueError as exc:
        print(f"pipeq api new-token: {exc}", file=sys.stderr)
        return 2
    lines = ["[[api.tokens]]", f"name = {json.dumps(args.name)}", f'sha256 = "{digest}"']
    for key, values in (("models", args.model), ("tasks", args.task), ("input_prefixes", args.input_prefix)):
        if values:
            lines.append(f"{key} = {json.dumps(values)}")
    print(f"token (give it to the producer; it is shown once and stored nowhere): {secret}")
    print("add to the config file:\n")
    print("\n".join(lines))
    return 0
